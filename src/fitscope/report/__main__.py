"""`python -m fitscope.report`: the same command as `python src/report.py`."""

import sys

from fitscope.report.cli import main

sys.exit(main())
