"""`python -m router ...`: the `router` command, for when the console script is not on PATH."""

from .cli import main

raise SystemExit(main())
