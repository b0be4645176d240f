"""``python -m controller`` is the ``nspvend`` command."""

import sys

from controller.cli import main

sys.exit(main())
