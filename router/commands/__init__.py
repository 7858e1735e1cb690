"""The `router` command's subcommands that are more than a call: one module per group
(operate.py: status, open/close, cache; advise.py). router/cli.py parses the command line
and dispatches here; these use the Router, the config loader and advise/, never cli.py.
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
