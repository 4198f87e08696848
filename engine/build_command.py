"""``engine build`` without the web application: settings, database, build, report.

``python -m engine build`` (and the ``engine`` script) run this module's command directly,
so a build does not import Flask, the web blueprints or the other commands; the same
command is also registered on the Flask CLI (``engine.cli``), where it shares ``run_build``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.db import Database
    from engine.publish import BuildReport


def fail(message: str) -> None:
    """Print an error to stderr and exit non-zero."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def ensure_database_schema(database: Database) -> None:
    """Upgrade an embedded SQLite database by itself; ask for ``engine db upgrade`` otherwise."""
    if database.is_current():
        return
    if database.engine.dialect.name == "sqlite":
        database.upgrade()
        return
    fail("the database schema is not up to date; run `engine db upgrade` first")


class BuildProgress:
    """A progress bar on stderr for long renders (only on a terminal)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        """Advance the bar to ``done`` of ``total`` pages rendered."""
        if self.bar is None:
            if total < 1000 or not sys.stderr.isatty():
                return
            self.bar = click.progressbar(length=total, label="rendering", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        """Finish the bar if one was shown."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def echo_build_report(report: BuildReport) -> None:
    """Print what a build did: files written / unchanged / removed, the time, the deploy."""
    click.echo(
        f"written {report.written}, unchanged {report.unchanged}, removed {report.removed} "
        f"in {report.seconds:.2f} s: {report.output}"
    )
    if not report.changed:
        click.echo("nothing changed: the published site was left as it was")
    if report.publish == "ran":
        click.echo("PUBLISH_COMMAND ran")
    elif report.publish.startswith("skipped"):
        click.echo("PUBLISH_COMMAND not run: nothing changed since it last succeeded")


def run_build(
    settings: Mapping[str, Any],
    catalog: Any,
    out: Path | None,
    full: bool,
    base_url: str | None,
) -> None:
    """Build the site and print the report; exit 1 (nothing published) or 3 (deploy failed).

    ``catalog`` is what the catalog is read through: a SQLAlchemy session, or the embedded
    database's own ``sqlite3`` connection.
    """
    from engine.publish import build_site
    from engine.publish.errors import PublishCommandError, PublishError

    progress = BuildProgress()
    try:
        report = build_site(
            catalog, settings, out=out, full=full, base_url=base_url, progress=progress
        )
    except PublishCommandError as exc:
        progress.close()
        echo_build_report(exc.report)
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except PublishError as exc:
        progress.close()
        fail(str(exc))
        return
    except Exception as exc:
        progress.close()
        # engine.content is imported only when the content is read (not for an unchanged
        # site), so only then can its errors be raised.
        content = sys.modules.get("engine.content")
        if content is None or not isinstance(exc, content.ContentErrors):
            raise
        for error in exc.errors:
            click.echo(str(error), err=True)
        fail(f"{len(exc.errors)} problem(s) in {settings['CONTENT_DIR']}; nothing was written")
        return
    progress.close()
    echo_build_report(report)


def open_embedded(url: str) -> sqlite3.Connection | None:
    """Open an embedded SQLite database that is at the newest migration, without SQLAlchemy.

    None for other databases, a missing file, or a schema to upgrade: the caller then goes
    through ``engine.db`` (which upgrades SQLite by itself).
    """
    from engine.catalog_rows import sqlite_file
    from engine.schema_heads import is_current_sqlite

    path = sqlite_file(url)
    if path is None or not os.path.isfile(path):
        return None
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        connection.execute("PRAGMA busy_timeout=30000")
        if is_current_sqlite(connection):
            return connection
    except sqlite3.Error:
        pass
    connection.close()
    return None


OUT_HELP = "Folder to publish to (default: OUTPUT_DIR, else <instance>/site)."
FULL_HELP = "Render every page (still rewrites only changed files)."
BASE_URL_HELP = "Absolute URL the site is served from (default: SITE_URL)."
BUILD_HELP = "Build the static site: pages, assets, sitemaps, robots.txt and redirect rules."


@click.command("build", help=BUILD_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help=OUT_HELP)
@click.option("--full", is_flag=True, help=FULL_HELP)
@click.option("--base-url", help=BASE_URL_HELP)
def build(out: Path | None, full: bool, base_url: str | None) -> None:
    """``engine build`` on its own: the instance's settings and database, no web app."""
    from engine.settings import SettingsError, default_instance_path, load_settings

    try:
        settings = load_settings(default_instance_path())
    except SettingsError as exc:
        fail(str(exc))
        return
    url = str(settings["DATABASE_URL"])
    embedded = open_embedded(url)
    if embedded is not None:
        try:
            run_build(settings, embedded, out, full, base_url)
        finally:
            embedded.close()
        return
    from engine.db import Database

    database = Database(url)
    try:
        ensure_database_schema(database)
        with database.session() as session:
            run_build(settings, session, out, full, base_url)
    finally:
        database.dispose()
