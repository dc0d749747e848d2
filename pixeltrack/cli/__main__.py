"""`python -m pixeltrack.cli`: the console script without the installed entry point."""

import sys

from pixeltrack.cli.main import main

sys.exit(main())
