"""Run the command line: ``python -m crawler``."""

import sys

from .cli import main

sys.exit(main())
