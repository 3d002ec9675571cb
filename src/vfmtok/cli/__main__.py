"""`python -m vfmtok.cli`."""

import sys

from vfmtok.cli.main import main

sys.exit(main())
