"""``python -m shaledb ...``: the ``shaledb`` command (shaledb.cli)."""

import sys

from shaledb.cli import main

if __name__ == "__main__":
    sys.exit(main())
