"""The ``engine`` command (also ``flask --app engine``)."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from engine.build_command import (
    BASE_URL_HELP,
    BUILD_HELP,
    FULL_HELP,
    OUT_HELP,
    echo_build_report,
    ensure_database_schema,
    fail,
    run_build,
)
from engine.db import get_db

F = TypeVar("F", bound=Callable[..., Any])


def needs_schema(func: F) -> F:
    """Refuse to run against a database that is missing migrations (SQLite upgrades itself)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ensure_schema(current_app)
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def ensure_schema(app: Flask) -> None:
    """Upgrade an embedded SQLite database by itself; ask for ``engine db upgrade`` otherwise."""
    ensure_database_schema(get_db(app))


@click.group("db", help="Database schema.")
def db_group() -> None:
    """Group the database commands."""


@db_group.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply every migration not yet applied."""
    get_db().upgrade()
    click.echo("database is up to date")


@click.group("stock", help="Inventory.")
def stock_group() -> None:
    """Group the stock commands."""


@stock_group.command("set")
@click.argument("sku")
@click.argument("quantity", type=int)
@with_appcontext
@needs_schema
def stock_set(sku: str, quantity: int) -> None:
    """Set one variant's stock through the one stock function."""
    from engine.catalog import UnknownSKUError, set_stock, variant_by_sku

    with get_db().session() as session:
        try:
            variant = variant_by_sku(session, sku)
        except UnknownSKUError as exc:
            fail(str(exc))
            return
        change = set_stock(session, variant, quantity, source="cli")
    state = "sellable" if change.sellable else "not sellable"
    note = " (restocked)" if change.restocked else " (sold out)" if change.sold_out else ""
    click.echo(f"{sku}: stock {change.stock_before} -> {change.stock_after}, {state}{note}")


@click.group("catalog", help="Products and variants.")
def catalog_group() -> None:
    """Group the catalog commands."""


#: Warnings printed in full; the rest are counted.
MAX_WARNINGS_SHOWN = 20


@catalog_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "shopify", "csv", "json"]),
    default="auto",
    show_default=True,
    help="File format; auto detects it from the extension and header.",
)
@click.option("--dry-run", is_flag=True, help="Check the file and report; write nothing.")
@click.option("--prune", is_flag=True, help="Archive catalog products the file does not list.")
@with_appcontext
@needs_schema
def catalog_import(path: Path, fmt: str, dry_run: bool, prune: bool) -> None:
    """Upsert the catalog from a Shopify export, plain CSV or JSON file, all or nothing."""
    from engine.catalog import import_catalog

    with get_db().session() as session:
        report = import_catalog(session, path, fmt=fmt, dry_run=dry_run, prune=prune)
    kind = f" ({report.format})" if report.format else ""
    click.echo(f"{path}{kind}: {report.products} products, {report.variants} variants")
    for warning in report.warnings[:MAX_WARNINGS_SHOWN]:
        click.echo(f"warning: {warning}")
    if len(report.warnings) > MAX_WARNINGS_SHOWN:
        click.echo(f"warning: ... and {len(report.warnings) - MAX_WARNINGS_SHOWN} more")
    if report.problems:
        for problem in report.problems:
            click.echo(problem.located(path), err=True)
        click.echo(f"rejected {report.rejected}", err=True)
        fail(
            f"{len(report.problems)} problem(s) in {report.rejected} row(s); "
            "nothing was imported"
        )
        return
    click.echo(report.summary())
    if dry_run:
        click.echo(f"dry run: nothing was written ({report.seconds:.1f} s)")
    else:
        click.echo(f"imported in {report.seconds:.1f} s")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-scheduler", is_flag=True, help="Do not run scheduled jobs in this process.")
@with_appcontext
def serve(host: str, port: int, no_scheduler: bool) -> None:
    """Serve the live preview and the API on a production WSGI server (waitress)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    ensure_schema(app)
    run_server(app, host, port, scheduler=not no_scheduler)


def run_server(app: Flask, host: str, port: int, *, scheduler: bool) -> None:
    """Run waitress with threads, with the scheduler in-process unless told not to."""
    from waitress import serve as waitress_serve

    from engine.scheduler import JobScheduler

    log_to_stderr()
    jobs = JobScheduler(get_db(app), app.config, role="serve") if scheduler else None
    # waitress stops serving on SystemExit; SIGTERM would otherwise end the process at once,
    # leaving running jobs half done until their leases run out.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    click.echo(f"serving {app.config['SITE_NAME']} on http://{host}:{port}/", err=True)
    try:
        if jobs is not None:
            jobs.start()
        waitress_serve(
            app,
            host=host,
            port=port,
            threads=int(app.config["SERVE_THREADS"]),
            ident="engine",
            # Behind TRUSTED_PROXIES hops the app reads X-Forwarded-For itself (ProxyFix);
            # otherwise waitress drops the headers so no client can claim another address.
            clear_untrusted_proxy_headers=int(app.config.get("TRUSTED_PROXIES") or 0) == 0,
        )
    finally:
        # Restored first: a second SIGTERM while running jobs finish ends the process.
        signal.signal(signal.SIGTERM, previous)
        if jobs is not None:
            jobs.stop()


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def log_to_stderr() -> None:
    """Send INFO logs (scheduler, jobs, server) to stderr unless logging is set up already."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # APScheduler logs every firing at INFO (a line per job every few seconds); its warnings
    # (a job still running when due again, a missed run) stay visible.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


@click.command("worker")
@with_appcontext
def worker() -> None:
    """Run the scheduled jobs (mail queue, purges, ...) in the foreground until SIGTERM/SIGINT.

    Any number of workers (and `engine serve` processes) may share one PostgreSQL database:
    each job takes a lease in the database first, so it never runs twice at once.
    """
    from engine.scheduler import run_worker

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    ensure_schema(app)
    log_to_stderr()
    run_worker(get_db(app), app.config)


@click.command("build", help=BUILD_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help=OUT_HELP)
@click.option("--full", is_flag=True, help=FULL_HELP)
@click.option("--base-url", help=BASE_URL_HELP)
@with_appcontext
@needs_schema
def build(out: Path | None, full: bool, base_url: str | None) -> None:
    """Build the static site (``python -m engine build`` runs it without the web app)."""
    with get_db().session() as session:
        run_build(current_app.config, session, out, full, base_url)


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Seed and build, then exit without serving.")
@with_appcontext
def demo(host: str, port: int, no_serve: bool) -> None:
    """Seed the bundled demo store into the instance, build the site and serve it."""
    from engine.content import ContentErrors
    from engine.demo import (
        DemoError,
        build_demo,
        check_catalog,
        demo_config,
        demo_urls,
        explicit_settings,
        write_demo_config,
    )
    from engine.publish import PublishError

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    ensure_schema(app)
    instance = Path(app.instance_path)
    explicit = explicit_settings(instance)
    persisted: dict[str, Any] = {}
    try:
        with get_db().session() as session:
            if check_catalog(session):
                persisted = demo_config(app.config, explicit)
                app.config.update(persisted)
            app.config.update(demo_urls(host, port, app.config, explicit))
            setup = build_demo(session, app.config)
    except DemoError as exc:
        fail(str(exc))
        return
    except ContentErrors as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        fail(f"{len(exc.errors)} problem(s) in {app.config['CONTENT_DIR']}; nothing was written")
        return
    except PublishError as exc:
        fail(str(exc))
        return
    written = write_demo_config(instance, persisted)
    if setup.imported is not None:
        click.echo(f"demo catalog imported: {setup.imported.summary()}")
    else:
        click.echo("demo catalog already in this instance: kept as it is")
    if setup.signups:
        click.echo(f"demo waitlists: {setup.signups} signup(s) added")
    if written:
        names = ", ".join(name.lower() for name in written)
        click.echo(f"wrote {names} to {instance / 'config.toml'}")
    click.echo(f"content: {app.config['CONTENT_DIR']}")
    echo_build_report(setup.build)
    if not no_serve:
        run_server(app, host, port, scheduler=True)


@click.group("waitlist", help="Waitlists: export and import.")
def waitlist_group() -> None:
    """Group the waitlist commands."""


@waitlist_group.command("export")
@click.option("--product", "handle", metavar="HANDLE", help="Only this product's waitlist.")
@with_appcontext
@needs_schema
def waitlist_export(handle: str | None) -> None:
    """Write everyone waiting (pending and confirmed) as CSV to standard output."""
    from engine.waitlist import write_export

    with get_db().session() as session:
        count = write_export(session, sys.stdout, handle)
    click.echo(f"{count} signup(s) exported", err=True)


@waitlist_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
@needs_schema
def waitlist_import(path: Path) -> None:
    """Import a waitlist CSV from another back-in-stock tool, all or nothing.

    Columns: email, variant (SKU) or product (handle), signed_up_at (ISO 8601),
    confirmed (true/false), optional quantity. Unconfirmed rows stay pending and are
    never emailed; suppressed addresses are skipped; running it twice changes nothing.
    """
    from engine.content import ContentErrors, load_content
    from engine.db import utcnow
    from engine.waitlist import WaitlistImportError, import_waitlist

    settings = current_app.config
    try:
        content = load_content(Path(settings["CONTENT_DIR"]))
    except ContentErrors as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        fail(f"{len(exc.errors)} problem(s) in {settings['CONTENT_DIR']}; nothing was imported")
        return
    coming_soon = {handle: content.products[handle].meta for handle in content.coming_soon()}
    try:
        with get_db().session() as session:
            report = import_waitlist(session, settings, path, utcnow(), coming_soon)
    except WaitlistImportError as exc:
        for problem in exc.errors:
            click.echo(problem, err=True)
        fail(f"{len(exc.errors)} problem(s) in {path.name}; nothing was imported")
        return
    click.echo(
        f"created {report.created}, confirmed {report.confirmed}, "
        f"earlier date kept {report.updated}, unchanged {report.unchanged}, "
        f"suppressed (skipped) {report.suppressed}, left (kept out) {report.left}, "
        f"duplicate rows merged {report.duplicates}"
    )


@click.group("subscribers", help="Subscribers' personal data.")
def subscribers_group() -> None:
    """Group the subscriber commands."""


@subscribers_group.command("forget")
@click.argument("email")
@with_appcontext
@needs_schema
def subscribers_forget(email: str) -> None:
    """Erase a person's personal data everywhere; anonymous counts and suppression stay."""
    from engine.db import utcnow
    from engine.waitlist import forget

    with get_db().session() as session:
        erasure = forget(session, str(current_app.config["SECRET_KEY"]), email, utcnow())
    if not erasure.found and not erasure.mail_removed and not erasure.orders_anonymized:
        click.echo("no personal data held for that address")
    else:
        click.echo(
            f"erased: subscriber {'removed' if erasure.found else 'not found'}, "
            f"{erasure.signups_anonymized} signup(s) anonymized, "
            f"{erasure.mail_removed} email(s) deleted from the mail queue, "
            f"{erasure.orders_anonymized} order(s) anonymized"
        )
    if erasure.suppressed:
        click.echo("the address stays on the suppression list (as a keyed hash)")


@click.group("orders", help="Store orders, for restock campaign attribution.")
def orders_group() -> None:
    """Group the order commands."""


@orders_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
@needs_schema
def orders_import(path: Path) -> None:
    """Import a Shopify orders CSV export, all or nothing; orders already stored are kept.

    Reads Name, Id, Email, Created at, Financial Status, Cancelled at, Currency, Total and
    the Lineitem quantity, name, price and sku of each row; then attributes the orders to
    the restock emails that led to them.
    """
    from engine.orders import OrderImportError, attribute_orders, import_orders

    try:
        with get_db().session() as session:
            report = import_orders(session, path)
            attributed = attribute_orders(
                session,
                order_ids=report.stored,
                window_days=float(current_app.config["ATTRIBUTION_WINDOW_DAYS"]),
            )
    except OrderImportError as exc:
        for problem in exc.errors:
            click.echo(problem, err=True)
        fail(f"{len(exc.errors)} problem(s) in {path.name}; nothing was imported")
        return
    click.echo(report.summary())
    click.echo(f"{attributed} line item(s) attributed to restock emails")


def _coming_soon(app: Flask) -> dict[str, tuple[str, str]]:
    """Return handle -> (title, brand) of the content's coming-soon products (none on errors)."""
    from engine.content import ContentErrors, load_content

    try:
        content = load_content(Path(str(app.config["CONTENT_DIR"])))
    except ContentErrors as exc:
        click.echo(
            f"warning: {len(exc.errors)} problem(s) in the content; coming-soon products "
            "are left out",
            err=True,
        )
        return {}
    return {
        handle: (str(doc.meta.get("title", handle)), str(doc.meta.get("brand", "")))
        for handle, doc in content.products.items()
        if doc.meta.get("status") == "coming-soon"
    }


@click.group("search-data", help="Google Search Console data.")
def search_data_group() -> None:
    """Group the search data commands."""


@search_data_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from", "date_from", metavar="DATE", help="First day the export covers.")
@click.option("--to", "date_to", metavar="DATE", help="Last day the export covers.")
@with_appcontext
@needs_schema
def search_data_import(path: Path, date_from: str | None, date_to: str | None) -> None:
    """Import a Search Console performance export: a Pages or Queries CSV, or the zip.

    Headers and numbers may be in any of en, de, fr, es, it, pt, nl, ja. The date range is
    --from/--to, else the zip's Filters.csv (or its per-day chart), else the 28 days ending
    yesterday. Importing the same range again replaces it.
    """
    from engine.searchdata import (
        ProductName,
        SearchDataError,
        import_search_data,
        parse_date,
        product_names,
    )

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        first = parse_date(date_from) if date_from else None
        last = parse_date(date_to) if date_to else None
    except ValueError as exc:
        fail(str(exc))
        return
    if first and last and last < first:
        fail("--to is before --from")
        return
    today = _today(app)
    coming = {h: ProductName(h, t, b) for h, (t, b) in _coming_soon(app).items()}
    try:
        with get_db().session() as session:
            report = import_search_data(
                session,
                path,
                site_url=str(app.config["SITE_URL"]),
                today=today,
                products=product_names(session, coming),
                date_from=first,
                date_to=last,
            )
    except SearchDataError as exc:
        for problem in exc.errors:
            click.echo(problem, err=True)
        fail(f"{len(exc.errors)} problem(s) in {path.name}; nothing was imported")
        return
    click.echo(report.summary())


def _today(app: Flask) -> Any:
    """Return today's date in the site's time zone."""
    from zoneinfo import ZoneInfo

    from engine.db import utcnow

    return utcnow().astimezone(ZoneInfo(str(app.config.get("TIMEZONE") or "UTC"))).date()


@click.group("demand", help="Demand, restock priority and reorder quantities.")
def demand_group() -> None:
    """Group the demand commands."""


@demand_group.command("report")
@click.option("--days", type=click.IntRange(1, 3660), help="Window in days (DEMAND_REPORT_DAYS).")
@click.option(
    "--by", type=click.Choice(["product", "page", "source"]), default="product", show_default=True
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@with_appcontext
@needs_schema
def demand_report_command(days: int | None, by: str, fmt: str) -> None:
    """Show demand per product (or page, or source) with restock priority and reorder.

    Today's page views count (raw events of today plus roll-ups of past days).
    """
    import json

    from engine.db import utcnow
    from engine.demand import demand_report, format_table, write_csv

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    coming = {h: title for h, (title, _b) in _coming_soon(app).items()} if by == "product" else {}
    with get_db().session() as session:
        report = demand_report(
            session,
            app.config,
            days=days or int(app.config["DEMAND_REPORT_DAYS"]),
            by=by,
            now=utcnow(),
            coming_soon=coming,
        )
    if fmt == "json":
        click.echo(json.dumps(report.rows, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        write_csv(report, sys.stdout)
    else:
        click.echo(format_table(report))


@click.group("experiments", help="Content tests (demand_test in front matter).")
def experiments_group() -> None:
    """Group the content test commands."""


@experiments_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@with_appcontext
@needs_schema
def experiments_list(as_json: bool) -> None:
    """List content tests with their numbers and verdict (invest, keep testing, pivot)."""
    import json

    from engine.content import ContentErrors, load_content
    from engine.experiments import list_experiments

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        content = load_content(Path(str(app.config["CONTENT_DIR"])))
    except ContentErrors as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        fail(f"{len(exc.errors)} problem(s) in {app.config['CONTENT_DIR']}")
        return
    with get_db().session() as session:
        results = list_experiments(session, content, _today(app), app.config)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
        return
    if not results:
        click.echo("no content tests (add demand_test to a guide or coming-soon product)")
        return
    for r in results:
        t = r.test
        rate = f"{r.rate:.2%}" if r.rate is not None else "-"
        click.echo(
            f"{t.source}: {r.verdict.upper()} - P(rate > {t.goal:.2%}) = {r.probability:.1%}; "
            f"{r.signups} signups / {r.visitors} visitors = {rate} "
            f"(min {t.min_visitors} visitors; {t.start} to {t.end}, {r.status}; "
            f"products: {', '.join(t.products) or '-'})"
        )


class LazyGroup(click.Group):
    """A command group defined in another module, imported only when the group is used.

    ``engine --help`` lists it by its name and help; its own commands (and their imports)
    load when it runs or its help is shown.
    """

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(name, help=help)
        self.target = target

    def _group(self) -> click.Group:
        from importlib import import_module

        module, attribute = self.target.split(":")
        group: click.Group = getattr(import_module(module), attribute)
        return group

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return the real group's command names."""
        return self._group().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return one of the real group's commands."""
        return self._group().get_command(ctx, cmd_name)


#: ``engine campaigns``: its help must match the group's in engine/campaigns/cli.py.
campaigns_group = LazyGroup(
    "campaigns", "engine.campaigns.cli:campaigns_group", help="Restock campaigns."
)


def init_app(app: Flask) -> None:
    """Register the commands on the app's CLI (so ``flask --app engine`` has them)."""
    for command in (
        db_group,
        stock_group,
        catalog_group,
        serve,
        worker,
        build,
        demo,
        waitlist_group,
        subscribers_group,
        orders_group,
        campaigns_group,
        search_data_group,
        demand_group,
        experiments_group,
    ):
        app.cli.add_command(command)


def _create_app() -> Flask:
    from engine import create_app

    return create_app()


main = FlaskGroup(
    name="engine",
    help="Content-to-inventory engine: pages, waitlists, demand and restock email.",
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
)
# The app is always this package's factory, configured by the instance and ENGINE_*
# variables, so Flask's --app/--env-file/--debug options would only mislead here.
main.params = [param for param in main.params if param.name not in {"app", "env_file", "debug"}]
main.params.append(
    click.Option(
        ["--version"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        help="Show the version and exit.",
        callback=lambda ctx, _param, value: _print_version(ctx) if value else None,
    )
)


def _print_version(ctx: click.Context) -> None:
    from engine import __version__

    click.echo(f"engine {__version__}")
    ctx.exit()
