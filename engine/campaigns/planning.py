"""Who is told and when: restock detection, the waiting people, and waves sized to the stock."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from sqlalchemy import and_, exists, func, select, true
from sqlalchemy.orm import Session

from engine.campaigns.emails import render_approval, render_restock
from engine.campaigns.status import ACTIVE, CampaignError, transition
from engine.mail import MailError
from engine.mailqueue import enqueue
from engine.models import (
    Campaign,
    CampaignMessage,
    CampaignWave,
    Product,
    Signup,
    StockTransition,
    Variant,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Waiter:
    """One person waiting for a campaign's product: their signups, units asked, place in line."""

    subscriber_id: int
    signup_ids: tuple[int, ...]
    units: int
    signed_up_at: dt.datetime


@dataclass(frozen=True)
class WavePlan:
    """What the next wave would do: how many wait, the stock, who goes now."""

    waiting: int
    units: int | None  # None: not limited (untracked inventory or backorders)
    wave: list[Waiter]
    interval_minutes: int

    def describe(self) -> str:
        """Return the plan in one line, e.g. "2,300 waiting, 120 units, first wave 360, ..."."""
        units = "stock not limited" if self.units is None else f"{self.units:,} units"
        line = f"{self.waiting:,} waiting, {units}, first wave {len(self.wave):,}"
        if len(self.wave) < self.waiting:
            line += f", next wave in {self.interval_minutes} min"
        else:
            line += ", no second wave needed"
        return line


def waiting_people(session: Session, campaign: Campaign, *, quantity_cap: int) -> list[Waiter]:
    """Return the people still to be told by a campaign, oldest signup first.

    Confirmed signups for the product itself or for one of the campaign's SKUs count; one
    person waiting on several of them is one waiter (one email), counted in the units they
    asked for (capped).
    """
    skus = [str(sku) for sku in campaign.skus or []]
    # No SKUs named: every variant's waiters and the product's.
    wanted = (Signup.sku == "") | Signup.sku.in_(skus) if skus else true()
    told = exists().where(
        CampaignMessage.campaign_id == campaign.id,
        CampaignMessage.subscriber_id == Signup.subscriber_id,
    )
    rows = session.execute(
        select(Signup.subscriber_id, Signup.id, Signup.quantity, Signup.signed_up_at)
        .where(
            Signup.product_handle == campaign.product_handle,
            Signup.status == "confirmed",
            Signup.subscriber_id.is_not(None),
            wanted,
            ~told,
        )
        .order_by(Signup.signed_up_at, Signup.id)
        # Streamed (a server-side cursor on PostgreSQL): a 100,000-person waitlist is read a
        # chunk at a time instead of all rows at once.
        .execution_options(yield_per=5000)
    )
    people: dict[int, tuple[list[int], int, dt.datetime]] = {}
    for subscriber_id, signup_id, quantity, signed_up_at in rows:
        if subscriber_id is None:
            continue
        entry = people.get(subscriber_id)
        if entry is None:
            people[subscriber_id] = ([signup_id], int(quantity or 1), signed_up_at)
        else:
            entry[0].append(signup_id)
            people[subscriber_id] = (entry[0], max(entry[1], int(quantity or 1)), entry[2])
    cap = max(1, quantity_cap)
    return [
        Waiter(subscriber_id, tuple(ids), max(1, min(cap, units)), first)
        for subscriber_id, (ids, units, first) in people.items()
    ]


def stock_units(session: Session, handle: str) -> tuple[bool, int | None]:
    """Return (sellable now, units in stock) for a product; units None when not limited."""
    variants = session.scalars(
        select(Variant).join(Product).where(Product.handle == handle, Variant.sellable.is_(True))
    ).all()
    if not variants:
        return False, 0
    if any(not v.inventory_tracked or v.inventory_policy == "continue" for v in variants):
        return True, None
    return True, sum(max(0, v.stock) for v in variants)


def plan_wave(waiters: Sequence[Waiter], units: int | None, factor: float) -> list[Waiter]:
    """Return the next wave: oldest first while their units fit ``factor`` × the stock.

    Unlimited stock takes everyone. Some stock always takes at least the first person, so a
    person who asked for more than the budget is not skipped forever; nobody is jumped over.
    """
    if units is None:
        return list(waiters)
    if units <= 0 or not waiters:
        return []
    budget = max(1, math.floor(units * factor))
    wave: list[Waiter] = []
    used = 0
    for waiter in waiters:
        if wave and used + waiter.units > budget:
            break
        wave.append(waiter)
        used += waiter.units
    return wave


def wave_plan(session: Session, settings: Mapping[str, Any], campaign: Campaign) -> WavePlan:
    """Return the plan of a campaign's next wave as the stock and the waitlist stand now."""
    waiters = waiting_people(session, campaign, quantity_cap=quantity_cap(settings))
    _sellable, units = stock_units(session, campaign.product_handle)
    wave = plan_wave(waiters, units, float(settings["RESTOCK_WAVE_FACTOR"]))
    return WavePlan(
        waiting=len(waiters),
        units=units,
        wave=wave,
        interval_minutes=int(settings["RESTOCK_WAVE_INTERVAL_MINUTES"]),
    )


def quantity_cap(settings: Mapping[str, Any]) -> int:
    """Return the most units one person counts for (``WAITLIST_MAX_QUANTITY``)."""
    return int(settings.get("WAITLIST_MAX_QUANTITY") or 10)


def active_campaign(session: Session, handle: str) -> Campaign | None:
    """Return the product's campaign that is not over yet, if any."""
    return session.scalars(
        select(Campaign)
        .where(Campaign.product_handle == handle, Campaign.status.in_(ACTIVE))
        .order_by(Campaign.id)
        .limit(1)
    ).first()


def has_waiters(session: Session, handle: str, skus: Iterable[str]) -> bool:
    """Return True when someone confirmed waits for the product or one of these SKUs."""
    wanted = Signup.sku == ""
    skus = list(skus)
    if skus:
        wanted = wanted | Signup.sku.in_(skus)
    return bool(
        session.scalar(
            select(func.count())
            .select_from(Signup)
            .where(
                Signup.product_handle == handle,
                Signup.status == "confirmed",
                Signup.subscriber_id.is_not(None),
                wanted,
            )
        )
    )


def create_campaign(
    session: Session,
    settings: Mapping[str, Any],
    env: jinja2.Environment,
    handle: str,
    skus: Sequence[str],
    now: dt.datetime,
    *,
    origin: str = "restock",
    auto_send: bool | None = None,
) -> Campaign:
    """Create a product's campaign: scheduled now with auto-send, else a draft to approve.

    Raises ``CampaignError`` when the product already has a campaign that is not over.
    """
    running = active_campaign(session, handle)
    if running is not None:
        raise CampaignError(
            f"product {handle!r} already has campaign {running.id} ({running.status}); "
            "one restock, one campaign"
        )
    campaign = Campaign(
        product_handle=handle,
        skus=sorted(set(skus)),
        status="draft",
        reason="",
        origin=origin,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    send = bool(settings["RESTOCK_AUTO_SEND"]) if auto_send is None else auto_send
    if send:
        transition(campaign, "send", now)
        campaign.next_wave_at = now
    elif origin == "restock":
        queue_approval(session, settings, env, campaign, now)
    return campaign


def queue_approval(
    session: Session,
    settings: Mapping[str, Any],
    env: jinja2.Environment,
    campaign: Campaign,
    now: dt.datetime,
) -> bool:
    """Email ``MARKETER_EMAIL`` the draft's preview and how to approve it (via the mail queue)."""
    to = str(settings.get("MARKETER_EMAIL") or "").strip()
    if not to:
        log.warning(
            "campaign %d waits for approval, but MARKETER_EMAIL is not set: "
            "run `engine campaigns send %d`", campaign.id, campaign.id,
        )  # fmt: skip
        return False
    preview = render_restock(session, settings, env, campaign)
    approval = render_approval(
        settings, env, campaign, preview, wave_plan(session, settings, campaign).describe()
    )
    try:
        enqueue(
            session,
            idempotency_key=f"campaign-approval:{campaign.id}",
            to=to,
            subject=approval.subject,
            html=approval.html,
            text=approval.text,
            categories=("campaign-approval",),
            custom_args={"kind": "campaign-approval", "campaign": str(campaign.id)},
        )
    except MailError as exc:
        log.warning("campaign %d: approval email not queued: %s", campaign.id, exc)
        return False
    campaign.approval_sent_at = now
    return True


@dataclass
class DetectionReport:
    """What one pass over the stock transitions did."""

    transitions: int = 0
    created: list[int] | None = None
    held: int = 0  # restocks of a product whose campaign is still going (flapping)
    nobody_waiting: int = 0


def detect_restocks(
    session: Session, settings: Mapping[str, Any], env: jinja2.Environment, now: dt.datetime
) -> DetectionReport:
    """Turn unhandled stock transitions into campaigns (one per product) and mark them handled.

    A product with a campaign not yet over gets no second one however its stock flaps; a
    restock nobody waits for starts nothing.
    """
    report = DetectionReport(created=[])
    query = select(StockTransition).where(StockTransition.handled_at.is_(None))
    if session.get_bind().dialect.name == "postgresql":
        # Two schedulers never turn the same transitions into two campaigns.
        query = query.with_for_update(skip_locked=True)
    transitions = session.scalars(query.order_by(StockTransition.id)).all()
    by_handle: dict[str, list[StockTransition]] = {}
    for row in transitions:
        by_handle.setdefault(row.product_handle, []).append(row)
        row.handled_at = now
    report.transitions = len(transitions)
    for handle, rows in by_handle.items():
        restocked = [row for row in rows if row.restock]
        if not restocked:
            continue
        sellable, _units = stock_units(session, handle)
        if not sellable:
            continue  # came back and sold out again before anyone was told
        if active_campaign(session, handle) is not None:
            report.held += 1
            continue
        skus = sorted({row.sku for row in restocked if row.sku})
        # A restocked variant without a SKU has no variant waiters: its product's count.
        if not has_waiters(session, handle, skus):
            report.nobody_waiting += 1
            continue
        campaign = create_campaign(session, settings, env, handle, skus, now)
        assert report.created is not None
        report.created.append(campaign.id)
    return report


def next_wave_number(session: Session, campaign_id: int) -> int:
    """Return the number the campaign's next wave gets."""
    current = session.scalar(
        select(func.max(CampaignWave.number)).where(CampaignWave.campaign_id == campaign_id)
    )
    return int(current or 0) + 1


def outstanding(session: Session, campaign_id: int) -> int:
    """Return how many of a campaign's emails are not settled yet (queued, in flight, unknown)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(CampaignMessage)
            .where(
                and_(
                    CampaignMessage.campaign_id == campaign_id,
                    CampaignMessage.status.in_(("queued", "sending", "unknown")),
                )
            )
        )
        or 0
    )


def require(session: Session, campaign_id: int) -> Campaign:
    """Return a campaign by id or raise ``CampaignError``."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignError(f"no campaign has id {campaign_id}")
    return campaign
