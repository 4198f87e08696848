"""Benchmark: `engine demand report` over 1,000 products and 10 million raw page views.

Builds a fresh database (migrated), 1,000 products with stock, 10 million raw page views
spread over the last 90 days (TRACKING_RAW_RETENTION_DAYS; today included), the past days
rolled up with the engine's own roll-up, 20,000 waitlist signups and a Search Console Pages
dataset. Then it times the report by product, page and source two ways:

- **in-process**: the function the CLI calls (``engine.demand.demand_report``), wall and
  CPU time of each run;
- **command**: ``python -m engine demand report --by ...`` as a separate process, the way
  a user runs it (Python start-up, imports, settings and the table output included).

It prints the machine, the load average and a Markdown table (best and median of
``--runs`` runs). The machine may be shared: CPU time is the steadier figure.

    python benchmarks/demand_report.py                        # SQLite, /tmp/demand-bench.sqlite3
    python benchmarks/demand_report.py --reuse                # measure the data already built
    python benchmarks/demand_report.py --database-url postgresql+psycopg://.../bench_demand

A PostgreSQL database must be empty (create one for the benchmark) unless ``--reuse``.
Loading uses the driver directly (SQLite: ``executemany`` in one transaction per day with
the journal off and the page_view index built after the load; PostgreSQL: ``COPY``);
those settings apply to the loading connection only, never to the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, inspect, select, text

from engine.db import Database, utcnow
from engine.demand import demand_report
from engine.models import PageView, Product, SearchDataset, SearchRow, Signup, Variant
from engine.pageviews import rollup
from engine.settings import DEFAULTS

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model

CHANNELS = [("organic", "google"), ("organic", "bing"), ("social", "pinterest"),
            ("email", "newsletter"), ("referral", "blog.example"), ("direct", ""),
            ("paid", "google")]  # fmt: skip
DAYS = 90
BATCH = 200_000
VISITORS_PER_DAY = 50_000
VIEW_COLUMNS = ("day", "ts", "path", "channel", "source", "medium", "campaign", "engine_token",
                "visitor", "entry")  # fmt: skip
INDEX = "ix_page_view_day_path_source"


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(done: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    print(f"\r{done:,} raw views ({elapsed:.0f} s)", end="", file=sys.stderr, flush=True)


# --- building the data set ----------------------------------------------------------------


def _fresh(url: str) -> Database:
    """Return a migrated, empty database at ``url`` (SQLite files are recreated)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    database = Database(url)
    with database.engine.connect() as connection:
        tables = inspect(connection).get_table_names()
    if tables:
        raise SystemExit(f"{url} is not empty ({len(tables)} tables): give an empty database")
    database.upgrade()
    return database


def seed_catalog(database: Database, products: int, today: dt.date) -> list[str]:
    """Insert products with stock, signups and one Pages dataset; return the handles."""
    now = utcnow()
    handles = [f"product-{i:04d}" for i in range(products)]
    with database.session() as session:
        session.execute(
            insert(Product),
            [
                {"handle": h, "title": f"Product {i}", "vendor": "Bench"}
                for i, h in enumerate(handles)
            ],
        )
        ids = {handle: pid for handle, pid in session.execute(select(Product.handle, Product.id))}
        rng = random.Random(1)
        session.execute(
            insert(Variant),
            [
                {"product_id": ids[h], "option_key": "", "price": 10, "sku": f"{h}-s",
                 "stock": rng.choice([0, 0, 3, 10, 50, 400]), "sellable": True}
                for h in handles
            ],
        )  # fmt: skip
        signups = []
        for _ in range(20_000):
            when = now - dt.timedelta(days=rng.randrange(60), minutes=rng.randrange(1440))
            signups.append(
                {"product_handle": rng.choice(handles[:300]), "status": "confirmed",
                 "signed_up_at": when, "pending_since": when, "consent_version": "v1",
                 "consent_at": when, "page": f"/products/{rng.choice(handles[:300])}/",
                 "channel": rng.choice(CHANNELS)[0], "quantity": 1}
            )  # fmt: skip
        session.execute(insert(Signup), signups)
        dataset = SearchDataset(
            kind="pages",
            date_from=today - dt.timedelta(days=28),
            date_to=today - dt.timedelta(days=1),
        )
        session.add(dataset)
        session.flush()
        session.execute(
            insert(SearchRow),
            [
                {"dataset_id": dataset.id, "key": f"/products/{h}/", "product_handle": h,
                 "clicks": i % 50, "impressions": 100 + i}
                for i, h in enumerate(handles)
            ],
        )  # fmt: skip
    return handles


def raw_views(events: int, today: dt.date) -> Iterator[tuple[str, int]]:
    """Yield (day, count) per day, oldest first, spreading ``events`` over the DAYS."""
    for back in range(DAYS - 1, -1, -1):
        day = (today - dt.timedelta(days=back)).isoformat()
        yield day, events // DAYS + (1 if back < events % DAYS else 0)


def day_rows(
    day: str, count: int, paths: list[str], weights: list[float], rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    """Yield one day's raw views as driver rows (a long tail of pages, seven sources)."""
    ts = f"{day} 12:00:00.000000"
    visitors = [f"{index:032x}" for index in range(VISITORS_PER_DAY)]
    done = 0
    while done < count:
        size = min(BATCH, count - done)
        chosen = rng.choices(paths, weights, k=size)
        sources = itertools.islice(itertools.cycle(CHANNELS), done % 7, None)
        who = itertools.islice(itertools.cycle(visitors), done % VISITORS_PER_DAY, None)
        entries = itertools.islice(itertools.cycle((True, False, False)), done % 3, None)
        for path, (channel, source), visitor, entry in zip(
            chosen, sources, who, entries, strict=False
        ):
            yield day, ts, path, channel, source, "", "", "", visitor, entry
        done += size


def load_sqlite(path: str, events: int, handles: list[str], today: dt.date) -> None:
    """Load raw views with sqlite3: journal off, big cache, the index built afterwards."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=OFF")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-1000000")  # ~1 GB, this connection only
    connection.execute("PRAGMA temp_store=MEMORY")
    (index_sql,) = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (INDEX,)
    ).fetchone()
    connection.execute(f"DROP INDEX {INDEX}")
    sql = (
        f"INSERT INTO page_view ({', '.join(VIEW_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(VIEW_COLUMNS))})"
    )
    paths, weights = _pages(handles)
    rng = random.Random(2)
    started, done = time.perf_counter(), 0
    for day, count in raw_views(events, today):
        connection.execute("BEGIN")
        connection.executemany(sql, day_rows(day, count, paths, weights, rng))
        connection.execute("COMMIT")
        done += count
        _progress(done, started)
    _log("")
    index_started = time.perf_counter()
    connection.execute(index_sql)
    # No ANALYZE: the engine never runs it, so the report is timed with SQLite's defaults.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.close()
    _log(f"{INDEX} built in {time.perf_counter() - index_started:.1f} s")


def load_postgresql(database: Database, events: int, handles: list[str], today: dt.date) -> None:
    """Load raw views with COPY; the (day, path) index is built afterwards."""
    paths, weights = _pages(handles)
    rng = random.Random(2)
    started, done = time.perf_counter(), 0
    raw = database.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (INDEX,))
        (index_sql,) = cursor.fetchone()
        cursor.execute(f"DROP INDEX {INDEX}")
        for day, count in raw_views(events, today):
            copy_sql = f"COPY page_view ({', '.join(VIEW_COLUMNS)}) FROM STDIN"
            with cursor.copy(copy_sql) as copy:  # type: ignore[attr-defined]
                for row in day_rows(day, count, paths, weights, rng):
                    copy.write_row(row)
            raw.commit()
            done += count
            _progress(done, started)
        _log("")
        index_started = time.perf_counter()
        cursor.execute(index_sql)
        raw.commit()
        _log(f"{INDEX} built in {time.perf_counter() - index_started:.1f} s")
    finally:
        raw.close()


def _pages(handles: list[str]) -> tuple[list[str], list[float]]:
    paths = [f"/products/{h}/" for h in handles] + [f"/guides/guide-{i}/" for i in range(100)]
    return paths, [1.0 / (1 + i) ** 0.8 for i in range(len(paths))]  # a long tail


def build(url: str, events: int, products: int) -> None:
    """Create the data set in a fresh database at ``url``."""
    database = _fresh(url)
    today = utcnow().date()
    started = time.perf_counter()
    handles = seed_catalog(database, products, today)
    _log(f"catalog, signups and search data in {time.perf_counter() - started:.1f} s")
    if url.startswith("sqlite"):
        database.dispose()
        load_sqlite(url.split("///", 1)[1], events, handles, today)
        database = Database(url)

        @event.listens_for(database.engine, "connect")
        def _big_cache(dbapi_connection: Any, _record: Any) -> None:
            # Only while rolling up the generated days; the report runs with defaults.
            dbapi_connection.execute("PRAGMA cache_size=-1000000")

    else:
        load_postgresql(database, events, handles, today)
    started = time.perf_counter()
    with database.session() as session:
        for back in range(DAYS - 1, 0, -1):
            rollup(session, today - dt.timedelta(days=back))
    _log(f"rolled up {DAYS - 1} days with the engine in {time.perf_counter() - started:.1f} s")
    if not url.startswith("sqlite"):
        # What autovacuum does on its own a while after a bulk load: statistics and the
        # visibility map (index-only scans need it).
        started = time.perf_counter()
        with database.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )
        _log(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")
    database.dispose()


# --- measuring ----------------------------------------------------------------------------


def _run_command(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command; return its wall seconds, CPU seconds (user + system) and output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, result.stdout


def _backend_pid(session: Any) -> int | None:
    """Return the PostgreSQL server process of the session (None on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return int(session.scalar(text("SELECT pg_backend_pid()")))


def _process_cpu(pid: int | None) -> float:
    """Return a local process's CPU seconds (user + system) from /proc; 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, runs: int, command: bool) -> None:
    """Time the report by product, page and source; print a Markdown table."""
    database = Database(url)
    with database.session() as session:
        raw = session.scalar(select(func.count()).select_from(PageView)) or 0
        today = utcnow().date()
        raw_today = session.scalar(
            select(func.count()).select_from(PageView).where(PageView.day == today)
        )
    dialect = database.engine.dialect.name
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {platform.python_version()}")
    print(f"database: {dialect}; raw page views: {raw:,} ({raw_today or 0:,} today)")
    print(f"load average before: {load_average()}")
    print(
        "CPU: in-process runs count this process and, on a local PostgreSQL, its server "
        "process; commands count the command's own process (not the PostgreSQL server's)"
    )
    print()
    print("| how | report | rows | best wall (s) | median wall (s) | median CPU (s) | load |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for by in ("product", "page", "source"):
        load = os.getloadavg()[0]
        walls, cpus, rows = [], [], 0
        for _ in range(runs):
            with database.session() as session:
                backend = _backend_pid(session)
                server_started = _process_cpu(backend)
                cpu_started = time.process_time()
                started = time.perf_counter()
                report = demand_report(session, DEFAULTS, days=28, by=by, now=utcnow())
                walls.append(time.perf_counter() - started)
                server = _process_cpu(backend) - server_started
                cpus.append(time.process_time() - cpu_started + server)
            rows = len(report.rows)
        print(
            f"| in-process | `--by {by} --days 28` | {rows:,} | {min(walls):.3f} "
            f"| {statistics.median(walls):.3f} | {statistics.median(cpus):.3f} | {load:.1f} |"
        )
    database.dispose()
    if not command:
        return
    with tempfile.TemporaryDirectory(prefix="demand-bench-") as folder:
        (Path(folder) / "content").mkdir()
        env = dict(
            os.environ,
            ENGINE_INSTANCE_PATH=folder,
            ENGINE_DATABASE_URL=url,
            ENGINE_CONTENT_DIR=str(Path(folder) / "content"),
        )
        for by in ("product", "page", "source"):
            args = [sys.executable, "-m", "engine", "demand", "report", "--by", by, "--days", "28"]
            load = os.getloadavg()[0]
            results = [_run_command(args, env) for _ in range(runs)]
            walls = [wall for wall, _cpu, _out in results]
            cpus = [cpu for _wall, cpu, _out in results]
            rows = len(results[-1][2].splitlines()) - 3  # title, header and rule lines
            print(
                f"| command | `engine demand report --by {by} --days 28` | {rows:,} "
                f"| {min(walls):.3f} | {statistics.median(walls):.3f} "
                f"| {statistics.median(cpus):.3f} | {load:.1f} |"
            )
        args = [sys.executable, "-m", "engine", "--help"]
        load = os.getloadavg()[0]
        results = [_run_command(args, env) for _ in range(runs)]
        print(
            f"| command | `engine --help` (start-up alone) | - "
            f"| {min(r[0] for r in results):.3f} | {statistics.median(r[0] for r in results):.3f} "
            f"| {statistics.median(r[1] for r in results):.3f} | {load:.1f} |"
        )
    print()
    print(f"load average after: {load_average()}")


def main() -> None:
    """Build (unless --reuse) and measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/demand-bench.sqlite3"))
    parser.add_argument("--database-url", default="", help="Instead of --db (e.g. PostgreSQL).")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="Measure an existing data set.")
    parser.add_argument(
        "--no-command", action="store_true", help="Skip the `engine demand report` processes."
    )
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{args.db}"
    if not args.reuse:
        started = time.perf_counter()
        build(url, args.events, args.products)
        _log(f"data set built in {time.perf_counter() - started:.0f} s")
    measure(url, args.runs, not args.no_command)


if __name__ == "__main__":
    main()
