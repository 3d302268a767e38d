"""``python -m keysync`` is the same as the ``keysync`` command."""

from keysync.cli import main

if __name__ == "__main__":
    main(prog_name="keysync")
