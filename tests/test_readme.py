"""The README documents every setting and command, and starts with the two-command quickstart."""

from __future__ import annotations

import re
from pathlib import Path

import click

from engine import create_app
from engine.settings import DEFAULTS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    missing = [name for name in DEFAULTS if f"`{name}`" not in README]
    assert missing == []


def _command_paths(group: click.Group, prefix: str, ctx: click.Context) -> list[str]:
    paths = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, f"{prefix} {name}", ctx))
        else:
            paths.append(f"{prefix} {name}")
    return paths


def test_every_command_is_documented(tmp_path: Path) -> None:
    app = create_app({"INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "x"})
    ctx = click.Context(app.cli)
    paths = _command_paths(app.cli, "engine", ctx)
    assert "engine build" in paths and "engine catalog import" in paths
    commands_section = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    for path in paths:
        head, _, last = path.rpartition(" ")
        # `engine campaigns list|show ID|…` documents a group's commands on one line
        pattern = rf"`{re.escape(head)} [^`]*\b{re.escape(last)}\b"
        assert re.search(pattern, commands_section), f"{path} is not in the README's commands"


def test_quickstart_is_two_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in quickstart.strip().splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("engine demo")
    assert lines[1].endswith("python -m pytest")
