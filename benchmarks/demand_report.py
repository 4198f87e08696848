"""Benchmark: `engine demand report` over 1,000 products and 10 million raw page views.

Builds a fresh SQLite database (migrated), 1,000 products with stock, 10 million raw page
views spread over the last 90 days (TRACKING_RAW_RETENTION_DAYS; today included), the past
days rolled up with the engine's own roll-up, 20,000 waitlist signups and a Search Console
Pages dataset, then times the report by product, page and source (best and median of
several runs, reading through the same function the CLI calls).

    /work/venv/bin/python benchmarks/demand_report.py [--events 10000000] [--products 1000]
        [--db /tmp/demand-bench.sqlite3] [--reuse]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import func, insert, select

from engine.db import Database, utcnow
from engine.demand import demand_report
from engine.models import PageView, Product, SearchDataset, SearchRow, Signup, Variant
from engine.pageviews import rollup
from engine.settings import DEFAULTS

CHANNELS = [("organic", "google"), ("organic", "bing"), ("social", "pinterest"),
            ("email", "newsletter"), ("referral", "blog.example"), ("direct", ""),
            ("paid", "google")]  # fmt: skip
DAYS = 90
BATCH = 200_000


def build(path: Path, events: int, products: int) -> None:
    """Create the data set in a fresh database at ``path``."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    now = utcnow()
    today = now.date()
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
    database.dispose()

    # Raw views through the driver in big batches (the ORM would take far longer).
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    paths = [f"/products/{h}/" for h in handles] + [f"/guides/guide-{i}/" for i in range(100)]
    weights = [1.0 / (1 + i) ** 0.8 for i in range(len(paths))]  # a long tail
    rng = random.Random(2)
    sql = (
        "INSERT INTO page_view (day, ts, path, channel, source, medium, campaign, engine_token,"
        " visitor, entry) VALUES (?, ?, ?, ?, ?, '', '', '', ?, ?)"
    )
    done = 0
    started = time.perf_counter()
    # Day by day (oldest first), so the (day, path) index grows at its end.
    for back in range(DAYS - 1, -1, -1):
        day = (today - dt.timedelta(days=back)).isoformat()
        ts = f"{day} 12:00:00.000000"
        remaining = events // DAYS + (1 if back < events % DAYS else 0)
        while remaining:
            count = min(BATCH, remaining)
            chosen = rng.choices(paths, weights, k=count)
            rows = [
                (day, ts, chosen[index], *CHANNELS[index % 7], f"{index % 50_000:032x}",
                 index % 3 == 0)
                for index in range(count)
            ]  # fmt: skip
            connection.executemany(sql, rows)
            connection.commit()
            remaining -= count
            done += count
            elapsed = time.perf_counter() - started
            print(f"\r{done:,} raw views ({elapsed:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    connection.close()

    database = Database(f"sqlite:///{path}")
    started = time.perf_counter()
    with database.session() as session:
        for back in range(1, DAYS):
            rollup(session, today - dt.timedelta(days=back))
    print(f"rolled up {DAYS - 1} days in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    database.dispose()


def measure(path: Path, runs: int) -> None:
    """Time the report by product, page and source; print a Markdown table."""
    database = Database(f"sqlite:///{path}")
    with database.session() as session:
        raw = session.scalar(select(func.count()).select_from(PageView)) or 0
    print(f"raw page views in the table: {raw:,}")
    print("| report | rows | best (s) | median (s) |")
    print("| --- | ---: | ---: | ---: |")
    for by in ("product", "page", "source"):
        times = []
        rows = 0
        for _ in range(runs):
            started = time.perf_counter()
            with database.session() as session:
                report = demand_report(session, DEFAULTS, days=28, by=by, now=utcnow())
            times.append(time.perf_counter() - started)
            rows = len(report.rows)
        print(
            f"| --by {by} --days 28 | {rows:,} | {min(times):.3f} "
            f"| {statistics.median(times):.3f} |"
        )
    database.dispose()


def main() -> None:
    """Build (unless --reuse) and measure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/demand-bench.sqlite3"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="Measure an existing data set.")
    args = parser.parse_args()
    if not args.reuse:
        build(args.db, args.events, args.products)
    measure(args.db, args.runs)


if __name__ == "__main__":
    main()
