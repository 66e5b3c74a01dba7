"""``python -m lab.cli``: the ``datalab`` command."""

import sys

from lab.cli.main import main

sys.exit(main())
