"""``python -m drigm ...``: the same as the ``drigm`` command."""

import sys

from drigm.cli import main

sys.exit(main())
