"""The durable mail queue: idempotent enqueue, claimed drains, retries, leases, concurrency."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.db import Database
from engine.mail import (
    DeliveryResult,
    DeliveryStatus,
    MailBackend,
    MailError,
    Message,
    Recipient,
    read_outbox,
)
from engine.mail.base import result
from engine.mail.outbox import OutboxBackend
from engine.mailqueue import (
    claim,
    confirm_sent,
    drain,
    enqueue,
    forget_address,
    queue,
    queue_backlog,
    retry_failed,
)
from engine.models import MailMessage

# A moment after anything the tests enqueue with the real clock.
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)


class ScriptedBackend(MailBackend):
    """A backend whose answers the test decides; it records every copy it is handed."""

    name = "scripted"

    def __init__(self, answers: Sequence[DeliveryStatus] = (), delay: float = 0.0) -> None:
        super().__init__({})
        self.answers = list(answers)
        self.delay = delay
        self.sent: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[DeliveryResult]:
        time.sleep(self.delay)
        outcomes = []
        with self.lock:
            self.calls += 1
            for recipient in recipients:
                status = self.answers.pop(0) if self.answers else DeliveryStatus.ACCEPTED
                if status is DeliveryStatus.ACCEPTED:
                    self.sent.append(recipient.message_id)
                outcomes.append(result(recipient, status, f"scripted {status}", "prov-1"))
        return outcomes


def settings_of(app: Flask, **overrides: Any) -> dict[str, Any]:
    """Return the app's settings with overrides."""
    return {**app.config, **overrides}


def add(session: Session, key: str, to: str = "ann@example.org", **extra: Any) -> MailMessage:
    """Enqueue a small email."""
    values: dict[str, Any] = {
        "idempotency_key": key,
        "to": to,
        "subject": "Confirm your waitlist signup",
        "html": "<p>Confirm: <a href='-confirm-'>here</a></p>",
        "text": "Confirm: -confirm-",
        "substitutions": {"-confirm-": f"https://api.shop.test/waitlist/confirm/{key}"},
        "headers": {"List-Unsubscribe": "<https://api.shop.test/unsubscribe/t>"},
        "custom_args": {"kind": "confirm"},
    }
    values.update(extra)
    return enqueue(session, **values)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """Return a stored timestamp as aware UTC (SQLite hands some back naive)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def rows(db: Database) -> list[MailMessage]:
    """Return every queued row, by id."""
    with db.session() as session:
        return list(session.scalars(select(MailMessage).order_by(MailMessage.id)))


def test_enqueue_twice_with_the_same_key_is_a_no_op(db: Database) -> None:
    with db.session() as session:
        first = add(session, "confirm:1")
    with db.session() as session:
        again = add(session, "confirm:1", subject="A different subject")
    assert again.message_id == first.message_id
    (row,) = rows(db)
    assert row.subject == "Confirm your waitlist signup" and row.status == "queued"


def test_queue_on_a_connection_stores_what_it_was_given(db: Database) -> None:
    later = dt.datetime(2026, 3, 2, 14, 30, 5, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with db.engine.begin() as connection:
        queue(
            connection,
            idempotency_key="confirm:7",
            to="Ann@Example.com",
            subject="Confirm -name-",
            html="<p>-confirm_url-</p>",
            text="-confirm_url-",
            headers={"List-Unsubscribe": "<https://api.shop.test/unsubscribe/t>"},
            substitutions={"-confirm_url-": "https://api.shop.test/waitlist/confirm/t"},
            custom_args={"kind": "waitlist-confirm"},
            categories=("waitlist-confirm",),
            not_before=later,
        )
        # The same key again changes nothing.
        queue(connection, idempotency_key="confirm:7", to="b@example.com", subject="x",
              html="<p>x</p>", text="x")  # fmt: skip
    (row,) = rows(db)
    assert (row.to_email, row.subject, row.status, row.attempts) == (
        "Ann@Example.com", "Confirm -name-", "queued", 0,
    )  # fmt: skip
    assert row.next_attempt_at == later and row.next_attempt_at.tzinfo is not None
    assert row.headers == {"List-Unsubscribe": "<https://api.shop.test/unsubscribe/t>"}
    assert row.substitutions == {"-confirm_url-": "https://api.shop.test/waitlist/confirm/t"}
    assert (row.custom_args, row.categories) == ({"kind": "waitlist-confirm"}, ["waitlist-confirm"])
    # Stored as the instant it names: not due a second before, due a second after.
    with db.session() as session:
        assert claim(session, 10, 60, later - dt.timedelta(seconds=1)) is None
    with db.session() as session:
        assert claim(session, 10, 60, later + dt.timedelta(seconds=1)) is not None


def test_enqueue_refuses_an_email_that_could_never_be_sent(db: Database) -> None:
    with db.session() as session:
        with pytest.raises(MailError, match="not a valid email address"):
            add(session, "k", to="ann@")
        with pytest.raises(MailError, match="set by the mail backend"):
            add(session, "k2", headers={"From": "x@y.z"})
    assert rows(db) == []


def test_drain_sends_each_message_once_through_the_outbox(app: Flask, db: Database) -> None:
    with db.session() as session:
        for number in range(5):
            add(session, f"confirm:{number}", to=f"p{number}@example.org")
    settings = settings_of(app, MAIL_QUEUE_BATCH_SIZE=2)
    backend = OutboxBackend(settings)
    report = drain(db, settings, backend)
    assert (report.claimed, report.sent, report.failed) == (5, 5, 0)
    assert drain(db, settings, backend).claimed == 0
    messages = read_outbox(Path(app.config["INSTANCE_PATH"]) / "outbox")
    assert sorted(m["To"] for m in messages) == [f"p{n}@example.org" for n in range(5)]
    sample = next(m for m in messages if m["To"] == "p3@example.org")
    assert sample["From"] == app.config["MAIL_FROM"]
    body = sample.get_body(("plain",))
    assert body is not None
    assert "https://api.shop.test/waitlist/confirm/confirm:3" in body.get_content()
    for row in rows(db):
        assert row.status == "sent" and row.attempts == 1 and row.sent_at is not None
        assert row.provider_message_id == f"{row.message_id}.eml"
        assert row.claim_token is None


def test_deferred_message_is_retried_with_backoff_then_given_up(app: Flask, db: Database) -> None:
    with db.session() as session:
        add(session, "k")
    settings = settings_of(
        app, MAIL_QUEUE_MAX_ATTEMPTS=3, MAIL_QUEUE_BACKOFF_SECONDS=60,
        MAIL_QUEUE_BACKOFF_MAX_SECONDS=100,
    )  # fmt: skip
    backend = ScriptedBackend([DeliveryStatus.DEFERRED] * 3)
    report = drain(db, settings, backend, clock=lambda: T0)
    assert report.deferred == 1
    (row,) = rows(db)
    assert row.status == "queued" and row.attempts == 1
    assert utc(row.next_attempt_at) == T0 + dt.timedelta(seconds=60)
    assert row.last_error == "scripted deferred"
    # Not due yet: nothing happens.
    assert drain(db, settings, backend, clock=lambda: T0 + dt.timedelta(seconds=59)).claimed == 0
    later = T0 + dt.timedelta(seconds=60)
    assert drain(db, settings, backend, clock=lambda: later).deferred == 1
    (row,) = rows(db)
    assert utc(row.next_attempt_at) == later + dt.timedelta(seconds=100)  # doubled, capped
    last = later + dt.timedelta(seconds=100)
    assert drain(db, settings, backend, clock=lambda: last).failed == 1
    (row,) = rows(db)
    assert row.status == "failed" and row.attempts == 3
    assert row.last_error == "gave up after 3 attempts: scripted deferred"
    assert backend.sent == []
    # An operator can put it back once the cause is fixed.
    with db.session() as session:
        assert retry_failed(session) == 1
    assert drain(db, settings, backend).sent == 1


def test_rejected_message_fails_at_once(app: Flask, db: Database) -> None:
    with db.session() as session:
        add(session, "k")
    report = drain(db, settings_of(app), ScriptedBackend([DeliveryStatus.REJECTED]))
    assert report.failed == 1
    (row,) = rows(db)
    assert row.status == "failed" and row.attempts == 1


def test_unknown_fate_waits_for_reconciliation_before_resending(app: Flask, db: Database) -> None:
    with db.session() as session:
        add(session, "a", to="a@example.org")
        add(session, "b", to="b@example.org")
    settings = settings_of(app, RECONCILE_AFTER_SECONDS=60)
    backend = ScriptedBackend([DeliveryStatus.UNKNOWN, DeliveryStatus.UNKNOWN])
    assert drain(db, settings, backend, clock=lambda: T0).unknown == 2
    first, second = rows(db)
    assert first.status == second.status == "unknown"
    # The provider's events say the first one arrived: it is never sent again.
    with db.session() as session:
        assert confirm_sent(session, [first.message_id], provider_id="sg-x") == 1
    assert drain(db, settings, backend, clock=lambda: T0 + dt.timedelta(seconds=30)).claimed == 0
    report = drain(db, settings, backend, clock=lambda: T0 + dt.timedelta(seconds=61))
    assert (report.claimed, report.sent) == (1, 1)
    assert backend.sent == [second.message_id]
    first, second = rows(db)
    assert (first.status, first.provider_message_id) == ("sent", "sg-x")
    assert second.status == "sent" and second.attempts == 2


def test_a_stale_lease_from_a_killed_process_is_recovered(app: Flask, db: Database) -> None:
    with db.session() as session:
        add(session, "k")
    settings = settings_of(app, MAIL_QUEUE_LEASE_SECONDS=300)
    # A drain claims the row and dies before sending anything.
    with db.session() as session:
        assert claim(session, 10, 300, T0) is not None
    (row,) = rows(db)
    assert row.status == "sending" and utc(row.leased_until) == T0 + dt.timedelta(seconds=300)
    backend = ScriptedBackend()
    assert drain(db, settings, backend, clock=lambda: T0 + dt.timedelta(seconds=299)).claimed == 0
    report = drain(db, settings, backend, clock=lambda: T0 + dt.timedelta(seconds=301))
    assert report.sent == 1 and backend.sent == [row.message_id]
    (row,) = rows(db)
    assert row.status == "sent" and row.attempts == 2


def test_a_backend_crash_never_loses_the_message(app: Flask, db: Database) -> None:
    class Broken(ScriptedBackend):
        def send_batch(
            self, message: Message, recipients: Sequence[Recipient]
        ) -> list[DeliveryResult]:
            raise RuntimeError("boom")

    with db.session() as session:
        add(session, "k")
    report = drain(db, settings_of(app), Broken())
    assert report.unknown == 1
    (row,) = rows(db)
    assert row.status == "unknown" and "RuntimeError('boom')" in row.last_error


def test_identical_content_goes_out_as_one_batch(app: Flask, db: Database) -> None:
    with db.session() as session:
        for number in range(3):
            add(session, f"notice:{number}", to=f"p{number}@example.org")
    backend = ScriptedBackend()
    assert drain(db, settings_of(app), backend).sent == 3
    assert backend.calls == 1


def test_concurrent_drains_never_send_a_message_twice(app: Flask, db: Database) -> None:
    with db.session() as session:
        for number in range(120):
            add(session, f"k{number}", to=f"p{number}@example.org", subject=f"S {number}")
    settings = settings_of(app, MAIL_QUEUE_BATCH_SIZE=7)
    backend = ScriptedBackend(delay=0.002)
    reports = []

    def worker() -> None:
        reports.append(drain(db, settings, backend))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(backend.sent)
    assert len(counts) == 120 and max(counts.values()) == 1
    assert sum(r.sent for r in reports) == 120
    with db.session() as session:
        statuses = dict(
            session.execute(
                select(MailMessage.status, func.count()).group_by(MailMessage.status)
            ).all()
        )
    assert statuses == {"sent": 120}


def test_queue_backlog_for_health(app: Flask, db: Database) -> None:
    with db.session() as session:
        add(session, "due", to="a@example.org", not_before=T0 - dt.timedelta(minutes=5))
        add(session, "later", to="b@example.org", not_before=T0 + dt.timedelta(hours=1))
        add(session, "gone", to="c@example.org", not_before=T0 - dt.timedelta(hours=2))
    with db.session() as session:
        gone = session.scalars(select(MailMessage).where(MailMessage.idempotency_key == "gone"))
        gone.one().status = "failed"
    with db.session() as session:
        backlog = queue_backlog(session, now=T0)
    assert backlog == {
        "queued": 2, "sending": 0, "unknown": 0, "failed": 1, "sent": 0,
        "backlog": 2, "due": 1, "oldest_due_seconds": 300.0,
    }  # fmt: skip


def test_forget_address_removes_its_messages(db: Database) -> None:
    with db.session() as session:
        add(session, "a", to="Ann@Example.org")
        add(session, "b", to="bob@example.org")
    with db.session() as session:
        assert forget_address(session, "ann@example.org") == 1
    assert [row.to_email for row in rows(db)] == ["bob@example.org"]


def test_enqueue_stays_in_the_callers_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        add(session, "k")
        raise RuntimeError("the request failed after enqueueing")
    assert rows(db) == []


def test_racing_enqueues_of_one_key_store_one_row(db: Database) -> None:
    first_inserted = threading.Event()
    message_ids: list[str] = []

    def first() -> None:
        with db.session() as session:
            message_ids.append(add(session, "confirm:race").message_id)
            first_inserted.set()
            time.sleep(0.3)  # hold the transaction open while the second one arrives

    def second() -> None:
        first_inserted.wait()
        with db.session() as session:
            message_ids.append(add(session, "confirm:race").message_id)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(message_ids) == 2 and message_ids[0] == message_ids[1]
    assert len(rows(db)) == 1
