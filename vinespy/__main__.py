"""``python -m vinespy``: the same as the ``vinespy`` command."""

import sys

from vinespy.cli import main

if __name__ == "__main__":
    sys.exit(main())
