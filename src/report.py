"""Build a fitscope report from run folders on disk, or compare two runs' configs.

python src/report.py multirun/2026-11-26/14-03-12.123456 [more sweep or run folders]
python src/report.py diff RUN_A RUN_B
"""

import sys

from fitscope.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
