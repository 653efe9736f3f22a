"""Run the command line: ``python -m crawler``."""

import sys

from .cli import main

# Guarded: a worker process started by multiprocessing may import this module, and must not run the CLI.
if __name__ == "__main__":
    sys.exit(main())
