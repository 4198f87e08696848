"""Restock campaigns: detection, waves, sending at most once, reconciliation, the CLI."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from campaign_data import add_signup, product, waiting
from flask import Flask
from flask.testing import FlaskCliRunner
from sendgrid_server import Reply, processed_events, sendgrid_server, sendgrid_settings
from sqlalchemy import func, select, update

from engine.campaigns import (
    TRANSITIONS,
    CampaignError,
    Waiter,
    WavePlan,
    apply_events,
    campaign_stats,
    detect_restocks,
    plan_wave,
    reconcile,
    run_due_waves,
    send_queued,
    transition,
)
from engine.catalog import set_stock, variant_by_sku
from engine.db import Database, utcnow
from engine.mail import make_backend, read_outbox
from engine.models import Campaign, CampaignMessage, MailMessage, Signup, StockTransition
from engine.pages import make_environment
from engine.waitlist import suppress


def restock(db: Database, sku: str, stock: int) -> None:
    """Set a SKU's stock through the one stock function and commit."""
    with db.session() as session:
        set_stock(session, variant_by_sku(session, sku), stock, source="cli")


def detect(db: Database, settings: Any, now: dt.datetime | None = None) -> list[int]:
    """Run restock detection once; return the campaigns created."""
    with db.session() as session:
        report = detect_restocks(session, settings, make_environment(settings), now or utcnow())
    return report.created or []


def campaigns(db: Database) -> list[Campaign]:
    """Return every campaign."""
    with db.session() as session:
        return list(session.scalars(select(Campaign).order_by(Campaign.id)))


def messages(db: Database) -> list[CampaignMessage]:
    """Return every campaign email."""
    with db.session() as session:
        return list(session.scalars(select(CampaignMessage).order_by(CampaignMessage.id)))


@pytest.fixture
def store(app: Flask, db: Database) -> Database:
    """A sold-out two-variant tent with 5 people waiting (3 on the product, 2 on size M)."""
    app.config.update(MARKETER_EMAIL="marketer@shop.test", RESTOCK_WAVE_FACTOR=2.0)
    with db.session() as session:
        product(session, "trail-tent", ("TENT-S", "TENT-M"))
        waiting(session, "trail-tent", 3)
        waiting(session, "trail-tent", 2, sku="TENT-M", start=3)
        session.execute(update(StockTransition).values(handled_at=utcnow()))
    return db


# --- detection ---------------------------------------------------------------------------


def test_restock_creates_one_draft_and_emails_the_marketer(app: Flask, store: Database) -> None:
    restock(store, "TENT-M", 10)
    restock(store, "TENT-S", 4)
    (created,) = detect(store, app.config)
    (campaign,) = campaigns(store)
    assert campaign.id == created and campaign.status == "draft"
    assert campaign.skus == ["TENT-M", "TENT-S"]
    with store.session() as session:
        assert session.scalar(
            select(func.count()).select_from(StockTransition)
            .where(StockTransition.handled_at.is_(None))
        ) == 0  # fmt: skip
        approval = session.scalars(select(MailMessage)).one()
    assert approval.to_email == "marketer@shop.test"
    assert approval.subject == "Approve restock campaign 1: Trail Tent is back in stock"
    assert "engine campaigns send 1" in approval.text
    assert "5 waiting, 14 units, first wave 5, no second wave needed" in approval.text
    assert messages(store) == []  # nothing sent before approval


def test_flapping_stock_starts_no_second_campaign(app: Flask, store: Database) -> None:
    restock(store, "TENT-M", 3)
    assert len(detect(store, app.config)) == 1
    for stock in (0, 2, 0, 5):  # out, in, out, in within minutes
        restock(store, "TENT-M", stock)
        assert detect(store, app.config) == []
    assert [c.status for c in campaigns(store)] == ["draft"]


def test_restock_nobody_waits_for_starts_nothing(app: Flask, db: Database) -> None:
    with db.session() as session:
        product(session, "lonely-lamp", ("LAMP-1",))
        session.execute(update(StockTransition).values(handled_at=utcnow()))
    restock(db, "LAMP-1", 5)
    assert detect(db, app.config) == []


def test_coming_soon_products_first_stock_tells_product_waiters(app: Flask, db: Database) -> None:
    # Signups for a coming-soon product are keyed by handle before the product exists.
    with db.session() as session:
        waiting(session, "new-stove", 2)
    with db.session() as session:
        product(session, "new-stove", ("STOVE-1",), stock=8)  # first stock: a restock
    app.config["RESTOCK_AUTO_SEND"] = True
    assert len(detect(db, app.config)) == 1
    assert campaigns(db)[0].status == "scheduled"


# --- waves ---------------------------------------------------------------------------------


def waiters(*units: int) -> list[Waiter]:
    """Return waiters asking for these units, oldest first."""
    return [Waiter(n, (n,), u, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) for n, u in enumerate(units)]


def test_wave_is_sized_to_the_stock_in_units_oldest_first() -> None:
    assert [w.subscriber_id for w in plan_wave(waiters(1, 1, 1, 1, 1), 2, 1.5)] == [0, 1, 2]
    # The person asking for 2 units fills the budget; nobody behind them jumps the line.
    assert [w.subscriber_id for w in plan_wave(waiters(1, 2, 1, 1), 1, 3.0)] == [0, 1]
    assert [w.subscriber_id for w in plan_wave(waiters(5, 1), 1, 2.0)] == [0]  # never stuck
    assert plan_wave(waiters(1, 1), 0, 3.0) == []
    assert len(plan_wave(waiters(*[1] * 50), None, 3.0)) == 50  # not limited: everyone
    plan = WavePlan(waiting=2300, units=120, wave=list(waiters(*[1] * 360)), interval_minutes=60)
    assert plan.describe() == "2,300 waiting, 120 units, first wave 360, next wave in 60 min"


def send_all(db: Database, settings: Any, now: dt.datetime | None = None) -> Any:
    """Plan due waves and send through the configured backend."""
    when = now or utcnow()
    run_due_waves(db, settings, when)
    return send_queued(db, settings, make_backend(settings), clock=lambda: when)


def test_waves_then_sold_out_finishes_and_leaves_the_rest_waiting(
    app: Flask, store: Database
) -> None:
    app.config.update(RESTOCK_AUTO_SEND=True, RESTOCK_WAVE_FACTOR=1.0)
    with store.session() as session:
        waiting(session, "trail-tent", 5, start=10)  # 10 people in all
    restock(store, "TENT-M", 2)
    detect(store, app.config)
    now = utcnow()
    report = send_all(store, app.config, now)
    assert report.sent == 2
    # The pages were rebuilt first: the product page says "in stock" before anyone is told.
    page = app.config["OUTPUT_DIR"] and open_page(app, "trail-tent")
    assert "InStock" in page
    # Stock read again before the next wave: 3 units now.
    restock(store, "TENT-M", 3)
    assert send_all(store, app.config, now + dt.timedelta(minutes=30)).sent == 0  # not due yet
    assert send_all(store, app.config, now + dt.timedelta(minutes=61)).sent == 3
    restock(store, "TENT-M", 0)
    send_all(store, app.config, now + dt.timedelta(minutes=122))
    (campaign,) = campaigns(store)
    assert campaign.status == "finished"
    assert campaign.reason == "sold out again; 5 people not told stay waiting"
    with store.session() as session:
        counts = Counter(session.scalars(select(Signup.status)))
    assert counts == {"notified": 5, "confirmed": 5}
    assert "OutOfStock" in open_page(app, "trail-tent")  # rebuilt again: back soon


def open_page(app: Flask, handle: str) -> str:
    """Return the published product page."""
    from pathlib import Path

    site = Path(app.config["OUTPUT_DIR"])
    (page,) = [p for p in site.rglob(f"products/{handle}/index.html") if "partial" not in str(p)]
    return page.read_text()


def test_one_email_per_person_even_when_several_variants_return(
    app: Flask, store: Database
) -> None:
    app.config.update(RESTOCK_AUTO_SEND=True)
    with store.session() as session:
        person = waiting(session, "trail-tent", 1, sku="TENT-S", start=20)[0]
        add_signup(session, person, "trail-tent", "TENT-M", 1, utcnow())
        add_signup(session, person, "trail-tent", "", 2, utcnow())
    restock(store, "TENT-S", 50)
    restock(store, "TENT-M", 50)
    detect(store, app.config)
    assert send_all(store, app.config).sent == 6
    assert len(read_outbox(app_outbox(app))) == 6
    with store.session() as session:
        statuses = session.scalars(
            select(Signup.status).where(Signup.subscriber_id == person.id)
        ).all()
    assert statuses == ["notified"] * 3
    restock(store, "TENT-S", 0)
    restock(store, "TENT-S", 9)  # flaps back in: the campaign is still running
    assert detect(store, app.config) == []
    assert send_all(store, app.config, utcnow() + dt.timedelta(hours=2)).sent == 0


def app_outbox(app: Flask) -> Any:
    """Return the outbox folder."""
    from pathlib import Path

    return Path(app.config["INSTANCE_PATH"]) / "outbox"


def test_email_links_carry_utm_and_the_message_token(app: Flask, store: Database) -> None:
    app.config.update(RESTOCK_AUTO_SEND=True)
    restock(store, "TENT-M", 50)
    detect(store, app.config)
    send_all(store, app.config)
    message = messages(store)[0]
    email = next(m for m in read_outbox(app_outbox(app)) if message.message_id in m["Message-ID"])
    html = email.get_body(("html",))
    assert html is not None
    import lxml.html

    links = [a.get("href") for a in lxml.html.fromstring(html.get_content()).iter("a")]
    service = ("/unsubscribe/", "/waitlist/")  # the person's own links, on API_URL
    site_links = [h for h in links if not any(p in h for p in service)]
    assert len(site_links) >= 3
    for link in site_links:
        query = parse_qs(urlsplit(link).query)
        assert query["utm_source"] == ["restock"] and query["utm_medium"] == ["email"]
        assert query["utm_campaign"] == ["1"] and query["et"] == [message.message_id]
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/waitlist/rejoin/" in html.get_content()


def test_clicks_count_landings_with_the_email_token_as_well_as_click_events(
    app: Flask, store: Database
) -> None:
    app.config.update(RESTOCK_AUTO_SEND=True)
    restock(store, "TENT-M", 50)
    detect(store, app.config)
    send_all(store, app.config)
    first, second, third = (m.message_id for m in messages(store)[:3])
    # The outbox has no click events: a landing on the site with the email's link counts.
    page = f"{app.config['SITE_URL']}/products/trail-tent/?utm_source=restock&et={first}"
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Firefox/120.0"}
    try:
        beacon = app.test_client().post("/api/events", json={"p": page}, headers=browser)
    finally:
        app.extensions["engine.events"].stop()  # the page-view writer and its connection
    assert beacon.status_code == 202
    campaign_id = campaigns(store)[0].id
    with store.session() as session:
        session.execute(
            update(CampaignMessage)
            .where(CampaignMessage.message_id == second)
            .values(clicked_at=utcnow())
        )
        stats = campaign_stats(session, campaign_id)
    assert (stats.sent, stats.clicked) == (5, 2)
    assert third  # sent, never clicked: not counted


# --- statuses and the CLI --------------------------------------------------------------------


def test_transitions_live_in_one_table() -> None:
    campaign = Campaign(id=7, status="finished")
    with pytest.raises(CampaignError, match="campaign 7 is finished: cannot resume it"):
        transition(campaign, "resume", utcnow())
    assert {to for to in TRANSITIONS.values()} <= {"scheduled", "sending", "paused",
                                                   "finished", "cancelled"}  # fmt: skip


def test_cli_create_preview_send_pause_resume_cancel(
    app: Flask, store: Database, runner: FlaskCliRunner
) -> None:
    restock(store, "TENT-M", 1)
    with store.session() as session:
        session.execute(update(StockTransition).values(handled_at=utcnow()))
    created = runner.invoke(args=["campaigns", "create", "TENT-M"])
    assert created.exit_code == 0, created.output
    assert "campaign 1 created as a draft: 5 waiting, 1 units, first wave 2" in created.output
    preview = runner.invoke(args=["campaigns", "preview", "1"])
    assert "subject: Trail Tent is back in stock" in preview.output
    assert "next wave in 60 min" in preview.output and "<html" in preview.output
    assert messages(store) == []
    illegal = runner.invoke(args=["campaigns", "resume", "1"])
    assert illegal.exit_code == 1
    assert "error: campaign 1 is draft: cannot resume it (allowed: cancel, send)" in illegal.output
    sent = runner.invoke(args=["campaigns", "send", "1"])
    assert sent.exit_code == 0, sent.output
    assert "campaign 1: sending; waves planned 1, queued 2, sent 2" in sent.output
    assert runner.invoke(args=["campaigns", "pause", "1"]).output == "campaign 1: paused\n"
    assert runner.invoke(args=["campaigns", "resume", "1"]).output == "campaign 1: sending\n"
    shown = runner.invoke(args=["campaigns", "show", "1"])
    assert "sent: 2" in shown.output and "converted: 0" in shown.output
    assert "(no orders imported)" in shown.output and "conversion rate: 0.0%" in shown.output
    assert runner.invoke(args=["campaigns", "cancel", "1"]).output == "campaign 1: cancelled\n"
    assert "1  cancelled  trail-tent" in runner.invoke(args=["campaigns", "list"]).output
    again = runner.invoke(args=["campaigns", "cancel", "1"])
    assert "cannot cancel it (allowed: none (it is over))" in again.output
    tested = runner.invoke(args=["campaigns", "test", "1", "--to", "me@shop.test"])
    assert tested.exit_code == 0 and "test copy of campaign 1 sent" in tested.output
    missing = runner.invoke(args=["campaigns", "show", "99"])
    assert missing.exit_code == 1 and "no campaign has id 99" in missing.output


# --- sending through SendGrid ------------------------------------------------------------------


def scheduled(app: Flask, db: Database, people: int, stock: int = 10_000) -> None:
    """Put ``people`` waiting for a restocked product and its campaign scheduled."""
    app.config.update(RESTOCK_AUTO_SEND=True)
    with db.session() as session:
        product(session, "big-pack", ("PACK-1",))
        waiting(session, "big-pack", people, start=1000)
    restock(db, "PACK-1", stock)
    detect(db, app.config)


def test_sendgrid_batches_headers_and_custom_args(app: Flask, db: Database) -> None:
    scheduled(app, db, 1500)
    with sendgrid_server() as api:
        app.config.update(sendgrid_settings(api))
        report = send_all(db, app.config)
    assert report.sent == 1500 and report.batches == 2
    assert api.problems == []
    assert [len(b["personalizations"]) for b in api.requests] == [1000, 500]
    first = api.requests[0]["personalizations"][0]
    (message,) = [
        m for m in messages(db) if m.message_id == first["custom_args"]["engine_message_id"]
    ]
    assert first["custom_args"] == {"campaign": "1", "kind": "restock",
                                    "engine_message_id": message.message_id}  # fmt: skip
    assert first["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["headers"]["List-Unsubscribe"].startswith("<https://shop.test/unsubscribe/")
    assert first["substitutions"]["-engine_token-"] == message.message_id
    assert Counter(api.sent_message_ids()).most_common(1)[0][1] == 1


def test_sendgrid_429_500_and_timeout(app: Flask, db: Database) -> None:
    scheduled(app, db, 30)
    app.config.update(CAMPAIGN_BATCH_SIZE=10)
    with sendgrid_server() as api:
        app.config.update(sendgrid_settings(api, SENDGRID_TIMEOUT_SECONDS=0.3))
        api.script = [
            Reply(429, {"errors": [{"message": "slow down"}]}, {"X-RateLimit-Reset": "0"}),
            Reply(202),  # the retry of batch 1
            Reply(500), Reply(202),  # batch 2: a retried server error
            Reply(202, delay=1.0),  # batch 3: times out after SendGrid took it
        ]  # fmt: skip
        report = send_all(db, app.config)
        assert (report.sent, report.unknown) == (20, 10)
        # No event yet: nothing of unknown fate is resent before the window.
        assert reconcile(db, app.config, utcnow()).resent == 0
        later = utcnow() + dt.timedelta(seconds=61)
        # The events show SendGrid had them: settled, not resent.
        with db.session() as session:
            events = processed_events(api.requests[-1])
            apply_events(session, app.config, events, utcnow())
        assert reconcile(db, app.config, later).resent == 0
        assert send_queued(db, app.config, make_backend(app.config)).claimed == 0
    assert Counter(m.status for m in messages(db)) == {"sent": 30}
    assert len(api.requests) == 5 and api.problems == []


def test_unknown_without_events_is_resent_after_the_window(app: Flask, db: Database) -> None:
    scheduled(app, db, 5)
    with sendgrid_server() as api:
        app.config.update(sendgrid_settings(api, SENDGRID_TIMEOUT_SECONDS=0.2))
        api.script = [Reply(502)] * 4  # refused each time: it never left (deferred)
        assert send_all(db, app.config).deferred == 5
        with db.session() as session:
            session.execute(update(CampaignMessage).values(status="unknown",
                                                            next_attempt_at=utcnow()))  # fmt: skip
        assert reconcile(db, app.config, utcnow()).resent == 5
        assert send_queued(db, app.config, make_backend(app.config)).sent == 5
    assert Counter(m.status for m in messages(db)) == {"sent": 5}


def test_killed_sender_is_reconciled_from_processed_events(app: Flask, db: Database) -> None:
    scheduled(app, db, 40)
    app.config.update(CAMPAIGN_BATCH_SIZE=20)
    with sendgrid_server() as api:
        app.config.update(sendgrid_settings(api))
        run_due_waves(db, app.config, utcnow())
        # A sender claims two batches, SendGrid accepts the first, then the process dies.
        from engine.campaigns.sending import claim

        backend = make_backend(app.config)
        with db.session() as session:
            claim(session, 20, -1, utcnow(), None)  # its lease has run out since
        with db.session() as session:
            claim(session, 20, -1, utcnow(), None)  # its lease has run out since
        in_flight = messages(db)
        assert Counter(m.status for m in in_flight) == {"sending": 40}
        from engine.mail import Message, Recipient

        backend.send_batch(
            Message("x", "<p>x</p>", "x", "Shop <hello@shop.test>"),
            [Recipient(f"person{1000 + n}@example.org", message_id=m.message_id)
             for n, m in enumerate(in_flight[:20])],
        )  # fmt: skip
        # Its events arrive; the lease runs out; reconciliation settles before resending.
        now = utcnow()
        assert reconcile(db, app.config, now).expired == 40
        with db.session() as session:
            apply_events(session, app.config, processed_events(api.requests[0]), now)
        later = now + dt.timedelta(seconds=61)
        outcome = reconcile(db, app.config, later)
        assert (outcome.confirmed, outcome.resent) == (0, 20)  # the events settled 20 already
        assert send_queued(db, app.config, backend, clock=lambda: later).sent == 20
    counts = Counter(api.sent_message_ids())
    assert len(counts) == 40 and max(counts.values()) == 1
    with db.session() as session:
        assert Counter(session.scalars(select(Signup.status))) == {"notified": 40}


def test_two_workers_send_one_campaign_without_overlap(
    app: Flask, db: Database, config: Any
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("concurrent claiming with SKIP LOCKED is PostgreSQL's")
    from engine.scheduler import JOBS, run_job

    # The scheduled job itself, as every `engine worker` runs it: no lease keeps one out.
    (job,) = [job for job in JOBS if job.name == "campaign-send"]
    scheduled(app, db, 3000)
    app.config.update(CAMPAIGN_BATCH_SIZE=100)
    run_due_waves(db, app.config, utcnow())
    with sendgrid_server(keep_bodies=False) as api:
        settings = {**app.config, **sendgrid_settings(api)}
        reports: list[Any] = []

        def worker(owner: str) -> None:
            own = Database(config["DATABASE_URL"])  # a second process's own connections
            try:
                run = run_job(own, settings, job, owner)
                assert run.outcome == "done", run
                reports.append(run.result)
            finally:
                own.dispose()

        threads = [threading.Thread(target=worker, args=(f"worker-{n}",)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(r.sent for r in reports) == 3000
    assert all(r.sent > 0 for r in reports)  # both did work
    counts = Counter(api.sent_message_ids())
    assert len(counts) == 3000 and max(counts.values()) == 1


def test_permanent_failures_are_marked_and_too_many_pause(app: Flask, db: Database) -> None:
    scheduled(app, db, 30)
    app.config.update(CAMPAIGN_BATCH_SIZE=10, CAMPAIGN_MAX_FAILURES=10,
                      CAMPAIGN_MAX_FAILURE_RATE=0.3)  # fmt: skip
    error = {"errors": [{"message": "The from address does not match a verified Sender Identity.",
                         "field": "from"}]}  # fmt: skip
    with sendgrid_server() as api:
        app.config.update(sendgrid_settings(api))
        api.script = [Reply(202), Reply(400, error)]
        send_all(db, app.config)
    (campaign,) = campaigns(db)
    assert campaign.status == "paused"
    assert campaign.reason.startswith("10 of 20 emails failed for good (last: SendGrid refused")
    assert Counter(m.status for m in messages(db)) == {"sent": 10, "failed": 10, "queued": 10}


def test_suppressed_and_departed_people_are_never_emailed(app: Flask, db: Database) -> None:
    scheduled(app, db, 4)
    run_due_waves(db, app.config, utcnow())
    with db.session() as session:
        suppress(session, "test-secret", "person1000@example.org", "spamreport", utcnow())
        session.execute(update(Signup).where(Signup.id == 2).values(status="left"))
    report = send_queued(db, app.config, make_backend(app.config))
    assert (report.sent, report.skipped) == (2, 2)
    reasons = sorted(m.last_error for m in messages(db) if m.status == "skipped")
    assert reasons == ["the address is suppressed", "the person left the waitlist"]


def test_rejoin_link_puts_a_notified_person_back(app: Flask, store: Database) -> None:
    app.config.update(RESTOCK_AUTO_SEND=True)
    restock(store, "TENT-M", 50)
    detect(store, app.config)
    send_all(store, app.config)
    from engine.campaigns import rejoin_url
    from engine.models import Subscriber

    message = messages(store)[0]
    with store.session() as session:
        person = session.get(Subscriber, message.subscriber_id)
        assert person is not None
        link = rejoin_url(app.config, person, message.message_id)
    client = app.test_client()
    path = urlsplit(link).path
    page = client.get(path)
    assert page.status_code == 200 and b"Put me back on the waitlist" in page.data
    with store.session() as session:
        assert session.get(Signup, message.signup_ids[0]).status == "notified"  # type: ignore[union-attr]
    done = client.post(path)
    assert b"You are back on the waitlist" in done.data
    with store.session() as session:
        assert session.get(Signup, message.signup_ids[0]).status == "confirmed"  # type: ignore[union-attr]
    assert client.get(path[:-3] + "xyz").status_code == 404


def test_scheduler_runs_the_campaign_jobs() -> None:
    from engine.scheduler import JOBS

    names = {job.name for job in JOBS}
    assert {"restock-campaigns", "campaign-waves", "campaign-reconcile"} <= names
