"""A campaign's numbers (waves, sent, delivered, opened, clicked, converted, revenue) and the
re-join link's effect."""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from engine.campaigns.planning import require
from engine.models import (
    Campaign,
    CampaignMessage,
    CampaignWave,
    Order,
    PageView,
    Signup,
    Subscriber,
)
from engine.orders import campaign_conversions


@dataclass
class CampaignStats:
    """What a campaign did, from the database."""

    waves: list[tuple[int, int | None, int, dt.datetime]] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    bounced: int = 0
    blocked: int = 0
    converted: int = 0
    direct: int = 0
    assisted: int = 0
    revenue: Decimal = Decimal("0")
    orders_imported: bool = False

    @property
    def sent(self) -> int:
        """Return how many emails the provider took."""
        return self.by_status.get("sent", 0)

    @property
    def conversion_rate(self) -> float:
        """Return converted people per email sent (0 when nothing was sent)."""
        return self.converted / self.sent if self.sent else 0.0


def campaign_stats(session: Session, campaign_id: int) -> CampaignStats:
    """Return a campaign's waves, sending counts, engagement and attributed sales."""
    require(session, campaign_id)
    stats = CampaignStats()
    stats.waves = [
        (number, stock, people, created)
        for number, stock, people, created in session.execute(
            select(CampaignWave.number, CampaignWave.stock, CampaignWave.people,
                   CampaignWave.created_at)
            .where(CampaignWave.campaign_id == campaign_id)
            .order_by(CampaignWave.number)
        )
    ]  # fmt: skip
    for status, count in session.execute(
        select(CampaignMessage.status, func.count())
        .where(CampaignMessage.campaign_id == campaign_id)
        .group_by(CampaignMessage.status)
    ):
        stats.by_status[status] = int(count)
    mine = CampaignMessage.campaign_id == campaign_id
    stats.delivered = _count(session, mine, CampaignMessage.delivered_at.is_not(None))
    stats.opened = _count(session, mine, CampaignMessage.opened_at.is_not(None))
    # A click is a provider click event or a page view that landed with the email's link
    # token (``et``), as attribution counts it: the outbox and SMTP backends have no events.
    created = session.scalar(select(Campaign.created_at).where(Campaign.id == campaign_id))
    landed = select(PageView.engine_token).where(PageView.engine_token != "")
    if created is not None:
        landed = landed.where(PageView.day >= created.date() - dt.timedelta(days=1))
    stats.clicked = _count(
        session,
        mine,
        or_(CampaignMessage.clicked_at.is_not(None), CampaignMessage.message_id.in_(landed)),
    )
    stats.bounced = _count(session, mine, CampaignMessage.delivery == "bounced")
    stats.blocked = _count(session, mine, CampaignMessage.delivery == "blocked")
    stats.orders_imported = bool(session.scalar(select(func.count()).select_from(Order)))
    sales = campaign_conversions(session, campaign_id)
    stats.converted = sales["converted"]
    stats.direct = sales["direct"]
    stats.assisted = sales["assisted"]
    stats.revenue = sales["revenue"]
    return stats


def _count(session: Session, *where: object) -> int:
    return int(
        session.scalar(select(func.count()).select_from(CampaignMessage).where(*where)) or 0  # type: ignore[arg-type]
    )


def rejoin(
    session: Session, subscriber_id: int, token_key: str, message_id: str, now: dt.datetime
) -> list[Signup] | None:
    """Put the signups a restock email used up back on the waitlist (a new place in line).

    Returns the signups waiting again, or None when the link names nobody (erased, forged).
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or not hmac.compare_digest(subscriber.token_key, token_key):
        return None
    message = session.scalar(
        select(CampaignMessage).where(CampaignMessage.message_id == message_id)
    )
    if message is None or message.subscriber_id != subscriber.id:
        return None
    signups = list(
        session.scalars(select(Signup).where(Signup.id.in_(list(message.signup_ids or []))))
    )
    for signup in signups:
        if signup.status == "notified":
            # Joining again is explicit and the address was confirmed: waiting at once.
            signup.status = "confirmed"
            signup.signed_up_at = now
            signup.left_reason = ""
            signup.left_at = None
    return [signup for signup in signups if signup.status == "confirmed"]
