"""``python -m scheduler`` is the ``capsched`` command."""

import sys

from scheduler.cli import main

sys.exit(main())
