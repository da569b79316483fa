"""``python -m daemon``: the ``recd`` command line."""

import sys

from daemon.runtime.cli import main

sys.exit(main())
