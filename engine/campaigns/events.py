"""SendGrid's Event Webhook: signature check, de-duplication, events applied to emails and
people."""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from engine.campaigns.sending import mark_sent
from engine.mail import MESSAGE_ID_ARG
from engine.mailqueue import confirm_sent
from engine.models import CampaignMessage, ProviderEvent, Subscriber
from engine.waitlist import SCOPE_ALL, InvalidEmail, normalize_email, suppress, unsubscribe

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

#: Bounce classifications that say nothing against the address (the sender or the content
#: was refused, or the receiver was busy): recorded, never a suppression.
NOT_THE_RECIPIENTS_FAULT = frozenset(
    {"blocked", "content", "reputation", "frequency/volume", "technical", "unclassified"}
)
#: SendGrid drop reasons that mean its own suppression list holds the address.
SUPPRESSING_DROPS = ("bounced address", "spam reporting address", "unsubscribed address")
#: Events that carry a person's wish never to be mailed again, with the suppression reason.
SUPPRESSING_EVENTS = {
    "spamreport": "spamreport",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}


def verify_signature(public_key: str, payload: bytes, signature: str, timestamp: str) -> bool:
    """Return True when SendGrid's ECDSA signature over timestamp + body is valid for the key."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    if not (public_key and signature and timestamp):
        return False
    try:
        verifier = EventWebhook(public_key.strip())
        body = payload.decode("utf-8")
        return bool(verifier.verify_signature(body, signature, timestamp))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        # A malformed key, signature or body is as good as no signature.
        return False


@dataclass
class EventReport:
    """What one delivery of events did."""

    received: int = 0
    duplicates: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    ignored: int = 0


def event_id(event: Mapping[str, Any]) -> str:
    """Return an event's ``sg_event_id``, or a digest of the event when it has none."""
    value = event.get("sg_event_id")
    if isinstance(value, str) and 0 < len(value) <= 100:
        return value
    digest = hashlib.sha256(json.dumps(event, sort_keys=True, default=str).encode()).hexdigest()
    return "sha256:" + digest[:64]


def _occurred(event: Mapping[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(int(event["timestamp"]), dt.UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None


def _new_events(
    session: Session, events: Sequence[Mapping[str, Any]], now: dt.datetime
) -> list[Mapping[str, Any]]:
    """Record the events' ids; return the events not seen before (one insert, race-safe)."""
    rows: dict[str, dict[str, Any]] = {}
    by_id: dict[str, Mapping[str, Any]] = {}
    for event in events:
        key = event_id(event)
        if key in rows:
            continue
        by_id[key] = event
        rows[key] = {
            "event_id": key,
            "event": str(event.get("event") or "")[:30],
            "message_id": str(event.get(MESSAGE_ID_ARG) or "")[:128],
            "occurred_at": _occurred(event),
            "received_at": now,
        }
    if not rows:
        return []
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = cast(Table, ProviderEvent.__table__)
    inserted: set[str] = set()
    values = list(rows.values())
    for start in range(0, len(values), 2000):
        statement = (
            insert(table)
            .values(values[start : start + 2000])
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(table.c.event_id)
        )
        inserted.update(session.scalars(statement))
    return [by_id[key] for key in rows if key in inserted]


def apply_events(
    session: Session,
    settings: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: dt.datetime,
) -> EventReport:
    """Apply a batch of SendGrid events once each (by ``sg_event_id``) to emails and people."""
    report = EventReport(received=len(events))
    fresh = _new_events(session, events, now)
    report.duplicates = len(events) - len(fresh)
    ids = sorted({str(e.get(MESSAGE_ID_ARG)) for e in fresh if e.get(MESSAGE_ID_ARG)})
    messages: dict[str, CampaignMessage] = {}
    for start in range(0, len(ids), 2000):
        for message in session.scalars(
            select(CampaignMessage).where(CampaignMessage.message_id.in_(ids[start : start + 2000]))
        ):
            messages[message.message_id] = message
    # Any event about an email proves SendGrid took it: settle what was of unknown fate.
    mark_sent(session, [m for m in ids if m in messages], now)
    queue_ids = [m for m in ids if m not in messages]
    if queue_ids:
        confirm_sent(session, queue_ids)
    for event in fresh:
        name = str(event.get("event") or "")
        known = messages.get(str(event.get(MESSAGE_ID_ARG) or ""))
        report.applied[name] = report.applied.get(name, 0) + 1
        if not _apply(session, settings, event, name, known, now, report):
            report.ignored += 1
    return report


def _apply(
    session: Session,
    settings: Mapping[str, Any],
    event: Mapping[str, Any],
    name: str,
    message: CampaignMessage | None,
    now: dt.datetime,
    report: EventReport,
) -> bool:
    """Apply one event; return False when it names nothing known."""
    at = _occurred(event) or now
    values: dict[str, Any] = {}
    reason = ""
    if name == "processed":
        pass  # settled above
    elif name == "delivered":
        values = {"delivery": "delivered", "delivered_at": at}
    elif name == "deferred":
        if message is not None and message.delivery == "":
            values = {"delivery": "deferred"}
    elif name == "open":
        if message is not None and message.opened_at is None:
            values = {"opened_at": at}
    elif name == "click":
        if message is not None and message.clicked_at is None:
            values = {"clicked_at": at}
    elif name == "bounce":
        kind = str(event.get("type") or "bounce").lower()
        classification = str(event.get("bounce_classification") or "").lower()
        if kind == "blocked" or classification in NOT_THE_RECIPIENTS_FAULT:
            values = {"delivery": "blocked"}
        else:
            values = {"delivery": "bounced"}
            reason = "bounce"
    elif name == "dropped":
        values = {"delivery": "dropped"}
        why = str(event.get("reason") or "").lower()
        if any(why.startswith(drop) for drop in SUPPRESSING_DROPS):
            reason = "bounce" if why.startswith("bounced") else (
                "spamreport" if why.startswith("spam") else "unsubscribed"
            )  # fmt: skip
    elif name in SUPPRESSING_EVENTS:
        reason = SUPPRESSING_EVENTS[name]
    else:
        return True  # group_resubscribe and newer events: recorded, nothing to change
    if message is not None and values:
        session.execute(
            update(CampaignMessage).where(CampaignMessage.id == message.id).values(**values)
        )
        for key, value in values.items():
            setattr(message, key, value)
    if reason and _suppress(session, settings, event, message, reason, now):
        report.suppressed += 1
    return message is not None or bool(reason)


def _suppress(
    session: Session,
    settings: Mapping[str, Any],
    event: Mapping[str, Any],
    message: CampaignMessage | None,
    reason: str,
    now: dt.datetime,
) -> bool:
    """Suppress the event's person and end their waiting; return False when nobody is named."""
    secret = str(settings["SECRET_KEY"])
    subscriber = None
    if message is not None and message.subscriber_id is not None:
        subscriber = session.get(Subscriber, message.subscriber_id)
    if subscriber is not None:
        address = subscriber.address
    else:
        try:
            address = normalize_email(str(event.get("email") or "")).address
        except InvalidEmail:
            return False
        subscriber = session.scalar(select(Subscriber).where(Subscriber.address == address))
    # The first reason is kept: suppress() is a no-op for an address already on the list.
    suppress(session, secret, address, reason, now)
    if subscriber is not None:
        unsubscribe(session, secret, subscriber, SCOPE_ALL, now)
    return True
