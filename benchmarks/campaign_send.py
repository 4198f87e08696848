"""Benchmark: a 100,000-person waitlist restocked with plenty of stock, sent through a local
SendGrid-compatible server that posts signed events back to POST /hooks/sendgrid.

Usage:
    python benchmarks/campaign_send.py [--people N] [--workers K] [--database-url URL]

This process seeds a fresh database (SQLite in a temp folder, or a fresh schema in the
PostgreSQL database given, dropped afterwards), restocks the product, and plays SendGrid and
the web app: the local server takes the requests, and its signed ``processed`` events go to
``POST /hooks/sendgrid``. The sending side is K separate worker processes (default 1 on
SQLite, 2 on PostgreSQL), each running the ``campaign-waves`` job's work (due waves, then
``send_queued``) in a loop, so the memory reported per worker is the sender's alone.
"Handed over" is the time from the go signal until the server has accepted every email.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import queue
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sendgrid_server import (
    EventSigner,
    SendGridServer,
    processed_events,
    sendgrid_server,
    sendgrid_settings,
)
from sqlalchemy import create_engine, func, insert, select, text, update

from engine import create_app
from engine.db import get_db, utcnow
from engine.models import Campaign, CampaignMessage, Signup, StockTransition, Subscriber

HERE = Path(__file__).resolve()
#: Emails of a campaign that are not settled yet.
OPEN = ("queued", "sending", "unknown")


def machine() -> str:
    """Return the machine in one line: CPUs, Python, load average now."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load}"


@contextlib.contextmanager
def fresh_database(url: str, folder: Path) -> Iterator[str]:
    """Yield a URL of an empty database: a SQLite file in ``folder``, or a new PostgreSQL schema
    in the database ``url`` names (dropped afterwards)."""
    if not url:
        yield f"sqlite:///{folder / 'engine.sqlite3'}"
        return
    if not url.startswith("postgresql"):
        raise SystemExit("--database-url: only PostgreSQL URLs (SQLite is the default)")
    schema = f"campaign_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def app_config(folder: Path, url: str, public_key: str, **extra: Any) -> dict[str, Any]:
    """Return the settings the benchmark's processes share."""
    return {
        "INSTANCE_PATH": str(folder), "DATABASE_URL": url, "SECRET_KEY": "bench",
        "CONTENT_DIR": str(folder / "content"), "OUTPUT_DIR": str(folder / "site"),
        "RESTOCK_AUTO_SEND": True, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_key,
        "HEALTH_REQUIRE_SCHEDULER": False, **extra,
    }  # fmt: skip


def seed(app: Any, people: int, handle: str = "bench-pack", sku: str = "BENCH-1") -> None:
    """Add a sold-out product and ``people`` confirmed signups with Core inserts."""
    from campaign_data import product

    db = get_db(app)
    with db.session() as session:
        product(session, handle, (sku,))
        session.execute(update(StockTransition).values(handled_at=utcnow()))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.session() as session:
        for start in range(0, people, 10_000):
            rows = [
                {"address": f"p{n}@example.org", "email": f"p{n}@example.org",
                 "token_key": secrets.token_hex(6), "created_at": t0}
                for n in range(start, min(people, start + 10_000))
            ]  # fmt: skip
            session.execute(insert(Subscriber), rows)
        ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
        for start in range(0, len(ids), 10_000):
            rows = [
                {"subscriber_id": sid, "product_handle": handle, "sku": "",
                 "status": "confirmed", "quantity": 1,
                 "signed_up_at": t0 + dt.timedelta(seconds=i), "pending_since": t0,
                 "consent_version": "v1", "consent_at": t0, "confirmed_at": t0}
                for i, sid in enumerate(ids[start : start + 10_000], start=start)
            ]  # fmt: skip
            session.execute(insert(Signup), rows)


def restock(app: Any, sku: str = "BENCH-1", units: int = 1_000_000) -> int:
    """Put the product back in stock and create its campaign (auto-send); return its id."""
    from engine.campaigns import detect_restocks
    from engine.catalog import set_stock, variant_by_sku
    from engine.pages import make_environment

    db = get_db(app)
    with db.session() as session:
        set_stock(session, variant_by_sku(session, sku), units, source="cli")
    with db.session() as session:
        detect_restocks(session, app.config, make_environment(app.config), utcnow())
        return int(session.scalars(select(Campaign.id).order_by(Campaign.id.desc())).first() or 0)


class EventPoster:
    """Posts the local server's signed events to ``POST /hooks/sendgrid`` on its own thread."""

    def __init__(self, app: Any, signer: EventSigner) -> None:
        self.client = app.test_client()
        self.signer = signer
        self.posts: queue.Queue[bytes | None] = queue.Queue()
        self.errors: list[str] = []
        self.posted = 0
        self.open = threading.Event()  # cleared: events wait (SendGrid's delivery lags)
        self.open.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def attach(self, server: SendGridServer) -> None:
        """Post ``processed`` events for every request the server accepts."""
        server.on_accepted = lambda body: self.posts.put(
            json.dumps(processed_events(body)).encode()
        )

    def _run(self) -> None:
        while (body := self.posts.get()) is not None:
            self.open.wait()
            answer = self.client.post(
                "/hooks/sendgrid", data=body, headers=self.signer.headers(body)
            )
            if answer.status_code != 200:
                self.errors.append(f"{answer.status_code}: {answer.get_data(as_text=True)[:200]}")
            self.posted += 1

    def close(self) -> None:
        """Post what is left, then stop."""
        self.open.set()
        self.posts.put(None)
        self.thread.join()


def open_emails(db: Any, campaign_id: int) -> int:
    """Return how many of a campaign's emails are not settled (queued, in flight, unknown)."""
    with db.session() as session:
        return int(session.scalar(
            select(func.count()).select_from(CampaignMessage)
            .where(CampaignMessage.campaign_id == campaign_id, CampaignMessage.status.in_(OPEN))
        ) or 0)  # fmt: skip


def status_counts(db: Any, campaign_id: int) -> dict[str, int]:
    """Return a campaign's emails counted by status."""
    with db.session() as session:
        rows = session.execute(
            select(CampaignMessage.status, func.count())
            .where(CampaignMessage.campaign_id == campaign_id)
            .group_by(CampaignMessage.status)
        ).all()
    return {status: int(count) for status, count in rows}


# --------------------------------------------------------------------------- worker process


def worker_main(config: dict[str, Any], campaign_id: int) -> None:
    """One sending worker: the campaign-waves job's work in a loop until the campaign is done.

    Prints "ready" once set up, waits for a line on stdin, then runs; prints a JSON report.
    """
    from engine.campaigns import run_due_waves, send_queued
    from engine.mail import make_backend

    app = create_app(config)
    db = get_db(app)
    settings = app.config
    backend = make_backend(settings)
    with db.session() as session:
        session.execute(select(1))
    print("ready", flush=True)
    if not sys.stdin.readline():
        return  # the benchmark went away before the start
    cpu0 = time.process_time()
    claimed = sent = batches = waves = 0
    planned_after = None
    started = time.perf_counter()
    while True:
        wave = run_due_waves(db, settings, utcnow())
        if wave.waves:
            waves += wave.waves
            planned_after = time.perf_counter() - started
        report = send_queued(db, settings, backend)
        claimed += report.claimed
        sent += report.sent
        batches += report.batches
        if report.claimed == 0:
            if open_emails(db, campaign_id) == 0 and _planned(db, campaign_id):
                break
            time.sleep(0.05)
    backend.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "pid": os.getpid(), "claimed": claimed, "sent": sent, "batches": batches,
        "waves": waves, "planned_after": planned_after,
        "cpu": time.process_time() - cpu0,
        "peak_mb": usage.ru_maxrss / 1024,
    }), flush=True)  # fmt: skip


def _planned(db: Any, campaign_id: int) -> bool:
    with db.session() as session:
        return bool(session.scalar(
            select(func.count()).select_from(CampaignMessage)
            .where(CampaignMessage.campaign_id == campaign_id)
        ))  # fmt: skip


# --------------------------------------------------------------------------- main


def main() -> None:
    """Seed, restock, start the workers, send, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--database-url", default="", help="PostgreSQL (default: SQLite)")
    parser.add_argument("--workers", type=int, default=0, help="default: 1 SQLite, 2 PostgreSQL")
    parser.add_argument("--profile", default="", help="write worker 1's cProfile stats here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec.get("profile"):
            import cProfile

            cProfile.runctx(
                "worker_main(spec['config'], spec['campaign'])", globals(), locals(),
                spec["profile"],
            )  # fmt: skip
        else:
            worker_main(spec["config"], spec["campaign"])
        return
    workers = args.workers or (2 if args.database_url else 1)
    folder = Path(tempfile.mkdtemp(prefix="campaign-bench-"))
    try:
        with fresh_database(args.database_url, folder) as url:
            run(folder, url, args.people, workers, args.profile)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, url: str, people: int, workers: int, profile: str = "") -> None:
    """The benchmark proper, on a fresh database."""
    signer = EventSigner()
    config = app_config(folder, url, signer.public_key)
    app = create_app(config)
    db = get_db(app)
    db.upgrade()
    seeded = time.perf_counter()
    seed(app, people)
    campaign_id = restock(app)
    print(f"seeded {people:,} people and restocked in {time.perf_counter() - seeded:.1f} s")
    poster = EventPoster(app, signer)
    with sendgrid_server(keep_bodies=False) as api:
        poster.attach(api)
        accepted_at: list[float] = []
        on_accepted = api.on_accepted

        def note(body: dict[str, Any]) -> None:
            if on_accepted is not None:
                on_accepted(body)
            if api.personalizations >= people and not accepted_at:
                accepted_at.append(time.perf_counter())

        api.on_accepted = note
        spec = {"config": {**config, **sendgrid_settings(api)}, "campaign": campaign_id}
        procs = []
        for n in range(workers):
            argument = json.dumps({**spec, "profile": profile if n == 0 else ""})
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(HERE), "--worker", argument],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise SystemExit(f"a worker did not start: {line!r}")
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = before.ru_utime + before.ru_stime
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        try:
            for proc in procs:
                out, _ = proc.communicate()
                if proc.returncode:
                    raise SystemExit(f"a worker failed with exit status {proc.returncode}")
                reports.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for proc in procs:  # never leave a worker behind (Ctrl-C, a failed worker)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finished = time.perf_counter()
        poster.close()
        settled = time.perf_counter()
        counts = Counter(api.sent_message_ids())
        problems = list(api.problems)
    statuses = status_counts(db, campaign_id)
    handed = (accepted_at[0] if accepted_at else finished) - started
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    parent_mb = usage.ru_maxrss / 1024
    parent_cpu = usage.ru_utime + usage.ru_stime - cpu_before
    print(f"machine: {machine()}")
    print(f"database: {db.engine.dialect.name}, people: {people:,}, workers: {workers}")
    print()
    print("| worker | emails claimed | sent | requests | wave planned at | CPU | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, report in enumerate(reports, start=1):
        planned = report["planned_after"]
        at = f"{planned:.1f} s" if planned is not None else "—"
        print(f"| {n} | {report['claimed']:,} | {report['sent']:,} | {report['batches']} | "
              f"{at} | {report['cpu']:.1f} s | {report['peak_mb']:.0f} MB |")  # fmt: skip
    print()
    print(f"all {sum(counts.values()):,} handed over in {handed:.1f} s "
          f"(workers done {finished - started:.1f} s; events applied "
          f"{settled - finished:.1f} s later)")  # fmt: skip
    print(f"SendGrid got {len(counts):,} distinct emails, duplicates: {duplicates}, "
          f"payload problems: {len(problems)}, hook errors: {len(poster.errors)}")  # fmt: skip
    print(f"emails by status: {json.dumps(statuses, sort_keys=True)}")
    print(f"this process (SendGrid server + event hook): {parent_cpu:.1f} s CPU while sending, "
          f"peak RSS {parent_mb:.0f} MB")  # fmt: skip
    total_cpu = parent_cpu + sum(report["cpu"] for report in reports)
    print(f"CPU of every process while sending: {total_cpu:.1f} s "
          f"({total_cpu / max(handed, 1e-9):.2f} CPUs busy on average)")  # fmt: skip
    ok = len(counts) == people and duplicates == 0 and not problems and not poster.errors
    if not ok:
        print("FAILED: not every person got exactly one email", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
