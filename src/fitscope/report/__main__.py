"""`python -m fitscope.report`: the same command as `python src/report.py`."""

import sys

from fitscope.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
