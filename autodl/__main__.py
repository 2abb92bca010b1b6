"""``python -m autodl``: the command line, as the ``autodl`` script runs it (worker processes start this way)."""

import sys

from autodl.cli import main

sys.exit(main())
