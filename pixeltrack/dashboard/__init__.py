"""The dashboard: report pages, management and the report API, on its own listener (top floor)."""
