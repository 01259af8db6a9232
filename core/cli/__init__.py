"""The ``shaledb`` command (``shaledb ...`` or ``python -m shaledb ...``).

See docs/cli.md.  ``database_info`` (the ``info`` data) and
``verify_database`` are reusable library functions; both only read.
"""

from shaledb.cli.info import database_info
from shaledb.cli.main import main
from shaledb.cli.verify import VerifyReport, verify_database

__all__ = ["VerifyReport", "database_info", "main", "verify_database"]
