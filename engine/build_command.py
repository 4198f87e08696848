"""``engine build`` without the web application: settings, database, build, report.

``python -m engine build`` (and the ``engine`` script) run this module's command directly,
so a build does not import Flask, the web blueprints or the other commands; the same
command is also registered on the Flask CLI (``engine.cli``), where it shares ``run_build``.
"""

from __future__ import annotations

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
    database: Database,
    out: Path | None,
    full: bool,
    base_url: str | None,
) -> None:
    """Build the site and print the report; exit 1 (nothing published) or 3 (deploy failed)."""
    from engine.content import ContentErrors
    from engine.publish import PublishCommandError, PublishError, build_site

    progress = BuildProgress()
    try:
        with database.session() as session:
            report = build_site(
                session, settings, out=out, full=full, base_url=base_url, progress=progress
            )
    except ContentErrors as exc:
        progress.close()
        for error in exc.errors:
            click.echo(str(error), err=True)
        fail(f"{len(exc.errors)} problem(s) in {settings['CONTENT_DIR']}; nothing was written")
        return
    except PublishCommandError as exc:
        progress.close()
        echo_build_report(exc.report)
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except PublishError as exc:
        progress.close()
        fail(str(exc))
        return
    progress.close()
    echo_build_report(report)


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
    from engine.db import Database
    from engine.settings import SettingsError, default_instance_path, load_settings

    try:
        settings = load_settings(default_instance_path())
    except SettingsError as exc:
        fail(str(exc))
        return
    database = Database(str(settings["DATABASE_URL"]))
    try:
        ensure_database_schema(database)
        run_build(settings, database, out, full, base_url)
    finally:
        database.dispose()
