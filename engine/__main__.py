"""Run the ``engine`` command as ``python -m engine``."""

from engine.cli import main

main()
