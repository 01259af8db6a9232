"""``python -m shaledb.flush <config fd> <ready fd>``: the flusher process.

Started by :func:`shaledb.open`; see :func:`shaledb.flush.flusher.main`.
"""

import sys

from shaledb.flush.flusher import main

main(sys.argv[1:])
