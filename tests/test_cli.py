"""The ``engine`` command as a user runs it: help, version, serve, and clear errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from flask import Flask

from engine.db import get_db
from engine.models import Product, Variant


def _engine(*args: str, instance: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENGINE_INSTANCE_PATH": str(instance)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_help_lists_commands(tmp_path: Path) -> None:
    result = _engine("--help", instance=tmp_path / "instance")
    assert result.returncode == 0
    for command in ("db", "serve", "stock"):
        assert command in result.stdout
    assert "--app" not in result.stdout


#: Libraries only some commands or requests use; ``engine`` must not import them to start.
SLOW_IMPORTS = (
    "alembic",
    "apscheduler",
    "sendgrid",
    "css_inline",
    "crawlerdetect",
    "email_validator",
    "waitress",
    "engine.campaigns",
)


def test_help_imports_no_slow_libraries(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from engine.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('loaded:', *[m for m in {SLOW_IMPORTS!r} if m in sys.modules])\n"
    )
    env = {**os.environ, "ENGINE_INSTANCE_PATH": str(tmp_path / "instance")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "campaigns" in result.stdout
    assert result.stdout.splitlines()[-1] == "loaded:"


def test_lazy_campaigns_group_is_the_real_one() -> None:
    from click import Context

    from engine.campaigns.cli import campaigns_group as real
    from engine.cli import campaigns_group

    ctx = Context(campaigns_group)
    assert campaigns_group.name == real.name
    assert campaigns_group.help == real.help
    assert campaigns_group.params == real.params == []
    assert campaigns_group.list_commands(ctx) == real.list_commands(ctx)
    assert campaigns_group.get_command(ctx, "send") is real.get_command(ctx, "send")


def test_version(tmp_path: Path) -> None:
    result = _engine("--version", instance=tmp_path / "instance")
    assert result.returncode == 0
    assert result.stdout.startswith("engine ")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_upgrades_an_empty_sqlite_database_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "ENGINE_INSTANCE_PATH": str(tmp_path / "instance"),
        # --no-scheduler and no worker: /healthz would rightly answer 503 otherwise.
        "ENGINE_HEALTH_REQUIRE_SCHEDULER": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", str(port), "--no-scheduler"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    # waitress, not Flask's development server
                    assert r.headers["Server"] == "engine"
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert "Traceback" not in output
    assert (tmp_path / "instance" / "engine.sqlite3").is_file()


def test_stock_set_unknown_sku_is_a_clear_error(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["stock", "set", "NOPE-1", "3"])
    assert result.exit_code == 1
    assert "no variant has SKU 'NOPE-1'" in result.output
    assert "Traceback" not in result.output


def test_stock_set_records_the_restock(app: Flask) -> None:
    with get_db(app).session() as session:
        product = Product(handle="tent", title="Tent")
        product.variants.append(
            Variant(sku="TENT-1", option_key="", price=100, stock=0, sellable=False)
        )
        session.add(product)
    result = app.test_cli_runner().invoke(args=["stock", "set", "TENT-1", "5"])
    assert result.exit_code == 0, result.output
    assert "TENT-1: stock 0 -> 5, sellable (restocked)" in result.output


@pytest.mark.parametrize("args", [["stock", "set", "X", "many"]])
def test_bad_arguments_are_usage_errors(app: Flask, args: list[str]) -> None:
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_build_command_starts_without_the_web_app(tmp_path: Path) -> None:
    """``engine build`` upgrades a new SQLite database, builds, and rebuilds lightly."""
    instance = tmp_path / "instance"
    (tmp_path / "content").mkdir()
    env = {
        **os.environ,
        "ENGINE_INSTANCE_PATH": str(instance),
        "ENGINE_CONTENT_DIR": str(tmp_path / "content"),
    }
    first = subprocess.run(
        [sys.executable, "-m", "engine", "build"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("written ")
    assert (instance / "site" / "index.html").is_file()
    code = (
        "import sys\n"
        "sys.argv = ['engine', 'build']\n"
        "from engine.__main__ import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('loaded:', *[m for m in ('flask', 'werkzeug', 'sqlalchemy', 'jinja2', "
        "'markdown_it', 'alembic') if m in sys.modules])\n"
    )
    again = subprocess.run(
        [sys.executable, "-c", code],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "nothing changed: the published site was left as it was" in again.stdout
    assert again.stdout.splitlines()[-1] == "loaded:"
    help_text = subprocess.run(
        [sys.executable, "-m", "engine", "build", "--help"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert help_text.returncode == 0 and "--base-url" in help_text.stdout
