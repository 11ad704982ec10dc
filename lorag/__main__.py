"""`python -m lorag ...` runs the command line."""

import sys

from lorag.cli import main

sys.exit(main())
