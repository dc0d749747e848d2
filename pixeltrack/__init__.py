"""pixeltrack: tracking-pixel collector and report aggregator.

Three floors (README, "Layout"; import-linter keeps them): ``pixeltrack.core``
below, the services ``collector`` and ``aggregator`` on it (never importing
each other), and ``pixeltrack.cli`` on top.
"""

__version__ = "0.1.0"
