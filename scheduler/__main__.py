"""``python -m scheduler`` is the ``capsched`` command."""

import sys

from scheduler.cli.main import main

sys.exit(main())
