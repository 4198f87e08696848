"""POST /hooks/sendgrid: ECDSA signatures, de-duplication, events applied to emails and people."""

from __future__ import annotations

import json
from typing import Any

import pytest
from campaign_data import product, waiting
from flask import Flask
from flask.testing import FlaskClient
from sendgrid_server import EventSigner
from sqlalchemy import func, select, update

from engine.campaigns import detect_restocks, run_due_waves, verify_signature
from engine.catalog import set_stock, variant_by_sku
from engine.db import Database, utcnow
from engine.mailqueue import enqueue
from engine.models import CampaignMessage, MailMessage, ProviderEvent, Signup, StockTransition
from engine.pages import make_environment
from engine.waitlist import is_suppressed


@pytest.fixture
def signer(app: Flask) -> EventSigner:
    """A real P-256 key pair; its public half is the app's SENDGRID_WEBHOOK_PUBLIC_KEY."""
    key = EventSigner()
    app.config["SENDGRID_WEBHOOK_PUBLIC_KEY"] = key.public_key
    return key


@pytest.fixture
def emails(app: Flask, db: Database) -> list[CampaignMessage]:
    """Four people's restock emails, planned and in flight."""
    app.config["RESTOCK_AUTO_SEND"] = True
    with db.session() as session:
        product(session, "trail-tent", ("TENT-1",))
        waiting(session, "trail-tent", 4)
        session.execute(update(StockTransition).values(handled_at=utcnow()))
    with db.session() as session:
        set_stock(session, variant_by_sku(session, "TENT-1"), 50, source="cli")
    with db.session() as session:
        detect_restocks(session, app.config, make_environment(app.config), utcnow())
    run_due_waves(db, app.config, utcnow())
    with db.session() as session:
        session.execute(update(CampaignMessage).values(status="unknown"))
        return list(session.scalars(select(CampaignMessage).order_by(CampaignMessage.id)))


def event(kind: str, message: CampaignMessage | None, number: int, **extra: Any) -> dict[str, Any]:
    """Return one SendGrid event for a person's email."""
    values = {
        "email": f"person{number}@example.org",
        "timestamp": 1767225600,
        "event": kind,
        "sg_event_id": f"ev-{kind}-{number}",
        "sg_message_id": "abc.filter0001",
    }
    if message is not None:
        values |= {"engine_message_id": message.message_id, "campaign": "1"}
    return values | extra


def post(client: FlaskClient, signer: EventSigner, events: list[dict[str, Any]],
         **headers: str) -> Any:  # fmt: skip
    """Post a signed batch of events."""
    body = json.dumps(events).encode()
    return client.post(
        "/hooks/sendgrid", data=body, content_type="application/json",
        headers={**signer.headers(body), **headers},
    )  # fmt: skip


def statuses(db: Database) -> list[tuple[str, str]]:
    """Return each email's (status, delivery)."""
    with db.session() as session:
        rows = session.execute(
            select(CampaignMessage.status, CampaignMessage.delivery).order_by(CampaignMessage.id)
        )
        return [(status, delivery) for status, delivery in rows]


def test_signature_over_timestamp_and_raw_body(signer: EventSigner) -> None:
    body = b'[{"event":"processed"}]'
    headers = signer.headers(body, "1767225600")
    signature = headers["X-Twilio-Email-Event-Webhook-Signature"]
    assert verify_signature(signer.public_key, body, signature, "1767225600")
    assert not verify_signature(signer.public_key, body + b" ", signature, "1767225600")
    assert not verify_signature(signer.public_key, body, signature, "1767225601")
    assert not verify_signature(EventSigner().public_key, body, signature, "1767225600")
    assert not verify_signature(signer.public_key, body, "not base64!", "1767225600")
    assert not verify_signature("not a key", body, signature, "1767225600")


def test_bad_or_missing_signature_is_401_and_changes_nothing(
    client: FlaskClient, signer: EventSigner, db: Database, emails: list[CampaignMessage]
) -> None:
    events = [event("processed", emails[0], 0)]
    body = json.dumps(events).encode()
    forged = EventSigner().headers(body)
    assert client.post("/hooks/sendgrid", data=body, headers=forged).status_code == 401
    assert client.post("/hooks/sendgrid", data=body).status_code == 401
    tampered = signer.headers(body)
    answer = client.post("/hooks/sendgrid", data=body.replace(b"processed", b"delivered"),
                         headers=tampered)  # fmt: skip
    assert answer.status_code == 401
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ProviderEvent)) == 0
    assert statuses(db)[0] == ("unknown", "")


def test_unconfigured_key_answers_503(app: Flask, client: FlaskClient) -> None:
    app.config["SENDGRID_WEBHOOK_PUBLIC_KEY"] = ""
    assert client.post("/hooks/sendgrid", data=b"[]").status_code == 503


def test_events_apply_once_and_settle_unknown_emails(
    client: FlaskClient, signer: EventSigner, db: Database, emails: list[CampaignMessage]
) -> None:
    batch = [
        event("processed", emails[0], 0),
        event("delivered", emails[0], 0),
        event("open", emails[0], 0),
        event("click", emails[0], 0, url="https://shop.test/products/trail-tent/"),
        event("processed", emails[1], 1),
    ]
    answer = post(client, signer, batch)
    assert answer.status_code == 200
    assert answer.get_json() == {"received": 5, "duplicates": 0, "suppressed": 0}
    again = post(client, signer, batch)  # SendGrid retries a whole batch
    assert again.get_json()["duplicates"] == 5
    assert statuses(db)[:3] == [("sent", "delivered"), ("sent", ""), ("unknown", "")]
    with db.session() as session:
        first = session.get(CampaignMessage, emails[0].id)
        assert first is not None and first.opened_at and first.clicked_at
        notified = session.scalar(
            select(func.count()).select_from(Signup).where(Signup.status == "notified")
        )
    assert notified == 2


def test_spam_reports_hard_bounces_and_unsubscribes_suppress(
    app: Flask, client: FlaskClient, signer: EventSigner, db: Database,
    emails: list[CampaignMessage],
) -> None:  # fmt: skip
    post(client, signer, [
        event("spamreport", emails[0], 0),
        event("bounce", emails[1], 1, type="bounce", bounce_classification="Invalid Address"),
        event("group_unsubscribe", emails[2], 2, asm_group_id=1),
        event("bounce", emails[3], 3, type="blocked", bounce_classification="Reputation"),
    ])  # fmt: skip
    with db.session() as session:
        suppressed = [
            is_suppressed(session, "test-secret", f"person{n}@example.org") for n in range(4)
        ]
        signups = session.scalars(select(Signup.status).order_by(Signup.id)).all()
    assert suppressed == [True, True, True, False]  # a blocked bounce is not their fault
    assert signups == ["notified"] * 4  # every event proves the email left
    assert [d for _s, d in statuses(db)] == ["", "bounced", "", "blocked"]


def test_content_drops_are_recorded_not_held_against_the_person(
    client: FlaskClient, signer: EventSigner, db: Database, emails: list[CampaignMessage]
) -> None:
    post(client, signer, [event("dropped", emails[0], 0, reason="Spam Content")])
    with db.session() as session:
        assert not is_suppressed(session, "test-secret", "person0@example.org")
    assert statuses(db)[0] == ("sent", "dropped")


def test_processed_events_confirm_mail_queue_messages(
    client: FlaskClient, signer: EventSigner, db: Database
) -> None:
    with db.session() as session:
        row = enqueue(session, idempotency_key="k1", to="ann@example.org", subject="Hi",
                      html="<p>Hi</p>", text="Hi")  # fmt: skip
        row.status = "unknown"
        message_id = row.message_id
    queued = {"event": "processed", "sg_event_id": "q1", "timestamp": 1,
              "email": "ann@example.org", "engine_message_id": message_id}  # fmt: skip
    post(client, signer, [queued])
    with db.session() as session:
        status = session.scalar(select(MailMessage.status))
    assert status == "sent"


def test_unknown_addresses_in_events_are_ignored_safely(
    client: FlaskClient, signer: EventSigner
) -> None:
    answer = post(client, signer, [event("spamreport", None, 9, email="not an address")])
    assert answer.status_code == 200
    assert (
        client.post("/hooks/sendgrid", data=b"{}", headers=signer.headers(b"{}")).status_code == 400
    )
