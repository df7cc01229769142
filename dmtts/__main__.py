"""``python -m dmtts``: the ``dmtts`` command without an installed entry point (a source checkout
on PYTHONPATH, e.g. a GPU machine whose Python environment cannot be changed)."""

import sys

from dmtts.cli import main

sys.exit(main())
