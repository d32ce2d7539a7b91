"""One module per CLI command. Each defines ``register(subparsers)`` that adds its parser and sets
``func`` (a callable taking the parsed args and returning an exit code). Heavy imports stay inside
the command functions so ``ctscore --help`` starts fast. Every command calls a Python API function
with the same defaults and errors, so notebooks can do what the CLI does.
"""

COMMANDS = ["run", "scan", "aggregate", "share", "methods", "review_sheet", "stats", "validate", "train"]
