"""``python -m keysync`` is the same as the ``keysync`` command."""

from keysync.cli import main

main()
