"""Benchmark: a 100,000-person waitlist restocked with plenty of stock, sent through a local
SendGrid-compatible server that posts signed events back to POST /hooks/sendgrid.

Usage: python benchmarks/campaign_send.py [--people N] [--database-url URL]
Prints the time to hand every email over and the peak memory (RSS) of this process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import resource
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sendgrid_server import EventSigner, processed_events, sendgrid_server, sendgrid_settings
from sqlalchemy import insert, select, update

from engine import create_app
from engine.campaigns import detect_restocks, run_due_waves, send_queued
from engine.catalog import set_stock, variant_by_sku
from engine.db import get_db, utcnow
from engine.mail import make_backend
from engine.models import CampaignMessage, Signup, StockTransition, Subscriber
from engine.pages import make_environment


def main() -> None:
    """Seed, restock, send, report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="campaign-bench-"))
    url = args.database_url or f"sqlite:///{folder / 'engine.sqlite3'}"
    signer = EventSigner()
    app = create_app({
        "INSTANCE_PATH": str(folder), "DATABASE_URL": url, "SECRET_KEY": "bench",
        "CONTENT_DIR": str(folder / "content"), "OUTPUT_DIR": str(folder / "site"),
        "RESTOCK_AUTO_SEND": True, "SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_key,
        "HEALTH_REQUIRE_SCHEDULER": False,
    })  # fmt: skip
    db = get_db(app)
    db.upgrade()
    seed(app, args.people)
    with db.session() as session:
        set_stock(session, variant_by_sku(session, "BENCH-1"), 1_000_000, source="cli")
    with db.session() as session:
        detect_restocks(session, app.config, make_environment(app.config), utcnow())
    posts: queue.Queue[bytes | None] = queue.Queue()
    client = app.test_client()

    def deliver() -> None:
        while (body := posts.get()) is not None:
            answer = client.post("/hooks/sendgrid", data=body, headers=signer.headers(body))
            assert answer.status_code == 200, answer.data

    poster = threading.Thread(target=deliver)
    poster.start()
    with sendgrid_server(keep_bodies=False) as api:
        api.on_accepted = lambda body: posts.put(json.dumps(processed_events(body)).encode())
        settings = {**app.config, **sendgrid_settings(api)}
        started = time.perf_counter()
        waves = run_due_waves(db, settings, utcnow())
        planned = time.perf_counter()
        report = send_queued(db, settings, make_backend(settings))
        handed = time.perf_counter()
        posts.put(None)
        poster.join()
        settled = time.perf_counter()
        counts = Counter(api.sent_message_ids())
    with db.session() as session:
        sent = len(session.scalars(select(CampaignMessage.id).where(
            CampaignMessage.status == "sent")).all())  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"database: {db.engine.dialect.name}, people: {args.people:,}")
    print(f"wave planned (pages rebuilt, {waves.queued:,} queued): {planned - started:.1f} s")
    print(f"handed over: {report.sent:,} in {report.batches} requests, "
          f"{handed - started:.1f} s from the wave's start")  # fmt: skip
    print(f"events applied (processed, signed): {settled - handed:.1f} s after the last send")
    print(f"SendGrid got {len(counts):,} distinct emails, most copies of one: "
          f"{max(counts.values()) if counts else 0}; rows sent: {sent:,}")  # fmt: skip
    print(f"peak memory (RSS, this process incl. the local server): {peak_mb:.0f} MB")


def seed(app: object, people: int) -> None:
    """Add a sold-out product and ``people`` confirmed signups with Core inserts."""
    from campaign_data import product

    db = get_db(app)  # type: ignore[arg-type]
    with db.session() as session:
        product(session, "bench-pack", ("BENCH-1",))
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
                {"subscriber_id": sid, "product_handle": "bench-pack", "sku": "",
                 "status": "confirmed", "quantity": 1,
                 "signed_up_at": t0 + dt.timedelta(seconds=i), "pending_since": t0,
                 "consent_version": "v1", "consent_at": t0, "confirmed_at": t0}
                for i, sid in enumerate(ids[start : start + 10_000], start=start)
            ]  # fmt: skip
            session.execute(insert(Signup), rows)


if __name__ == "__main__":
    main()
