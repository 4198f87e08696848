"""How a campaign runs: waves when due, claimed batches through the mail backend, reconciliation.

Each email is a ``campaign_message`` row, unique per (campaign, person). A batch is claimed
and marked in flight (``sending``, with a lease) in one committed transaction before the
backend is called; PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so several workers
never take the same row, SQLite has one writer at a time. A row whose fate is unknown (a
timeout, or a process killed mid-call) is settled from SendGrid's events before it is sent
again; see the README for the exact guarantee.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import jinja2
from sqlalchemy import Table, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from engine.campaigns.emails import personalize, render_restock
from engine.campaigns.planning import (
    next_wave_number,
    outstanding,
    plan_wave,
    quantity_cap,
    stock_units,
    waiting_people,
)
from engine.campaigns.status import CampaignError, transition
from engine.db import Database, utcnow
from engine.mail import DeliveryResult, DeliveryStatus, MailBackend, MailError, Message, Recipient
from engine.mail.base import result
from engine.mailqueue import backoff
from engine.models import Campaign, CampaignMessage, CampaignWave, Signup, Subscriber, Suppression
from engine.waitlist import address_hash

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
#: Statuses of an email that is settled: never claimed again.
SETTLED = ("sent", "failed", "skipped")


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _rowcount(outcome: Any) -> int:
    return int(getattr(outcome, "rowcount", 0) or 0)


# --------------------------------------------------------------------------- pages


def rebuild_pages(db: Database, settings: Mapping[str, Any]) -> str:
    """Rebuild the site (incrementally) and run PUBLISH_COMMAND; return "" or what went wrong."""
    from engine.content import ContentErrors
    from engine.publish import PublishError, build_site

    try:
        with db.session() as session:
            build_site(session, settings)
    except ContentErrors as exc:
        return f"pages could not be rebuilt: {len(exc.errors)} content problem(s): {exc.errors[0]}"
    except PublishError as exc:
        return f"pages could not be rebuilt: {exc}"
    return ""


# --------------------------------------------------------------------------- waves


@dataclass
class WaveReport:
    """What one pass over due campaigns did."""

    waves: int = 0
    queued: int = 0
    finished: list[int] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)


def due_campaigns(session: Session, now: dt.datetime) -> list[int]:
    """Return the ids of campaigns whose next wave is due."""
    return list(
        session.scalars(
            select(Campaign.id)
            .where(Campaign.status.in_(("scheduled", "sending")), Campaign.next_wave_at <= now)
            .order_by(Campaign.next_wave_at, Campaign.id)
        )
    )


def run_due_waves(
    db: Database, settings: Mapping[str, Any], now: dt.datetime, report: WaveReport | None = None
) -> WaveReport:
    """Plan every due wave (pages rebuilt first for a first wave)."""
    report = report or WaveReport()
    with db.session() as session:
        due = due_campaigns(session, now)
    for campaign_id in due:
        advance(db, settings, campaign_id, now, report)
    return report


def _locked(session: Session, campaign_id: int) -> Campaign | None:
    query = select(Campaign).where(Campaign.id == campaign_id)
    if _dialect(session) == "postgresql":
        query = query.with_for_update()
    return session.scalars(query).first()


def advance(
    db: Database,
    settings: Mapping[str, Any],
    campaign_id: int,
    now: dt.datetime,
    report: WaveReport | None = None,
) -> WaveReport:
    """Take one due campaign one step: its pages, then its next wave, or its end."""
    report = report or WaveReport()
    with db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or not _is_due(campaign, now):
            return report
        needs_pages = campaign.pages_built_at is None
    if needs_pages:
        # Before the first email, the pages must already say "in stock".
        problem = rebuild_pages(db, settings)
        with db.session() as session:
            campaign = _locked(session, campaign_id)
            if campaign is None:
                return report
            if problem:
                if campaign.status in ("scheduled", "sending"):
                    transition(campaign, "pause", now, reason=problem)
                    report.paused.append(campaign_id)
                return report
            campaign.pages_built_at = now
    sold_out = False
    with db.session() as session:
        campaign = _locked(session, campaign_id)
        if campaign is None or not _is_due(campaign, now):
            return report
        sellable, units = stock_units(session, campaign.product_handle)
        waiters = waiting_people(session, campaign, quantity_cap=quantity_cap(settings))
        if not sellable:
            skipped = _skip_queued(session, campaign.id, "sold out again before it was sent")
            transition(
                campaign,
                "finish",
                now,
                reason=f"sold out again; {len(waiters) + skipped:,} people not told stay waiting",
            )
            report.finished.append(campaign.id)
            sold_out = True
        elif not waiters:
            if outstanding(session, campaign.id):
                campaign.next_wave_at = now + _interval(settings)
            else:
                transition(campaign, "finish", now, reason="everyone waiting was told")
                report.finished.append(campaign.id)
        else:
            wave = plan_wave(waiters, units, float(settings["RESTOCK_WAVE_FACTOR"]))
            number = next_wave_number(session, campaign.id)
            session.add(
                CampaignWave(
                    campaign_id=campaign.id, number=number, stock=units, people=len(wave),
                    created_at=now,
                )
            )  # fmt: skip
            report.queued += _queue_messages(session, campaign.id, number, wave, now)
            report.waves += 1
            transition(campaign, "start", now)
            campaign.next_wave_at = now + _interval(settings)
    if sold_out:
        # The product sold out again: its pages go back to "back soon".
        problem = rebuild_pages(db, settings)
        if problem:
            log.warning("campaign %d finished (sold out); %s", campaign_id, problem)
    return report


def _is_due(campaign: Campaign, now: dt.datetime) -> bool:
    return (
        campaign.status in ("scheduled", "sending")
        and campaign.next_wave_at is not None
        and campaign.next_wave_at <= now
    )


def _interval(settings: Mapping[str, Any]) -> dt.timedelta:
    return dt.timedelta(minutes=float(settings["RESTOCK_WAVE_INTERVAL_MINUTES"]))


def _queue_messages(
    session: Session, campaign_id: int, number: int, wave: Sequence[Any], now: dt.datetime
) -> int:
    """Insert one queued email per person of a wave; anyone already in the campaign is kept out."""
    if not wave:
        return 0
    insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    table = cast(Table, CampaignMessage.__table__)
    # The unique (campaign, person) key is the guarantee: a concurrent planner's row wins.
    # No RETURNING: a plain executemany (psycopg pipelines it) instead of one multi-row
    # statement per 1,000 rows, whose client-side parsing cost more than the inserts.
    statement = insert(table).on_conflict_do_nothing(
        index_elements=["campaign_id", "subscriber_id"]
    )
    for start in range(0, len(wave), 5000):
        # Built a chunk at a time: a 100,000-person wave never holds all its rows at once.
        rows = [
            {
                "campaign_id": campaign_id,
                "subscriber_id": waiter.subscriber_id,
                "signup_ids": list(waiter.signup_ids),
                "wave": number,
                "message_id": uuid.uuid4().hex,
                "status": "queued",
                "attempts": 0,
                "next_attempt_at": now,
                "last_error": "",
                "created_at": now,
                "delivery": "",
            }
            for waiter in wave[start : start + 5000]
        ]
        session.execute(statement, rows)
    # The campaign row is locked (PostgreSQL) or the only writer (SQLite): this wave's rows
    # are the ones just inserted.
    return int(
        session.scalar(
            select(func.count())
            .select_from(CampaignMessage)
            .where(CampaignMessage.campaign_id == campaign_id, CampaignMessage.wave == number)
        )
        or 0
    )


def _skip_queued(session: Session, campaign_id: int, reason: str) -> int:
    """Mark a campaign's emails not yet sent as skipped (their people stay waiting)."""
    outcome = session.execute(
        update(CampaignMessage)
        .where(CampaignMessage.campaign_id == campaign_id, CampaignMessage.status == "queued")
        .values(status="skipped", last_error=reason)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(outcome)


# --------------------------------------------------------------------------- sending


@dataclass
class SendReport:
    """What one sending pass did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    skipped: int = 0
    batches: int = 0
    seconds: float = 0.0


def claim(
    session: Session, limit: int, lease_seconds: float, now: dt.datetime, campaign_id: int | None
) -> str | None:
    """Mark up to ``limit`` queued emails of sending campaigns in flight; return the claim token."""
    token = uuid.uuid4().hex
    running = select(Campaign.id).where(Campaign.status == "sending")
    if campaign_id is not None:
        running = running.where(Campaign.id == campaign_id)
    due = and_(
        CampaignMessage.status == "queued",
        CampaignMessage.next_attempt_at <= now,
        CampaignMessage.campaign_id.in_(running.scalar_subquery()),
    )
    values = {
        "status": "sending",
        "claim_token": token,
        "leased_until": now + dt.timedelta(seconds=lease_seconds),
        "attempts": CampaignMessage.attempts + 1,
    }
    ids_query = select(CampaignMessage.id).where(due).order_by(CampaignMessage.id).limit(limit)
    if _dialect(session) == "postgresql":
        ids = session.scalars(ids_query.with_for_update(skip_locked=True)).all()
        if not ids:
            return None
        session.execute(
            update(CampaignMessage)
            .where(CampaignMessage.id.in_(ids))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return token
    # SQLite: BEGIN IMMEDIATE makes this one statement the only writer.
    claimed = session.scalars(
        update(CampaignMessage)
        .where(CampaignMessage.id.in_(ids_query.scalar_subquery()))
        .values(**values)
        .returning(CampaignMessage.id)
        .execution_options(synchronize_session=False)
    ).all()
    return token if claimed else None


@dataclass(frozen=True)
class _Claimed:
    id: int
    campaign_id: int
    message_id: str
    signup_ids: tuple[int, ...]
    attempts: int
    subscriber: Subscriber | None


def send_queued(
    db: Database,
    settings: Mapping[str, Any],
    backend: MailBackend,
    *,
    env: jinja2.Environment | None = None,
    campaign_id: int | None = None,
    clock: Clock = utcnow,
    limit: int | None = None,
) -> SendReport:
    """Send queued emails of sending campaigns, batch by batch, until none are due."""
    from engine.pages import make_environment

    started = time.monotonic()
    report = SendReport()
    env = env or make_environment(settings)
    batch_size = max(1, min(1000, int(settings["CAMPAIGN_BATCH_SIZE"])))
    lease = float(settings["CAMPAIGN_LEASE_SECONDS"])
    messages: dict[int, Message | str] = {}
    while limit is None or report.claimed < limit:
        size = batch_size if limit is None else min(batch_size, limit - report.claimed)
        with db.session() as session:
            token = claim(session, size, lease, clock(), campaign_id)
        if token is None:
            break
        with db.session() as session:
            claimed = _load_claimed(session, token)
            for cid in {row.campaign_id for row in claimed} - set(messages):
                messages[cid] = _campaign_message(session, settings, env, cid)
            suppressed = _suppressed(session, settings, claimed)
            waiting = _still_waiting(session, claimed)
        report.claimed += len(claimed)
        report.batches += 1
        results = _send(settings, backend, claimed, messages, suppressed, waiting)
        with db.session() as session:
            _record(session, settings, token, claimed, results, clock(), report)
    report.seconds = time.monotonic() - started
    return report


def _load_claimed(session: Session, token: str) -> list[_Claimed]:
    rows = session.execute(
        select(CampaignMessage, Subscriber)
        .outerjoin(Subscriber, Subscriber.id == CampaignMessage.subscriber_id)
        .where(CampaignMessage.claim_token == token, CampaignMessage.status == "sending")
        .order_by(CampaignMessage.id)
    ).all()
    claimed = [
        _Claimed(
            id=row.id,
            campaign_id=row.campaign_id,
            message_id=row.message_id,
            signup_ids=tuple(int(i) for i in row.signup_ids or ()),
            attempts=row.attempts,
            subscriber=subscriber,
        )
        for row, subscriber in rows
    ]
    session.expunge_all()
    return claimed


def _campaign_message(
    session: Session, settings: Mapping[str, Any], env: jinja2.Environment, campaign_id: int
) -> Message | str:
    """Return the campaign's common message, or why it cannot be rendered."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        return f"campaign {campaign_id} is gone"
    try:
        email = render_restock(session, settings, env, campaign)
    except (CampaignError, MailError) as exc:
        return str(exc)
    return Message(
        subject=email.subject,
        html=email.html,
        text=email.text,
        sender=str(settings["MAIL_FROM"]),
        categories=("restock",),
    )


def _suppressed(
    session: Session, settings: Mapping[str, Any], claimed: Sequence[_Claimed]
) -> set[int]:
    """Return the ids of claimed emails whose address is suppressed."""
    secret = str(settings["SECRET_KEY"])
    hashes = {
        address_hash(secret, row.subscriber.address): row.id
        for row in claimed
        if row.subscriber is not None
    }
    if not hashes:
        return set()
    found = session.scalars(
        select(Suppression.address_hash).where(Suppression.address_hash.in_(list(hashes)))
    ).all()
    return {hashes[key] for key in found}


def _still_waiting(session: Session, claimed: Sequence[_Claimed]) -> set[int]:
    """Return the ids of claimed emails at least one of whose signups still waits (confirmed)."""
    signup_ids = [sid for row in claimed for sid in row.signup_ids]
    confirmed: set[int] = set()
    for start in range(0, len(signup_ids), 5000):
        confirmed.update(
            session.scalars(
                select(Signup.id).where(
                    Signup.id.in_(signup_ids[start : start + 5000]), Signup.status == "confirmed"
                )
            )
        )
    return {row.id for row in claimed if confirmed.intersection(row.signup_ids)}


def _send(
    settings: Mapping[str, Any],
    backend: MailBackend,
    claimed: Sequence[_Claimed],
    messages: Mapping[int, Message | str],
    suppressed: set[int],
    waiting: set[int],
) -> dict[int, DeliveryResult | str]:
    """Send a claimed batch, one backend call per campaign; a str result means skipped."""
    results: dict[int, DeliveryResult | str] = {}
    groups: dict[int, list[tuple[_Claimed, Recipient]]] = defaultdict(list)
    for row in claimed:
        if row.subscriber is None:
            results[row.id] = "the person was erased"
            continue
        if row.id in suppressed:
            results[row.id] = "the address is suppressed"
            continue
        if row.id not in waiting:
            results[row.id] = "the person left the waitlist"
            continue
        message = messages[row.campaign_id]
        part = personalize(settings, row.subscriber, row.message_id)
        recipient = Recipient(
            email=row.subscriber.email,
            headers=part.headers,
            substitutions=part.substitutions,
            custom_args={"campaign": str(row.campaign_id), "kind": "restock"},
            message_id=row.message_id,
        )
        if isinstance(message, str):
            results[row.id] = result(recipient, DeliveryStatus.REJECTED, message)
            continue
        groups[row.campaign_id].append((row, recipient))
    for campaign_id, members in groups.items():
        message = cast(Message, messages[campaign_id])
        recipients = [recipient for _row, recipient in members]
        try:
            outcomes = backend.send_batch(message, recipients)
        except MailError as exc:
            outcomes = [result(r, DeliveryStatus.REJECTED, str(exc)) for r in recipients]
        except Exception as exc:
            # A backend bug, not a delivery answer: what left is unknown.
            log.exception("mail backend %s failed", backend.name)
            outcomes = [result(r, DeliveryStatus.UNKNOWN, f"mail backend error: {exc!r}")
                        for r in recipients]  # fmt: skip
        by_message = {outcome.message_id: outcome for outcome in outcomes}
        for row, recipient in members:
            results[row.id] = by_message.get(recipient.message_id) or result(
                recipient, DeliveryStatus.UNKNOWN, "the backend gave no result for it"
            )
    return results


def _record(
    session: Session,
    settings: Mapping[str, Any],
    token: str,
    claimed: Sequence[_Claimed],
    results: Mapping[int, DeliveryResult | str],
    now: dt.datetime,
    report: SendReport,
) -> None:
    """Store a batch's results in a few statements; pause a campaign failing too much."""
    max_attempts = int(settings["CAMPAIGN_MAX_ATTEMPTS"])
    window = dt.timedelta(seconds=float(settings["RECONCILE_AFTER_SECONDS"]))
    accepted: dict[str | None, list[_Claimed]] = defaultdict(list)
    failed_campaigns: set[int] = set()
    done = {"claim_token": None, "leased_until": None}
    for row in claimed:
        outcome = results[row.id]
        if not isinstance(outcome, str) and outcome.accepted:
            # The common case, recorded in bulk below (no per-row statement).
            report.sent += 1
            accepted[outcome.provider_id].append(row)
            continue
        mine = and_(CampaignMessage.id == row.id, CampaignMessage.claim_token == token)
        if isinstance(outcome, str):
            report.skipped += 1
            session.execute(
                update(CampaignMessage)
                .where(mine)
                .values(status="skipped", last_error=outcome, **done)
            )
        elif outcome.permanent or (outcome.failed and row.attempts >= max_attempts):
            report.failed += 1
            failed_campaigns.add(row.campaign_id)
            reason = (
                outcome.reason
                if outcome.permanent
                else (f"gave up after {row.attempts} attempts: {outcome.reason}")
            )
            session.execute(
                update(CampaignMessage).where(mine)
                .values(status="failed", last_error=reason[:2000], **done)
            )  # fmt: skip
        elif outcome.unknown:
            report.unknown += 1
            session.execute(
                update(CampaignMessage).where(mine)
                .values(status="unknown", last_error=outcome.reason[:2000],
                        next_attempt_at=now + window, **done)
            )  # fmt: skip
        else:
            report.deferred += 1
            wait = dt.timedelta(seconds=backoff(settings, row.attempts, outcome))
            session.execute(
                update(CampaignMessage).where(mine)
                .values(status="queued", last_error=outcome.reason[:2000],
                        next_attempt_at=now + wait, **done)
            )  # fmt: skip
    for provider_id, rows in accepted.items():
        mark_sent(session, [row.message_id for row in rows], now, provider_id, token=token)
    for campaign_id in failed_campaigns:
        check_failures(session, settings, campaign_id, now)


def mark_sent(
    session: Session,
    message_ids: Sequence[str],
    now: dt.datetime,
    provider_id: str | None = None,
    *,
    token: str | None = None,
) -> int:
    """Record that the provider took these emails; their signups are used up (``notified``).

    With ``token`` only rows still held by that claim change (the backend's own answer);
    without, any row not yet sent (the provider's events, or reconciliation).
    """
    if not message_ids:
        return 0
    where: list[Any] = [CampaignMessage.message_id.in_(list(message_ids))]
    if token is not None:
        where.append(CampaignMessage.claim_token == token)
    else:
        where.append(CampaignMessage.status != "sent")
    values: dict[str, Any] = {
        "status": "sent", "sent_at": now, "claim_token": None, "leased_until": None,
        "last_error": "",
    }  # fmt: skip
    if provider_id:
        values["provider_message_id"] = provider_id[:255]
    changed = session.execute(
        update(CampaignMessage)
        .where(*where)
        .values(**values)
        .returning(CampaignMessage.signup_ids)
        .execution_options(synchronize_session=False)
    ).all()
    signup_ids = [int(sid) for (ids,) in changed for sid in ids or ()]
    for start in range(0, len(signup_ids), 5000):
        session.execute(
            update(Signup)
            .where(Signup.id.in_(signup_ids[start : start + 5000]), Signup.status == "confirmed")
            .values(status="notified")
            .execution_options(synchronize_session=False)
        )
    return len(changed)


def check_failures(
    session: Session, settings: Mapping[str, Any], campaign_id: int, now: dt.datetime
) -> bool:
    """Pause a sending campaign whose permanent failures pass the limits; return True if paused."""
    counts: dict[str, int] = {}
    for status, count in session.execute(
        select(CampaignMessage.status, func.count())
        .where(
            CampaignMessage.campaign_id == campaign_id,
            CampaignMessage.status.in_(("sent", "failed")),
        )
        .group_by(CampaignMessage.status)
    ):
        counts[status] = int(count)
    failed, sent = int(counts.get("failed", 0)), int(counts.get("sent", 0))
    limit = int(settings["CAMPAIGN_MAX_FAILURES"])
    rate = float(settings["CAMPAIGN_MAX_FAILURE_RATE"])
    if failed < limit or failed <= rate * (failed + sent):
        return False
    campaign = _locked(session, campaign_id)
    if campaign is None or campaign.status != "sending":
        return False
    last = session.scalar(
        select(CampaignMessage.last_error)
        .where(CampaignMessage.campaign_id == campaign_id, CampaignMessage.status == "failed")
        .order_by(CampaignMessage.id.desc())
        .limit(1)
    )
    transition(
        campaign,
        "pause",
        now,
        reason=(
            f"{failed:,} of {failed + sent:,} emails failed for good (last: {last}); fix the "
            f"cause, then `engine campaigns resume {campaign_id}`"
        ),
    )
    log.warning("campaign %d paused: %s", campaign_id, campaign.reason)
    return True


# --------------------------------------------------------------------------- reconciliation


@dataclass
class ReconcileReport:
    """What one reconciliation pass did."""

    expired: int = 0  # in flight past their lease (the sender died): now of unknown fate
    confirmed: int = 0  # unknown, but an event shows SendGrid had it: settled as sent
    resent: int = 0  # unknown past the window with no event: queued again (same message id)
    dropped: int = 0  # unknown, campaign over: not resent


def reconcile(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> ReconcileReport:
    """Settle emails of unknown fate from the provider's events, then resend what stays unknown."""
    from engine.models import ProviderEvent

    report = ReconcileReport()
    window = dt.timedelta(seconds=float(settings["RECONCILE_AFTER_SECONDS"]))
    with db.session() as session:
        report.expired = _rowcount(
            session.execute(
                update(CampaignMessage)
                .where(CampaignMessage.status == "sending", CampaignMessage.leased_until <= now)
                .values(
                    status="unknown",
                    claim_token=None,
                    leased_until=None,
                    next_attempt_at=now + window,
                    last_error="the sending process stopped mid-batch; waiting for events",
                )
                .execution_options(synchronize_session=False)
            )
        )
    with db.session() as session:
        rows = session.execute(
            select(CampaignMessage.message_id, Campaign.status)
            .join(Campaign, Campaign.id == CampaignMessage.campaign_id)
            .where(CampaignMessage.status == "unknown", CampaignMessage.next_attempt_at <= now)
            .order_by(CampaignMessage.id)
        ).all()
        ids = [message_id for message_id, _status in rows]
        seen: set[str] = set()
        for start in range(0, len(ids), 5000):
            seen.update(
                session.scalars(
                    select(ProviderEvent.message_id)
                    .where(ProviderEvent.message_id.in_(ids[start : start + 5000]))
                    .distinct()
                )
            )
        report.confirmed = mark_sent(session, sorted(seen), now)
        over_statuses = ("finished", "cancelled")
        resend = [m for m, status in rows if m not in seen and status not in over_statuses]
        over = [m for m, status in rows if m not in seen and status in over_statuses]
        for start in range(0, len(resend), 5000):
            report.resent += _rowcount(
                session.execute(
                    update(CampaignMessage)
                    .where(CampaignMessage.message_id.in_(resend[start : start + 5000]),
                           CampaignMessage.status == "unknown")
                    .values(status="queued", next_attempt_at=now)
                    .execution_options(synchronize_session=False)
                )
            )  # fmt: skip
        for start in range(0, len(over), 5000):
            report.dropped += _rowcount(
                session.execute(
                    update(CampaignMessage)
                    .where(CampaignMessage.message_id.in_(over[start : start + 5000]),
                           CampaignMessage.status == "unknown")
                    .values(status="skipped",
                            last_error="fate unknown and the campaign is over: not resent")
                    .execution_options(synchronize_session=False)
                )
            )  # fmt: skip
    return report
