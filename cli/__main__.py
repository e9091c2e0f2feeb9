"""`python -m cli`: the same as the `labdeck` command."""

import sys

from cli.main import main

sys.exit(main())
