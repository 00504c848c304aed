"""`python -m edged.cli`: the `edged` command without its console script (how the demo, the API
benchmark and the tests start `edged serve`)."""

import sys

from edged.cli import main

sys.exit(main())
