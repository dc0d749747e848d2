"""pixeltrack: tracking-pixel collector and report aggregator.

This small shared package holds what both services need (tokens, settings,
database connection, embedded PostgreSQL) so that ``collector`` and
``aggregator`` never import each other.
"""

__version__ = "0.1.0"
