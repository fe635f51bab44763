"""``python -m hfr``: the same as the ``hfr`` command."""

import sys

from hfr.cli import main

sys.exit(main())
