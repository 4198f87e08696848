"""Tables: the catalog (products, variants, stock transitions)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from engine.db import Base, Money, Str255, Timestamp, UTCDateTime, utcnow

PRODUCT_STATUSES = ("active", "draft", "archived")
INVENTORY_POLICIES = ("deny", "continue")


class Product(Base):
    """A catalog product; its page state follows its status and its variants."""

    __tablename__ = "product"

    id: Mapped[int] = mapped_column(primary_key=True)
    handle: Mapped[Str255] = mapped_column(unique=True)
    title: Mapped[str] = mapped_column(String(500))
    body_html: Mapped[str] = mapped_column(Text, default="")
    vendor: Mapped[str] = mapped_column(String(255), default="")
    product_type: Mapped[str] = mapped_column(String(255), default="")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="active")
    published: Mapped[bool] = mapped_column(Boolean, default=True)
    seo_title: Mapped[str] = mapped_column(String(500), default="")
    seo_description: Mapped[str] = mapped_column(Text, default="")
    option_names: Mapped[list[Any]] = mapped_column(default=list)
    images: Mapped[list[Any]] = mapped_column(default=list)
    metafields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    updated_at: Mapped[Timestamp] = mapped_column(default=utcnow)

    variants: Mapped[list[Variant]] = relationship(
        back_populates="product",
        order_by="Variant.position",
        cascade="all, delete-orphan",
    )

    @property
    def sellable(self) -> bool:
        """Return True when some variant can be bought now."""
        return any(variant.sellable for variant in self.variants)


class Variant(Base):
    """A sellable unit of a product, keyed by SKU or (product, option values)."""

    __tablename__ = "variant"
    __table_args__ = (
        UniqueConstraint("product_id", "option_key", name="uq_variant_product_options"),
        Index("ix_variant_sellable", "sellable"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"))
    sku: Mapped[str | None] = mapped_column(String(255), unique=True)
    option_key: Mapped[str] = mapped_column(String(765))
    option_values: Mapped[list[Any]] = mapped_column(default=list)
    position: Mapped[int] = mapped_column(Integer, default=1)
    price: Mapped[Money]
    compare_at_price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    barcode: Mapped[str] = mapped_column(String(64), default="")
    grams: Mapped[int] = mapped_column(Integer, default=0)
    image: Mapped[str] = mapped_column(String(2000), default="")
    inventory_tracked: Mapped[bool] = mapped_column(Boolean, default=True)
    inventory_policy: Mapped[str] = mapped_column(String(20), default="deny")
    stock: Mapped[int] = mapped_column(Integer, default=0)
    sellable: Mapped[bool] = mapped_column(Boolean, default=False)
    stock_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    product: Mapped[Product] = relationship(back_populates="variants")

    @property
    def backorder(self) -> bool:
        """Return True when the variant sells only because backorders are allowed."""
        return self.inventory_tracked and self.stock <= 0 and self.inventory_policy == "continue"

    @property
    def title(self) -> str:
        """Return the option values joined for display (``Default Title`` when none)."""
        return " / ".join(str(v) for v in self.option_values) or "Default Title"


class StockTransition(Base):
    """A variant crossing between sellable and not sellable, recorded with the stock change."""

    __tablename__ = "stock_transition"
    __table_args__ = (Index("ix_stock_transition_pending", "restock", "handled_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variant.id", ondelete="CASCADE"))
    product_handle: Mapped[Str255]
    sku: Mapped[str | None] = mapped_column(String(255))
    restock: Mapped[bool] = mapped_column(Boolean)
    stock_before: Mapped[int | None] = mapped_column(Integer)
    stock_after: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    handled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# --- waitlists -----------------------------------------------------------------------------

SIGNUP_STATUSES = ("pending", "confirmed", "left", "notified")
#: Why a signup stopped waiting: left from the manage page, unsubscribed (one product or
#: everything), or its person was erased.
LEAVE_REASONS = ("left", "unsubscribed", "erased")


class Subscriber(Base):
    """A person on one or more waitlists, known by their normalized email address."""

    __tablename__ = "subscriber"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The de-duplication key: the address with domain and local part lower-cased.
    address: Mapped[str] = mapped_column(String(320), unique=True)
    #: The address as the person typed it (domain normalized), used to write to them.
    email: Mapped[str] = mapped_column(String(320))
    #: A random value inside every link token; a reused row id can never match old links.
    token_key: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)

    signups: Mapped[list[Signup]] = relationship(
        back_populates="subscriber", order_by="Signup.signed_up_at"
    )


class Signup(Base):
    """One person waiting for one product (``sku`` empty) or one of its variants."""

    __tablename__ = "waitlist_signup"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "product_handle", "sku", name="uq_signup_target"),
        Index("ix_signup_waiting", "product_handle", "sku", "status"),
        Index("ix_signup_pending", "status", "pending_since"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: NULL once the person is erased: the row stays as an anonymous count.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriber.id", ondelete="SET NULL")
    )
    product_handle: Mapped[Str255]
    sku: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    left_reason: Mapped[str] = mapped_column(String(20), default="")
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    #: When the person asked to be told; earlier signups are told first.
    signed_up_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    #: Unconfirmed signups are purged a number of days after this (an import restarts it).
    pending_since: Mapped[Timestamp] = mapped_column(default=utcnow)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    left_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    confirmation_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: The consent record: which text (see ``consent_text``) was agreed to, and when.
    consent_version: Mapped[str] = mapped_column(String(64))
    consent_at: Mapped[Timestamp]
    #: How the signup arrived: "form", "json" or "import".
    via: Mapped[str] = mapped_column(String(10), default="form")
    #: Keyed hash of the client address (never the address itself).
    client_hash: Mapped[str | None] = mapped_column(String(64))
    page: Mapped[str] = mapped_column(String(2000), default="")
    referrer: Mapped[str] = mapped_column(String(2000), default="")
    utm: Mapped[dict[str, Any]] = mapped_column(default=dict)
    channel: Mapped[str] = mapped_column(String(20), default="direct")
    source: Mapped[str] = mapped_column(String(100), default="")
    medium: Mapped[str] = mapped_column(String(100), default="")
    campaign: Mapped[str] = mapped_column(String(100), default="")

    subscriber: Mapped[Subscriber | None] = relationship(back_populates="signups")


class ConsentText(Base):
    """Every consent wording ever agreed to, by version (a digest of the text)."""

    __tablename__ = "consent_text"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)


class Suppression(Base):
    """An address never to be mailed again, kept as a keyed hash so it survives erasure."""

    __tablename__ = "suppression"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)


class RateLimit(Base):
    """A fixed-window hit counter, in the database so every web worker sees the same count."""

    __tablename__ = "rate_limit"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    window_start: Mapped[Timestamp] = mapped_column(index=True)
    hits: Mapped[int] = mapped_column(Integer)


MAIL_STATUSES = ("queued", "sending", "sent", "failed", "unknown")


class MailMessage(Base):
    """One outgoing email in the durable queue; enqueued in a request, sent by the scheduler."""

    __tablename__ = "mail_message"
    __table_args__ = (
        Index("ix_mail_message_due", "status", "next_attempt_at"),
        Index("ix_mail_message_to_email", "to_email"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Opaque id sent along (Message-ID, outbox file, SendGrid custom_args); never personal.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The caller's name for the logical email: enqueuing it again is a no-op.
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    to_email: Mapped[str] = mapped_column(String(320))
    to_name: Mapped[str] = mapped_column(String(255), default="")
    sender: Mapped[str] = mapped_column(String(500), default="")
    reply_to: Mapped[str] = mapped_column(String(500), default="")
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    custom_args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    substitutions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    categories: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    claim_token: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str] = mapped_column(Text, default="")
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# --- page views ------------------------------------------------------------------------------


class VisitorSalt(Base):
    """The random key of one day's visitor hashes; deleted two days on, so hashes expire."""

    __tablename__ = "visitor_salt"

    #: The day in ``TIMEZONE`` the salt keys.
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    salt: Mapped[str] = mapped_column(String(64))  # hex of 32 random bytes
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)


class PageView(Base):
    """One page view as it arrived (never an IP or user agent); purged after roll-up."""

    __tablename__ = "page_view"
    # Day and path first (the roll-ups, purges and reports select by day), then what the
    # report and the roll-ups count, so today's raw views are read from the index alone.
    __table_args__ = (
        Index("ix_page_view_day_path_source", "day", "path", "channel", "source", "visitor"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    #: The day in ``TIMEZONE`` the view happened.
    day: Mapped[dt.date] = mapped_column(Date)
    ts: Mapped[Timestamp]
    path: Mapped[str] = mapped_column(String(512))
    channel: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(100), default="")
    medium: Mapped[str] = mapped_column(String(100), default="")
    campaign: Mapped[str] = mapped_column(String(100), default="")
    #: The restock email link token (``et``) the visit landed with, for campaign attribution.
    engine_token: Mapped[str] = mapped_column(String(256), default="")
    #: The day's anonymous visitor id (keyed hash; its salt is deleted after two days).
    visitor: Mapped[str] = mapped_column(String(32))
    #: True when the view came from outside the site (a landing), False for a click within it.
    entry: Mapped[bool] = mapped_column(Boolean)


class PageVisit(Base):
    """A visitor's running visit: where it came from, so clicks within it keep that source."""

    __tablename__ = "page_visit"
    __table_args__ = (Index("ix_page_visit_last_ts", "last_ts"),)

    #: The visit's visitor id (see ``PageView.visitor``); purged once the visit has ended.
    visitor: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_ts: Mapped[Timestamp]
    channel: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(100), default="")
    medium: Mapped[str] = mapped_column(String(100), default="")
    campaign: Mapped[str] = mapped_column(String(100), default="")
    engine_token: Mapped[str] = mapped_column(String(256), default="")


class PageViewDaily(Base):
    """Views and unique visitors of one page on one day, kept forever."""

    __tablename__ = "page_view_daily"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    path: Mapped[str] = mapped_column(String(512), primary_key=True)
    views: Mapped[int] = mapped_column(Integer)
    visitors: Mapped[int] = mapped_column(Integer)
    entries: Mapped[int] = mapped_column(Integer)


class PageViewSourceDaily(Base):
    """Views and unique visitors of one page on one day from one channel and source."""

    __tablename__ = "page_view_source_daily"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    path: Mapped[str] = mapped_column(String(512), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    views: Mapped[int] = mapped_column(Integer)
    visitors: Mapped[int] = mapped_column(Integer)


class JobLock(Base):
    """One scheduled job's lease (who may run it now) and how its last run went."""

    __tablename__ = "job_lock"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # "<host>:<pid>:<random>" of the scheduler that last took the lease.
    owner: Mapped[str] = mapped_column(String(255), default="")
    # NULL when nobody holds it; a holder that died loses it when this time passes.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Empty when the last run succeeded.
    last_error: Mapped[str] = mapped_column(Text, default="")


class SchedulerHeartbeat(Base):
    """A running scheduler (``engine worker`` or ``engine serve``), beating every few seconds."""

    __tablename__ = "scheduler_heartbeat"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[Timestamp]
    beat_at: Mapped[Timestamp]
    # Set on a clean shutdown; a crashed scheduler just stops beating.
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# --- restock campaigns -----------------------------------------------------------------------


class Campaign(Base):
    """A restock campaign: one product, one restock cycle, told in waves sized to the stock."""

    __tablename__ = "campaign"
    __table_args__ = (Index("ix_campaign_status_due", "status", "next_wave_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    product_handle: Mapped[Str255] = mapped_column(index=True)
    #: The SKUs that came back (their waiters and the product's are told); empty = all.
    skus: Mapped[list[Any]] = mapped_column(default=list)
    #: See ``engine.campaigns.status``: draft, scheduled, sending, paused, finished, cancelled.
    status: Mapped[str] = mapped_column(String(20), default="draft")
    #: Why it is in its status when that needs saying (paused, finished).
    reason: Mapped[str] = mapped_column(Text, default="")
    #: "restock" (detected) or "manual" (``engine campaigns create``).
    origin: Mapped[str] = mapped_column(String(20), default="restock")
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    updated_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    #: When the next wave is due (NULL: none planned).
    next_wave_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: When the product's pages were rebuilt for this campaign (before its first wave).
    pages_built_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    approval_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class CampaignWave(Base):
    """One wave of a campaign: the stock read before it and how many people it took."""

    __tablename__ = "campaign_wave"
    __table_args__ = (UniqueConstraint("campaign_id", "number", name="uq_campaign_wave_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    #: Units in stock when the wave was planned (NULL: not limited, e.g. backorders).
    stock: Mapped[int | None] = mapped_column(Integer)
    people: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)


CAMPAIGN_MESSAGE_STATUSES = ("queued", "sending", "unknown", "sent", "failed", "skipped")


class CampaignMessage(Base):
    """One person's email of one campaign; the unique key makes it at most one per person."""

    __tablename__ = "campaign_message"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id", name="uq_campaign_message_person"),
        Index("ix_campaign_message_due", "status", "next_attempt_at"),
        Index("ix_campaign_message_campaign_status", "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    #: NULL once the person is erased; the row stays as an anonymous count.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriber.id", ondelete="SET NULL")
    )
    #: The signups this email uses up (ids), marked ``notified`` once it has left.
    signup_ids: Mapped[list[Any]] = mapped_column(default=list)
    wave: Mapped[int] = mapped_column(Integer)
    #: Opaque id: SendGrid custom_args, Message-ID, and the link token (``et``) of the email.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: What the provider's events said last: delivered, deferred, bounced, blocked, dropped.
    delivery: Mapped[str] = mapped_column(String(20), default="")
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    clicked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ProviderEvent(Base):
    """A SendGrid event already applied, by ``sg_event_id``: a redelivery changes nothing."""

    __tablename__ = "provider_event"
    __table_args__ = (Index("ix_provider_event_message", "message_id"),)

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event: Mapped[str] = mapped_column(String(30))
    message_id: Mapped[str] = mapped_column(String(128), default="")
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[Timestamp] = mapped_column(default=utcnow)


# --- orders (conversion attribution) ---------------------------------------------------------

ORDER_SOURCES = ("csv", "hook")
ATTRIBUTIONS = ("direct", "assisted")


class Order(Base):
    """A store order, imported from a Shopify orders export or posted to ``/hooks/orders``."""

    __tablename__ = "shop_order"
    __table_args__ = (Index("ix_shop_order_address", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The store's order name ("#1001"), or its id when the sender gives no name.
    name: Mapped[Str255] = mapped_column(unique=True)
    #: The store's own order id, when known (Shopify's ``Id`` column / ``id`` field).
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: The buyer's normalized address, for matching campaign recipients; NULL once erased.
    address: Mapped[str | None] = mapped_column(String(320))
    ordered_at: Mapped[Timestamp]
    currency: Mapped[str] = mapped_column(String(3), default="")
    total: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    financial_status: Mapped[str] = mapped_column(String(30), default="")
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.position", cascade="all, delete-orphan"
    )


class OrderLine(Base):
    """One line item of an order, and the restock email it is a conversion of, if any."""

    __tablename__ = "order_line"
    __table_args__ = (
        UniqueConstraint("order_id", "position", name="uq_order_line_position"),
        Index("ix_order_line_product", "product_handle"),
        Index("ix_order_line_campaign", "campaign_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("shop_order.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str | None] = mapped_column(String(255))
    #: The SKU's product when the order was stored (a later SKU move keeps the sale's product).
    product_handle: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(500), default="")
    quantity: Mapped[int] = mapped_column(Integer)
    price: Mapped[Money]
    #: Set by attribution: the restock campaign and message this line is a conversion of.
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="SET NULL"))
    campaign_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaign_message.id", ondelete="SET NULL")
    )
    #: "direct" (a click on the email came first), "assisted", or "" (not a conversion).
    attribution: Mapped[str] = mapped_column(String(10), default="")
    attributed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    order: Mapped[Order] = relationship(back_populates="lines")


# --- search data -----------------------------------------------------------------------------

SEARCH_KINDS = ("pages", "queries")


class SearchDataset(Base):
    """One imported Search Console table (pages or queries) for one date range and search type.

    Importing the same kind, range and search type again replaces the rows (never doubles).
    """

    __tablename__ = "search_dataset"
    __table_args__ = (
        UniqueConstraint("kind", "search_type", "date_from", "date_to", name="uq_search_dataset"),
        Index("ix_search_dataset_range", "date_from", "date_to"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: "pages" or "queries".
    kind: Mapped[str] = mapped_column(String(10))
    #: Search Console's search type filter ("web", "image", "video", "news", "discover").
    search_type: Mapped[str] = mapped_column(String(20), default="web")
    #: First and last day (inclusive) the figures cover.
    date_from: Mapped[dt.date] = mapped_column(Date)
    date_to: Mapped[dt.date] = mapped_column(Date)
    #: The file it came from (name only), for the record.
    filename: Mapped[str] = mapped_column(String(500), default="")
    rows: Mapped[int] = mapped_column(Integer, default=0)
    imported_at: Mapped[Timestamp] = mapped_column(default=utcnow)


class SearchRow(Base):
    """One page or query of a Search Console table, with the product it maps to, if any."""

    __tablename__ = "search_row"
    __table_args__ = (
        Index("ix_search_row_dataset", "dataset_id"),
        Index("ix_search_row_product", "product_handle"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("search_dataset.id", ondelete="CASCADE"))
    #: The page's path on the site ("/products/tent/") or the query text.
    key: Mapped[str] = mapped_column(String(2000))
    #: The product the page or query maps to; NULL for other pages and unmapped queries.
    product_handle: Mapped[str | None] = mapped_column(String(255))
    clicks: Mapped[int] = mapped_column(Integer)
    impressions: Mapped[int] = mapped_column(Integer)
    #: Average position as Search Console reports it (NULL when the export has none).
    position: Mapped[float | None] = mapped_column(Float)
