"""The durable mail queue: web requests enqueue, the scheduler drains through a backend.

States: ``queued`` → ``sending`` (claimed, with a lease) → ``sent`` | ``failed`` |
``queued`` again (deferred, with backoff) | ``unknown`` (the backend cannot tell whether the
provider took it; resent after ``RECONCILE_AFTER_SECONDS`` unless ``confirm_sent`` records
the provider's word first). A ``sending`` row whose lease ran out (the process died) is
claimed again. See the README for the exact guarantees.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from engine.db import Database, DriverStatement, dialect_insert, utcnow
from engine.mail.base import (
    DeliveryResult,
    DeliveryStatus,
    MailBackend,
    MailError,
    Message,
    Recipient,
    is_address,
    recipient_problem,
    result,
    validate_message,
)
from engine.models import MailMessage

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


@dataclass
class DrainReport:
    """What one drain did."""

    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    unknown: int = 0
    seconds: float = 0.0


def enqueue(
    session: Session,
    *,
    idempotency_key: str,
    to: str,
    subject: str,
    html: str,
    text: str,
    to_name: str = "",
    sender: str = "",
    reply_to: str = "",
    headers: Mapping[str, str] | None = None,
    custom_args: Mapping[str, str] | None = None,
    substitutions: Mapping[str, str] | None = None,
    categories: Sequence[str] = (),
    not_before: dt.datetime | None = None,
) -> MailMessage:
    """Queue one email (the caller commits); the same ``idempotency_key`` again is a no-op.

    ``sender`` empty means ``MAIL_FROM`` at sending time. The key must not contain
    personal data it would not otherwise need (it is stored, never sent). Raises MailError
    when the email could never be sent, so the mistake surfaces in the request.
    """
    queue(
        session,
        idempotency_key=idempotency_key,
        to=to,
        subject=subject,
        html=html,
        text=text,
        to_name=to_name,
        sender=sender,
        reply_to=reply_to,
        headers=headers,
        custom_args=custom_args,
        substitutions=substitutions,
        categories=categories,
        not_before=not_before,
    )
    row = session.scalars(
        select(MailMessage).where(MailMessage.idempotency_key == idempotency_key)
    ).one()
    return row


def queue(
    connection: Connection | Session,
    *,
    idempotency_key: str,
    to: str,
    subject: str,
    html: str,
    text: str,
    to_name: str = "",
    sender: str = "",
    reply_to: str = "",
    headers: Mapping[str, str] | None = None,
    custom_args: Mapping[str, str] | None = None,
    substitutions: Mapping[str, str] | None = None,
    categories: Sequence[str] = (),
    not_before: dt.datetime | None = None,
    message_checked: bool = False,
) -> None:
    """Queue one email like ``enqueue`` with one INSERT and no read back (a Core connection).

    ``message_checked`` skips the checks of the common part (sender, subject, parts,
    categories) when the caller has run ``validate_message`` on exactly this message
    already; the recipient's own part is always checked.
    """
    if not idempotency_key or len(idempotency_key) > 255:
        raise MailError("an idempotency key of 1 to 255 characters is required")
    now = utcnow()
    values: dict[str, Any] = {
        "message_id": uuid.uuid4().hex,
        "idempotency_key": idempotency_key,
        "to_email": to.strip(),
        "to_name": to_name,
        "sender": sender,
        "reply_to": reply_to,
        "subject": subject,
        "html": html,
        "text": text,
        "headers": dict(headers or {}),
        "custom_args": dict(custom_args or {}),
        "substitutions": dict(substitutions or {}),
        "categories": list(categories),
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": not_before or now,
        "last_error": "",
        "created_at": now,
    }
    # An empty sender means MAIL_FROM, checked when the drain sends; stand in a valid one so
    # everything else about the email is checked now, inside the request.
    recipient, message = _parts(values, sender or "queue@example.com")
    if not message_checked:
        validate_message(message)
    problem = recipient_problem(recipient)
    if problem:
        raise MailError(problem)
    # ON CONFLICT DO NOTHING: a concurrent enqueue of the same key waits for the other
    # transaction and then does nothing, instead of failing the request.
    if isinstance(connection, Session):
        connection = connection.connection()
    _insert_statement(connection.dialect.name).execute(connection, values)


#: The columns ``queue`` writes.
_QUEUE_KEYS = [
    "message_id", "idempotency_key", "to_email", "to_name", "sender", "reply_to", "subject",
    "html", "text", "headers", "custom_args", "substitutions", "categories", "status",
    "attempts", "next_attempt_at", "last_error", "created_at",
]  # fmt: skip


@functools.cache
def _insert_statement(dialect: str) -> DriverStatement:
    """Return the queue's INSERT … ON CONFLICT DO NOTHING, built once (values are parameters)."""
    insert = dialect_insert(dialect)
    statement = insert(MailMessage.__table__).on_conflict_do_nothing(
        index_elements=["idempotency_key"]
    )
    return DriverStatement(statement, _QUEUE_KEYS)


def _parts(values: Mapping[str, Any], sender: str) -> tuple[Recipient, Message]:
    """Return the backend's view of a queued row: its recipient and its message."""
    recipient = Recipient(
        email=values["to_email"],
        name=values["to_name"],
        headers=values["headers"],
        substitutions=values["substitutions"],
        custom_args=values["custom_args"],
        message_id=values["message_id"],
    )
    message = Message(
        subject=values["subject"],
        html=values["html"],
        text=values["text"],
        sender=values["sender"] or sender,
        reply_to=values["reply_to"] or None,
        categories=tuple(values["categories"]),
    )
    return recipient, message


def _row_values(row: MailMessage) -> dict[str, Any]:
    """Return the columns ``_parts`` reads."""
    names = (
        "to_email", "to_name", "headers", "substitutions", "custom_args", "message_id",
        "subject", "html", "text", "sender", "reply_to", "categories",
    )  # fmt: skip
    return {name: getattr(row, name) for name in names}


def _due(now: dt.datetime) -> Any:
    """Return the condition for rows a drain may claim now."""
    return or_(
        and_(MailMessage.status.in_(("queued", "unknown")), MailMessage.next_attempt_at <= now),
        and_(MailMessage.status == "sending", MailMessage.leased_until <= now),
    )


def claim(session: Session, limit: int, lease_seconds: float, now: dt.datetime) -> str | None:
    """Mark up to ``limit`` due rows as ``sending`` under a new claim token; return it.

    PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` so concurrent drains take disjoint
    rows. SQLite: one ``UPDATE … WHERE id IN (SELECT …)``, safe because SQLite lets one
    writer at a time in (the engine opens every transaction with ``BEGIN IMMEDIATE``).
    """
    token = uuid.uuid4().hex
    claimed = {
        "status": "sending",
        "claim_token": token,
        "leased_until": now + dt.timedelta(seconds=lease_seconds),
        "attempts": MailMessage.attempts + 1,
    }
    order = (MailMessage.next_attempt_at, MailMessage.id)
    if session.get_bind().dialect.name == "sqlite":
        due_ids = select(MailMessage.id).where(_due(now)).order_by(*order).limit(limit)
        statement = (
            update(MailMessage)
            .where(MailMessage.id.in_(due_ids.scalar_subquery()))
            .values(**claimed)
            .returning(MailMessage.id)
            .execution_options(synchronize_session=False)
        )
        ids = session.scalars(statement).all()
    else:
        ids = session.scalars(
            select(MailMessage.id)
            .where(_due(now))
            .order_by(*order)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if ids:
            session.execute(
                update(MailMessage)
                .where(MailMessage.id.in_(ids))
                .values(**claimed)
                .execution_options(synchronize_session=False)
            )
    return token if ids else None


def drain(
    db: Database,
    settings: Mapping[str, Any],
    backend: MailBackend,
    *,
    limit: int = 1000,
    clock: Clock = utcnow,
) -> DrainReport:
    """Send due messages in claimed batches until none are due or ``limit`` were claimed.

    Each batch: claim and commit, send outside any transaction, record and commit.
    """
    started = time.monotonic()
    report = DrainReport()
    batch_size = max(1, int(settings.get("MAIL_QUEUE_BATCH_SIZE", 100)))
    lease = float(settings.get("MAIL_QUEUE_LEASE_SECONDS", 900))
    while report.claimed < limit:
        with db.session() as session:
            token = claim(session, min(batch_size, limit - report.claimed), lease, clock())
        if token is None:
            break
        with db.session() as session:
            rows = session.scalars(
                select(MailMessage)
                .where(MailMessage.claim_token == token, MailMessage.status == "sending")
                .order_by(MailMessage.id)
            ).all()
            session.expunge_all()
        report.claimed += len(rows)
        results = _send(settings, backend, rows)
        with db.session() as session:
            for row in rows:
                _record(session, settings, row, token, results[row.message_id], clock(), report)
    report.seconds = time.monotonic() - started
    if report.claimed:
        log.info(
            "mail queue: %d claimed, %d sent, %d deferred, %d unknown, %d failed",
            report.claimed, report.sent, report.deferred, report.unknown, report.failed,
        )  # fmt: skip
    return report


def _send(
    settings: Mapping[str, Any], backend: MailBackend, rows: Sequence[MailMessage]
) -> dict[str, DeliveryResult]:
    """Send rows grouped by identical content, one backend call per group."""
    default_sender = str(settings.get("MAIL_FROM") or "")
    groups: dict[str, tuple[Message, list[Recipient]]] = {}
    for row in rows:
        recipient, message = _parts(_row_values(row), default_sender)
        key = hashlib.sha256(
            json.dumps(
                [message.subject, message.html, message.text, message.sender,
                 message.reply_to, list(message.categories)]
            ).encode()
        ).hexdigest()  # fmt: skip
        groups.setdefault(key, (message, []))[1].append(recipient)
    results: dict[str, DeliveryResult] = {}
    for message, recipients in groups.values():
        try:
            outcomes = backend.send_batch(message, recipients)
        except MailError as exc:
            outcomes = [result(r, DeliveryStatus.REJECTED, str(exc)) for r in recipients]
        except Exception as exc:
            # A backend bug, not a delivery answer: we cannot know what left.
            log.exception("mail backend %s failed", backend.name)
            reason = f"mail backend error: {exc!r}"
            outcomes = [result(r, DeliveryStatus.UNKNOWN, reason) for r in recipients]
        for outcome in outcomes:
            results[outcome.message_id] = outcome
    return results


def _record(
    session: Session,
    settings: Mapping[str, Any],
    row: MailMessage,
    token: str,
    outcome: DeliveryResult,
    now: dt.datetime,
    report: DrainReport,
) -> None:
    """Store one result on its row."""
    max_attempts = int(settings.get("MAIL_QUEUE_MAX_ATTEMPTS", 8))
    mine = and_(MailMessage.id == row.id, MailMessage.claim_token == token)
    if outcome.accepted:
        report.sent += 1
        # Recorded even if our lease ran out meanwhile: the provider has it either way.
        session.execute(
            update(MailMessage)
            .where(MailMessage.id == row.id, MailMessage.status != "sent")
            .values(
                status="sent",
                sent_at=now,
                provider_message_id=(outcome.provider_id or "")[:255] or None,
                last_error="",
                claim_token=None,
                leased_until=None,
            )
        )
        return
    values: dict[str, Any] = {"last_error": outcome.reason[:2000], "leased_until": None}
    if outcome.permanent or row.attempts >= max_attempts:
        report.failed += 1
        values["status"] = "failed"
        if not outcome.permanent:
            values["last_error"] = f"gave up after {row.attempts} attempts: {outcome.reason}"
    elif outcome.unknown:
        report.unknown += 1
        values["status"] = "unknown"
        wait = float(settings.get("RECONCILE_AFTER_SECONDS", 60))
        values["next_attempt_at"] = now + dt.timedelta(seconds=wait)
    else:
        report.deferred += 1
        values["status"] = "queued"
        values["next_attempt_at"] = now + dt.timedelta(
            seconds=backoff(settings, row.attempts, outcome)
        )
    session.execute(update(MailMessage).where(mine).values(**values))


def backoff(settings: Mapping[str, Any], attempts: int, outcome: DeliveryResult) -> float:
    """Return the wait before the next attempt: doubling, bounded, at least the provider's hint."""
    base = float(settings.get("MAIL_QUEUE_BACKOFF_SECONDS", 60))
    ceiling = float(settings.get("MAIL_QUEUE_BACKOFF_MAX_SECONDS", 3600))
    wait = min(ceiling, base * 2 ** max(0, attempts - 1))
    return max(wait, outcome.retry_after or 0.0)


def confirm_sent(
    session: Session, message_ids: Iterable[str], provider_id: str | None = None
) -> int:
    """Record that the provider accepted these messages (e.g. SendGrid ``processed`` events)."""
    ids = list(message_ids)
    if not ids:
        return 0
    values: dict[str, Any] = {
        "status": "sent",
        "sent_at": utcnow(),
        "claim_token": None,
        "leased_until": None,
        "last_error": "",
    }
    if provider_id:
        values["provider_message_id"] = provider_id[:255]
    outcome = session.execute(
        update(MailMessage)
        .where(MailMessage.message_id.in_(ids), MailMessage.status != "sent")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return int(outcome.rowcount)  # type: ignore[attr-defined]


def retry_failed(session: Session, message_ids: Iterable[str] | None = None) -> int:
    """Put failed messages (all, or those named) back in the queue with fresh attempts."""
    statement = update(MailMessage).where(MailMessage.status == "failed")
    if message_ids is not None:
        statement = statement.where(MailMessage.message_id.in_(list(message_ids)))
    outcome = session.execute(
        statement.values(status="queued", attempts=0, next_attempt_at=utcnow()).execution_options(
            synchronize_session=False
        )
    )
    return int(outcome.rowcount)  # type: ignore[attr-defined]


def forget_address(session: Session, email: str) -> int:
    """Delete every queued or past message to an address (erasure); return how many."""
    if not is_address(email.strip()):
        return 0
    outcome = session.execute(
        delete(MailMessage)
        .where(func.lower(MailMessage.to_email) == email.strip().lower())
        .execution_options(synchronize_session=False)
    )
    return int(outcome.rowcount)  # type: ignore[attr-defined]


def purge_sent(session: Session, older_than: dt.timedelta) -> int:
    """Delete messages sent longer ago than ``older_than``; return how many."""
    outcome = session.execute(
        delete(MailMessage)
        .where(MailMessage.status == "sent", MailMessage.sent_at < utcnow() - older_than)
        .execution_options(synchronize_session=False)
    )
    return int(outcome.rowcount)  # type: ignore[attr-defined]


def queue_backlog(session: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    """Return counts by status, how many are due, and the age of the oldest due message."""
    now = now or utcnow()
    counts = {status: 0 for status in ("queued", "sending", "unknown", "failed", "sent")}
    for status, count in session.execute(
        select(MailMessage.status, func.count()).group_by(MailMessage.status)
    ):
        counts[status] = int(count)
    due, oldest = session.execute(
        select(func.count(), func.min(MailMessage.next_attempt_at)).where(
            MailMessage.status.in_(("queued", "unknown")), MailMessage.next_attempt_at <= now
        )
    ).one()
    stale = session.scalar(
        select(func.count()).where(MailMessage.status == "sending", MailMessage.leased_until <= now)
    )
    oldest_age = 0.0
    if oldest is not None:
        if oldest.tzinfo is None:  # SQLite's MIN() comes back untyped
            oldest = oldest.replace(tzinfo=dt.UTC)
        oldest_age = max(0.0, (now - oldest).total_seconds())
    return {
        **counts,
        "backlog": counts["queued"] + counts["sending"] + counts["unknown"],
        "due": int(due) + int(stale or 0),
        "oldest_due_seconds": round(oldest_age, 1),
    }
