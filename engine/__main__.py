"""Run the ``engine`` command as ``python -m engine`` (also the ``engine`` script)."""

from __future__ import annotations

import sys


def main() -> None:
    """Run ``engine``; ``engine build`` starts without importing the web application."""
    if sys.argv[1:2] == ["build"]:
        from engine.build_command import build

        build(args=sys.argv[2:], prog_name="engine build")
        return
    from engine.cli import main as engine

    engine()


if __name__ == "__main__":
    main()
