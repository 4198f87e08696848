"""A finished demo restock campaign: a product sold out, people waited, it came back, they heard.

The Ridgeline UL1 tent sold out 30 days before seeding; 16 people joined its waitlist (through
the waitlist's own functions, confirmed); 9 days before seeding its 14 units came back, and
the campaign ran through the real code: one wave planned by ``run_due_waves``, every email sent
by ``send_queued`` through the **outbox** backend (``.eml`` files in the instance's outbox,
whatever ``MAIL_BACKEND`` says), then finished. Six people followed the email's link to the
product page (page views carrying the ``et`` token: the clicks) and three of them ordered; one
more recipient ordered without clicking; one order came from someone never emailed. The
delivery and open events a SendGrid account would post back (15 delivered, one deferred, 11
opened) go through the webhook's own ``apply_events``. The orders are stored and attributed
like an orders export, so ``engine campaigns list`` and ``show`` print real numbers: 16 sent,
15 delivered, 11 opened, 6 clicked, 4 converted (3 direct, 1 assisted), $1,645.00.

Seeding is deterministic (fixed people, days, quantities; only the message ids are random)
and happens once: an instance whose tent already has a campaign is left alone, and so is one
where the tent is not in stock as the demo catalog has it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.demo.signups import DemoSignup, seed_signups

#: The product of the demo campaign: in stock in the demo catalog (14 units, one variant).
CAMPAIGN_HANDLE = "ridgeline-ul1-tent"
CAMPAIGN_SKU = "RL-UL1-SG"
#: Days before seeding: sold out, restocked (the campaign's wave and emails).
SOLD_OUT_DAYS_AGO = 30
RESTOCKED_DAYS_AGO = 9

_DOMAIN = "example.com"  # reserved: mail to it reaches nobody
_NAMES = (
    "amara.tarp", "bo.switchback", "carmen.ridgeway", "dev.alpine", "elin.bivouac",
    "felix.cairn", "greta.talus", "hugo.scree", "ines.col", "jonas.tarn", "kira.moraine",
    "luis.basecamp", "maya.saddle", "noor.couloir", "otto.cornice", "pia.headwall",
)  # fmt: skip
#: The people waiting for the tent: confirmed, joined between 28 and 11 days before seeding.
CAMPAIGN_SIGNUPS: tuple[DemoSignup, ...] = tuple(
    DemoSignup(f"{name}@{_DOMAIN}", CAMPAIGN_HANDLE, "", True, 28 - n, 1 + (n % 5 == 2))
    for n, name in enumerate(_NAMES)
)
#: Who opened the email without following its link (everyone who clicked opened it too),
#: hours after it was sent; every email but one was delivered.
OPENS: dict[str, int] = {
    "bo.switchback": 1, "dev.alpine": 4, "hugo.scree": 6, "kira.moraine": 12, "pia.headwall": 30,
}  # fmt: skip
NOT_DELIVERED = "otto.cornice"  # the receiving server is still retrying (a "deferred" event)
#: Who followed the email's link, hours after it was sent.
CLICKS: dict[str, int] = {
    "amara.tarp": 1, "carmen.ridgeway": 2, "elin.bivouac": 3, "greta.talus": 5,
    "jonas.tarn": 8, "maya.saddle": 26,
}  # fmt: skip


@dataclass(frozen=True)
class DemoOrder:
    """One demo order of the tent: who, hours after the email, quantity."""

    name: str
    who: str
    hours: int
    quantity: int = 1


#: Four clicked then bought (direct), Jonas bought two; Kira bought without clicking
#: (assisted); a stranger's order is nobody's conversion.
ORDERS: tuple[DemoOrder, ...] = (
    DemoOrder("#D1001", "amara.tarp", 2),
    DemoOrder("#D1002", "carmen.ridgeway", 4),
    DemoOrder("#D1003", "jonas.tarn", 30, 2),
    DemoOrder("#D1004", "kira.moraine", 50),
    DemoOrder("#D1005", "walk.in", 60),
)
PRICE = Decimal("329.00")
TITLE = "Ridgeline UL1 Ultralight Tent"


@dataclass
class DemoCampaign:
    """What seeding the demo campaign did."""

    campaign_id: int
    sent: int
    orders: int


class _OneTransaction:
    """A stand-in for ``Database`` whose sessions are all the caller's one session.

    The demo seeds inside ``engine demo``'s single transaction (all or nothing), while the
    campaign code opens sessions of its own; here each of those is that transaction, flushed
    on the way in and out.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    @contextmanager
    def session(self) -> Iterator[Session]:
        self._session.flush()
        yield self._session
        self._session.flush()


def seed_campaign(
    session: Session, settings: Mapping[str, Any], now: dt.datetime
) -> DemoCampaign | None:
    """Play the tent's sell-out, waitlist, restock and campaign once; None when already done
    (or when the tent is missing or not in stock as the demo catalog has it)."""
    from engine.campaigns import create_campaign, run_due_waves, send_queued
    from engine.catalog import set_stock, variant_by_sku
    from engine.db import Database
    from engine.mail import make_backend
    from engine.models import Campaign, StockTransition
    from engine.pages import make_environment

    if session.scalar(select(Campaign.id).where(Campaign.product_handle == CAMPAIGN_HANDLE)):
        return None
    variant = variant_by_sku(session, CAMPAIGN_SKU)
    if variant is None or not variant.sellable or not variant.inventory_tracked:
        return None
    units = int(variant.stock)
    sold_out = now - dt.timedelta(days=SOLD_OUT_DAYS_AGO)
    restocked = now - dt.timedelta(days=RESTOCKED_DAYS_AGO)
    set_stock(session, variant, 0, source="cli", at=sold_out)
    seed_signups(session, settings, now, CAMPAIGN_SIGNUPS)
    set_stock(session, variant, units, source="cli", at=restocked)
    # The restock is this campaign's; the scheduler must not start a second one from it.
    session.execute(
        update(StockTransition)
        .where(StockTransition.product_handle == CAMPAIGN_HANDLE,
               StockTransition.handled_at.is_(None))
        .values(handled_at=restocked)
    )  # fmt: skip
    # Approved at once; the demo builds the pages itself (never PUBLISH_COMMAND).
    demo = {**settings, "MAIL_BACKEND": "outbox", "PUBLISH_COMMAND": ""}
    env = make_environment(demo)
    campaign = create_campaign(
        session, demo, env, CAMPAIGN_HANDLE, [CAMPAIGN_SKU], restocked, auto_send=True
    )
    campaign.pages_built_at = restocked
    campaign_id = campaign.id
    db = cast(Database, _OneTransaction(session))
    sending = restocked + dt.timedelta(minutes=1)
    run_due_waves(db, demo, sending)
    backend = make_backend(demo)
    try:
        report = send_queued(
            db, demo, backend, env=env, campaign_id=campaign_id,
            clock=lambda: sending + dt.timedelta(seconds=5),
        )  # fmt: skip
    finally:
        backend.close()
    # The next wave finds nobody left: the campaign finishes.
    later = sending + dt.timedelta(minutes=float(demo["RESTOCK_WAVE_INTERVAL_MINUTES"]) + 1)
    run_due_waves(db, demo, later)
    _delivery_events(session, demo, campaign_id, sending)
    _clicks(session, demo, campaign_id, sending)
    orders = _orders(session, demo, sending)
    return DemoCampaign(campaign_id=campaign_id, sent=report.sent, orders=orders)


def _message_ids(session: Session, campaign_id: int) -> dict[str, str]:
    """Return each recipient's local part and their email's message id."""
    from engine.models import CampaignMessage, Subscriber

    rows = session.execute(
        select(Subscriber.address, CampaignMessage.message_id)
        .join(Subscriber, Subscriber.id == CampaignMessage.subscriber_id)
        .where(CampaignMessage.campaign_id == campaign_id, CampaignMessage.status == "sent")
    )
    return {address.partition("@")[0]: message_id for address, message_id in rows}


def _delivery_events(
    session: Session, settings: Mapping[str, Any], campaign_id: int, sent_at: dt.datetime
) -> None:
    """Apply the delivery and open events SendGrid would have posted back, through the
    webhook's own ``apply_events`` (fixed event ids, so they could never count twice)."""
    from engine.campaigns.events import apply_events
    from engine.mail.base import MESSAGE_ID_ARG

    def event(name: str, message_id: str, hours: float) -> dict[str, Any]:
        at = sent_at + dt.timedelta(hours=hours)
        return {"event": name, "sg_event_id": f"demo-{name}-{message_id}",
                "timestamp": int(at.timestamp()), MESSAGE_ID_ARG: message_id}  # fmt: skip

    events: list[dict[str, Any]] = []
    for who, message_id in sorted(_message_ids(session, campaign_id).items()):
        delivered = who != NOT_DELIVERED
        events.append(event("delivered" if delivered else "deferred", message_id, 0.01))
        opened = CLICKS.get(who, OPENS.get(who))
        if delivered and opened is not None:
            event_at = max(0.05, opened - 0.1)  # a click comes after the open
            events.append(event("open", message_id, event_at))
    apply_events(session, settings, events, sent_at + dt.timedelta(days=1))


def _clicks(
    session: Session, settings: Mapping[str, Any], campaign_id: int, sent_at: dt.datetime
) -> None:
    """Record the page views of people who followed the email's link (the ``et`` token)."""
    from engine.campaigns import tracked_url
    from engine.pageviews import PendingView, read_view, store_page_views, tracking_site
    from engine.waitlist import site_urls

    site = tracking_site(settings)
    page = site_urls(settings).product(CAMPAIGN_HANDLE)
    tokens = _message_ids(session, campaign_id)
    views: list[PendingView] = []
    for n, (who, hours) in enumerate(CLICKS.items(), start=1):
        if who not in tokens:
            continue
        view = read_view(
            site,
            page=tracked_url(page, campaign_id, tokens[who]),
            referrer="",
            params=None,
            ip=f"192.0.2.{n}",  # documentation range; only ever hashed, never stored
            user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            now=sent_at + dt.timedelta(hours=hours),
        )
        if isinstance(view, PendingView):
            views.append(view)
    store_page_views(session, site, views)


def _orders(session: Session, settings: Mapping[str, Any], sent_at: dt.datetime) -> int:
    """Store the demo orders (as an orders export would) and attribute them; return how many."""
    from engine.orders import LineRecord, OrderRecord, attribute_orders, store_orders

    records = [
        OrderRecord(
            name=order.name,
            external_id=None,
            address=f"{order.who}@{_DOMAIN}",
            ordered_at=sent_at + dt.timedelta(hours=order.hours),
            currency="USD",
            total=PRICE * order.quantity,
            financial_status="paid",
            lines=[LineRecord(CAMPAIGN_SKU, TITLE, order.quantity, PRICE)],
        )
        for order in ORDERS
    ]
    report = store_orders(session, records, "csv")
    window = float(settings["ATTRIBUTION_WINDOW_DAYS"])
    attribute_orders(session, order_ids=report.stored, window_days=window)
    return len(report.stored)
