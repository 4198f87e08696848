"""Kill benchmark: `engine worker` sends a 100,000-person restock campaign and is SIGKILLed at
random moments, restarted after each kill; then the run completes. The local SendGrid server's
log must show every person emailed exactly once.

Usage:
    python benchmarks/campaign_kill.py [--people N] [--kills 10] [--seed S] [--database-url URL]

This process seeds a fresh database (SQLite in a temp folder by default, or a fresh schema in
the PostgreSQL database given, dropped afterwards), restocks the product (the campaign starts
at once: ``RESTOCK_AUTO_SEND``), and plays SendGrid and the web app: the local server takes
the requests and its signed ``processed`` events go to ``POST /hooks/sendgrid``. The worker is
a real ``engine worker`` process with short leases so that recovery takes seconds, not
minutes (``CAMPAIGN_LEASE_SECONDS`` 10, ``RECONCILE_AFTER_SECONDS`` 3,
``SCHEDULER_LEASE_SECONDS`` 3). For each kill it prints what was in flight, how much of that
SendGrid already had, and, at the end, how each part was settled.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_send import (
    EventPoster,
    app_config,
    fresh_database,
    machine,
    restock,
    seed,
    status_counts,
)
from sendgrid_server import EventSigner, SendGridServer, sendgrid_server, sendgrid_settings
from sqlalchemy import select

from engine import create_app
from engine.db import get_db
from engine.models import CampaignMessage

#: Settings of the worker under test: short leases and intervals so recovery takes seconds.
WORKER_SETTINGS = {
    "CAMPAIGN_LEASE_SECONDS": 10,
    "RECONCILE_AFTER_SECONDS": 3,
    "CAMPAIGN_WAVES_INTERVAL_SECONDS": 1,
    "CAMPAIGN_RECONCILE_INTERVAL_SECONDS": 1,
    "RESTOCK_CAMPAIGNS_INTERVAL_SECONDS": 1,
    "SCHEDULER_LEASE_SECONDS": 3,
    "SCHEDULER_HEARTBEAT_SECONDS": 1,
}

#: Every worker process started, so none outlives the benchmark.
WORKERS: list[subprocess.Popen[bytes]] = []


@dataclass
class Kill:
    """One SIGKILL: when, what was in flight, what SendGrid had of it."""

    number: int
    at: float
    alive: float
    moment: str
    in_flight: list[str] = field(default_factory=list)
    at_sendgrid: set[str] = field(default_factory=set)
    unknown: int = 0


def worker_env(config: dict[str, Any], server: SendGridServer) -> dict[str, str]:
    """Return the environment of an `engine worker` using the benchmark's settings."""
    settings = {**config, **sendgrid_settings(server), **WORKER_SETTINGS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env["ENGINE_INSTANCE_PATH"] = str(settings.pop("INSTANCE_PATH"))
    for name, value in settings.items():
        env[f"ENGINE_{name}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def in_flight(db: Any, campaign_id: int) -> tuple[list[str], int]:
    """Return the message ids of a campaign's emails in flight, and how many are unknown."""
    with db.session() as session:
        rows = session.execute(
            select(CampaignMessage.message_id, CampaignMessage.status).where(
                CampaignMessage.campaign_id == campaign_id,
                CampaignMessage.status.in_(("sending", "unknown")),
            )
        ).all()
    return [m for m, status in rows if status == "sending"], sum(
        1 for _m, status in rows if status == "unknown"
    )


def main() -> None:
    """Seed, restock, run and kill the worker, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1, help="random kill moments (default 1)")
    parser.add_argument("--database-url", default="", help="PostgreSQL (default: SQLite)")
    parser.add_argument("--min-alive", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("--max-alive", type=float, default=12.0, help="seconds (default 12)")
    parser.add_argument(
        "--aimed", type=float, default=0.5,
        help="share of kills made right after SendGrid accepts a request (default 0.5)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (s)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="campaign-kill-"))
    try:
        with fresh_database(args.database_url, folder) as url:
            ok = run(folder, url, args)
    finally:
        for proc in WORKERS:  # never leave a worker behind (Ctrl-C, an error)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if ok:
        shutil.rmtree(folder, ignore_errors=True)  # kept on failure: the worker's log is there
    sys.exit(0 if ok else 1)


def run(folder: Path, url: str, args: argparse.Namespace) -> bool:
    """The benchmark proper, on a fresh database; return True when nobody was lost or doubled."""
    rng = random.Random(args.seed)
    signer = EventSigner()
    config = app_config(folder, url, signer.public_key)
    app = create_app(config)
    db = get_db(app)
    db.upgrade()
    seed(app, args.people)
    campaign_id = restock(app)
    print(f"machine: {machine()}")
    print(f"database: {db.engine.dialect.name}, people: {args.people:,}, kills: {args.kills}, "
          f"seed: {args.seed}")  # fmt: skip
    poster = EventPoster(app, signer)
    kills: list[Kill] = []
    log = (folder / "worker.log").open("w")
    with sendgrid_server(keep_bodies=False) as api:
        poster.attach(api)
        accepted = threading.Event()
        posting = api.on_accepted

        def on_accepted(body: dict[str, Any]) -> None:
            if posting is not None:
                posting(body)
            accepted.set()

        api.on_accepted = on_accepted
        env = worker_env(config, api)
        command = [sys.executable, "-m", "engine", "worker"]
        started = time.perf_counter()
        deadline = started + args.timeout
        for number in range(1, args.kills + 1):
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            WORKERS.append(proc)
            born = time.perf_counter()
            time.sleep(rng.uniform(args.min_alive, args.max_alive))
            moment = "random"
            # Events lag behind (as SendGrid's do), so what was in flight can be seen.
            poster.open.clear()
            if rng.random() < args.aimed:
                # Right after SendGrid took a request: the worker has not recorded it yet.
                accepted.clear()
                if accepted.wait(timeout=15):
                    moment = "after a 202"
            if proc.poll() is not None:
                print(f"the worker exited by itself (status {proc.returncode}); see {log.name}")
                return False
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            alive = time.perf_counter() - born
            time.sleep(0.3)  # a request the server was reading when the worker died
            flying, unknown = in_flight(db, campaign_id)
            # Rows an earlier kill left in flight (their lease has not run out) are its own.
            earlier = {m for k in kills for m in k.in_flight}
            flying = [m for m in flying if m not in earlier]
            sent_ids = set(api.message_ids)
            kill = Kill(number, time.perf_counter() - started, alive, moment)
            kill.in_flight = flying
            kill.at_sendgrid = {m for m in flying if m in sent_ids}
            kill.unknown = unknown
            kills.append(kill)
            poster.open.set()
            print(f"kill {number:2} ({moment}): after {kill.alive:4.1f} s alive, "
                  f"{len(sent_ids):7,} at SendGrid, in flight {len(flying):5,} "
                  f"(SendGrid has {len(kill.at_sendgrid):,}), unknown {unknown:,}",
                  flush=True)  # fmt: skip
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        WORKERS.append(proc)
        while time.perf_counter() < deadline:
            statuses = status_counts(db, campaign_id)
            if statuses and not any(statuses.get(s) for s in ("queued", "sending", "unknown")):
                break
            time.sleep(0.5)
        done = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        poster.close()
        counts = Counter(api.message_ids)
        people = Counter(api.addresses)
        problems = list(api.problems)
    log.close()
    statuses = status_counts(db, campaign_id)
    print()
    print("| kill | moment | alive | in flight | SendGrid had them | how they were settled | "
          "copies at SendGrid | earlier kills' emails still unknown |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kill in kills:
        had = kill.at_sendgrid
        lost = [m for m in kill.in_flight if m not in had]
        settled = []
        if had:
            once = sum(1 for m in had if counts[m] == 1)
            settled.append(f"{once:,} of {len(had):,} by SendGrid's processed events, not resent")
        if lost:
            once = sum(1 for m in lost if counts[m] == 1)
            settled.append(f"{once:,} of {len(lost):,} resent once after the lease ran out")
        copies = Counter(counts[m] for m in kill.in_flight)
        shown = ", ".join(f"{c:,} × {n}" for n, c in sorted(copies.items())) or "—"
        print(f"| {kill.number} | {kill.moment} | {kill.alive:.1f} s | {len(kill.in_flight):,} | "
              f"{len(had):,} | {'; '.join(settled) or 'nothing in flight'} | {shown} | "
              f"{kill.unknown:,} |")  # fmt: skip
    duplicates = sum(n - 1 for n in people.values() if n > 1)
    missing = args.people - len(people)
    print()
    print(f"total: {done - started:.1f} s from the first start to every email settled, "
          f"{len(kills)} kills")  # fmt: skip
    print(f"SendGrid's log: {len(people):,} distinct people emailed, {duplicates} duplicates, "
          f"{missing:,} people never emailed, {len(counts):,} distinct message ids; "
          f"payload problems: {len(problems)}, hook errors: {len(poster.errors)}")  # fmt: skip
    print(f"emails by status: {json.dumps(statuses, sort_keys=True)}")
    ok = duplicates == 0 and missing == 0 and not problems and not poster.errors
    if not ok:
        print(f"FAILED: see the worker's log {folder / 'worker.log'}", file=sys.stderr)
    return ok


if __name__ == "__main__":
    main()
