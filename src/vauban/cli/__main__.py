"""``python -m vauban.cli``: the ``vauban`` command."""

import sys

from . import main

sys.exit(main())
