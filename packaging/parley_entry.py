"""Entry point of the PyInstaller bundle: the same CLI as ``.venv/bin/parley``."""

import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main())
