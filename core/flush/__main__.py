"""``python -m shaledb.flush <config fd> <ready fd>``: the flusher process.

Started by :func:`shaledb.open` (``shaledb.flush.process.FlusherProcess``);
see :func:`shaledb.flush.process.main`.
"""

import sys

from shaledb.flush.process import main
from shaledb.ipc.child import exit_child

main(sys.argv[1:])
exit_child(0)
