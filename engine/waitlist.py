"""Waitlists: signups with consent, double opt-in, leaving, suppression, purge and data rights.

Functions here take plain values and a session and never commit; the web service, the CLI
and the scheduler own the transactions.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import math
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, cast

import jinja2
from itsdangerous import BadData, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from sqlalchemy import CursorResult, Result, Table, case, delete, literal, select
from sqlalchemy.orm import Session

from engine.db import UTCDateTime, dialect_insert
from engine.mail import render_email
from engine.mailqueue import enqueue, forget_address
from engine.models import (
    ConsentText,
    Product,
    RateLimit,
    Signup,
    Subscriber,
    Suppression,
    Variant,
)
from engine.pages import consent_version, format_money
from engine.settings import DEFAULTS
from engine.tracking import classify_source
from engine.urls import SiteURLs

#: Longest address accepted (RFC 5321 limits a forward path to 256 octets, 254 usable).
MAX_EMAIL_LENGTH = 254
#: The scope of a token that covers every waitlist of its person.
SCOPE_ALL = "*"
#: Statuses of a signup that is still waiting (only ``confirmed`` ones are ever told).
WAITING = ("pending", "confirmed")

# One salt per purpose, so a token made for one route is refused by every other.
CONFIRM_SALT = "waitlist-confirm"
MANAGE_SALT = "waitlist-manage"
UNSUBSCRIBE_SALT = "waitlist-unsubscribe"

#: The consent wording recorded for rows brought over by ``engine waitlist import``.
IMPORT_CONSENT_TEXT = (
    "Signed up with the store's previous back-in-stock tool; brought over by "
    "`engine waitlist import`."
)

_SELLABLE_PRODUCT_STATUSES = ("active",)


class WaitlistError(ValueError):
    """A signup names something that cannot be waited for; ``field`` says which input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class InvalidEmail(ValueError):
    """An email address that is not usable (syntax, length, special-use domain)."""


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class EmailAddress:
    """An address as written to (``display``) and as de-duplicated (``address``)."""

    display: str
    address: str


def normalize_email(raw: str) -> EmailAddress:
    """Validate an address (syntax, special-use domains, no DNS) and return both forms."""
    text = raw.strip()
    if not text:
        raise InvalidEmail("Enter your email address.")
    if len(text) > MAX_EMAIL_LENGTH:
        raise InvalidEmail(f"An email address has at most {MAX_EMAIL_LENGTH} characters.")
    import email_validator  # slow to import; only signups and imports validate addresses

    try:
        info = email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    display = info.normalized
    # Mailbox names are case-sensitive by the letter of RFC 5321 and case-insensitive in
    # practice everywhere; one person typing "Ana@" and "ana@" is one subscriber.
    return EmailAddress(display=display, address=display.lower())


def address_hash(secret: str, address: str) -> str:
    """Return the keyed hash (HMAC-SHA256) of a normalized address, as suppressions keep it."""
    if not secret:
        raise ValueError("address_hash needs a secret (an unkeyed address hash is reversible)")
    message = b"email-address\x00" + address.encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def is_suppressed(session: Session, secret: str, address: str) -> bool:
    """Return True when the address must never be mailed or signed up again."""
    key = address_hash(secret, address)
    return session.get(Suppression, key) is not None


def suppress(session: Session, secret: str, address: str, reason: str, now: dt.datetime) -> None:
    """Add an address to the suppression list (a no-op when it is there already)."""
    _insert_ignore(
        session,
        Suppression,
        {"address_hash": address_hash(secret, address), "reason": reason, "created_at": now},
        ["address_hash"],
    )


# --------------------------------------------------------------------------- consent


def record_consent_text(session: Session, text: str, now: dt.datetime) -> str:
    """Store a consent wording once and return its version."""
    version = consent_version(text)
    _insert_ignore(
        session, ConsentText, {"version": version, "text": text, "created_at": now}, ["version"]
    )
    return version


def consent_for(session: Session, text: str, shown_version: str, now: dt.datetime) -> str:
    """Return the version to record: the one the page showed if known, else the current text."""
    current = record_consent_text(session, text, now)
    # A page built before the wording changed still shows the old text: record that one.
    if (
        shown_version
        and shown_version != current
        and session.get(ConsentText, shown_version) is not None
    ):
        return shown_version
    return current


# --------------------------------------------------------------------------- rate limits


def hit_rate_limit(
    session: Session, key: str, limit: int, window_seconds: int, now: dt.datetime
) -> int:
    """Count one hit on ``key``; return 0 when within the limit, else seconds to wait.

    A fixed window per key, counted with one atomic upsert in the database, so every web
    worker shares the count. A limit of 0 or less turns the limit off.
    """
    if limit <= 0:
        return 0
    table = cast(Table, RateLimit.__table__)
    starts = literal(now, UTCDateTime())
    expired = table.c.window_start <= now - dt.timedelta(seconds=window_seconds)
    insert = dialect_insert(_dialect(session))
    statement = (
        insert(table)
        .values(key=key, window_start=now, hits=1)
        .on_conflict_do_update(
            index_elements=["key"],
            set_={
                "hits": case((expired, 1), else_=table.c.hits + 1),
                "window_start": case((expired, starts), else_=table.c.window_start),
            },
        )
        .returning(table.c.hits, table.c.window_start)
    )
    hits, window_start = session.execute(statement).one()
    if hits <= limit:
        return 0
    remaining = (window_start + dt.timedelta(seconds=window_seconds) - now).total_seconds()
    return max(1, math.ceil(remaining))


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """What a signup waits for: a product (``sku`` empty) or one variant of it."""

    handle: str
    sku: str
    title: str
    variant_title: str
    sellable: bool
    buy_url: str
    image: str
    price: Decimal | None


def resolve_target(
    session: Session,
    urls: SiteURLs,
    *,
    handle: str,
    sku: str,
    coming_soon: Mapping[str, Mapping[str, Any]],
) -> Target:
    """Find the product or variant a signup names, or raise ``WaitlistError``.

    ``coming_soon`` maps the handles of products declared only in content to their front
    matter (title, image, price). A catalog product must be active and published.
    """
    if sku:
        variant = session.scalar(select(Variant).where(Variant.sku == sku))
        if variant is None or not _listed(variant.product):
            raise WaitlistError("variant", "We don't know that variant.")
        product = variant.product
        if handle and handle != product.handle:
            raise WaitlistError("variant", "That variant belongs to another product.")
        return Target(
            handle=product.handle,
            sku=sku,
            title=product.title,
            variant_title="" if variant.title == "Default Title" else variant.title,
            sellable=bool(variant.sellable),
            buy_url=urls.buy(product.handle, variant.id),
            image=variant.image or _first_image(product),
            price=variant.price,
        )
    if not handle:
        raise WaitlistError("product", "Choose a product or one of its variants.")
    listed = session.scalar(select(Product).where(Product.handle == handle))
    if listed is not None and _listed(listed):
        prices = [variant.price for variant in listed.variants]
        return Target(
            handle=handle,
            sku="",
            title=listed.title,
            variant_title="",
            sellable=listed.sellable,
            buy_url=urls.buy(handle),
            image=_first_image(listed),
            price=min(prices) if prices else None,
        )
    meta = coming_soon.get(handle)
    if meta is None:
        raise WaitlistError("product", "We don't know that product.")
    price = meta.get("price")
    return Target(
        handle=handle,
        sku="",
        title=str(meta.get("title") or handle),
        variant_title="",
        sellable=False,
        buy_url="",
        image=str(meta.get("image") or ""),
        price=Decimal(str(price)) if price is not None else None,
    )


def _listed(product: Product) -> bool:
    return product.status in _SELLABLE_PRODUCT_STATUSES and bool(product.published)


def _first_image(product: Product) -> str:
    for image in product.images or []:
        if isinstance(image, Mapping) and image.get("src"):
            return str(image["src"])
        if isinstance(image, str) and image:
            return image
    return ""


# --------------------------------------------------------------------------- signing up


@dataclass(frozen=True)
class SignupRequest:
    """A validated signup as the form or the JSON API sent it."""

    email: EmailAddress
    quantity: int
    consent_text: str
    shown_consent_version: str = ""
    page: str = ""
    referrer: str = ""
    utm: Mapping[str, str] = field(default_factory=dict)
    client_hash: str | None = None
    via: str = "form"
    site_host: str = ""


@dataclass(frozen=True)
class SignupOutcome:
    """What a signup did: ``pending`` (stored, or already there) or ``discarded`` (suppressed).

    ``send_confirmation`` says a confirmation email is due now (the window and the daily
    cap allowing); the caller queues it in the same transaction.
    """

    status: str
    subscriber: Subscriber | None = None
    signup: Signup | None = None
    send_confirmation: bool = False


def sign_up(
    session: Session,
    settings: Mapping[str, Any],
    request: SignupRequest,
    target: Target,
    now: dt.datetime,
) -> SignupOutcome:
    """Store (or find) the person's signup for a target; idempotent for repeats.

    A repeat adds no row and gets no second confirmation email within
    ``WAITLIST_CONFIRM_RESEND_MINUTES``; an address gets at most
    ``WAITLIST_CONFIRMATIONS_PER_DAY`` confirmation emails a day. A suppressed address
    is discarded (the caller answers as for any signup, revealing nothing).
    """
    secret = str(settings["SECRET_KEY"])
    if is_suppressed(session, secret, request.email.address):
        return SignupOutcome("discarded")
    subscriber = _subscriber_for(session, request.email, now)
    version = consent_for(session, request.consent_text, request.shown_consent_version, now)
    source = classify_source(
        request.referrer or None, request.page or None, request.utm, request.site_host or None
    )
    quantity = max(1, min(request.quantity, int(settings["WAITLIST_MAX_QUANTITY"])))
    signup = _signup_for(session, subscriber, target, now, version)
    if signup.status == "left":
        # Joining again is a new, explicit act: a fresh consent record and a new place in line.
        signup.status = "pending"
        signup.left_reason = ""
        signup.left_at = None
        signup.confirmed_at = None
        signup.confirmation_sent_at = None
        signup.signed_up_at = now
        signup.pending_since = now
    if signup.status == "pending":
        signup.consent_version = version
        signup.consent_at = now
        signup.quantity = quantity
        signup.via = request.via
        signup.client_hash = request.client_hash
        signup.page = request.page[:2000]
        signup.referrer = request.referrer[:2000]
        signup.utm = dict(request.utm)
        signup.channel = source.channel
        signup.source = source.source
        signup.medium = source.medium
        signup.campaign = source.campaign
    send = signup.status == "pending" and _confirmation_due(session, settings, signup, now)
    if send:
        signup.confirmation_sent_at = now
    session.flush()
    return SignupOutcome("pending", subscriber, signup, send)


def _confirmation_due(
    session: Session, settings: Mapping[str, Any], signup: Signup, now: dt.datetime
) -> bool:
    """Return True when a confirmation may go out now (resend window, then the daily cap)."""
    window = dt.timedelta(minutes=int(settings["WAITLIST_CONFIRM_RESEND_MINUTES"]))
    if signup.confirmation_sent_at is not None and now - signup.confirmation_sent_at < window:
        return False
    assert signup.subscriber is not None
    key = "confirm:" + address_hash(str(settings["SECRET_KEY"]), signup.subscriber.address)[:40]
    limit = int(settings["WAITLIST_CONFIRMATIONS_PER_DAY"])
    return hit_rate_limit(session, key, limit, 86400, now) == 0


def _subscriber_for(session: Session, email: EmailAddress, now: dt.datetime) -> Subscriber:
    """Return the subscriber for an address, creating it (safe against concurrent requests)."""
    subscriber = session.scalar(select(Subscriber).where(Subscriber.address == email.address))
    if subscriber is not None:
        return subscriber
    _insert_ignore(
        session,
        Subscriber,
        {
            "address": email.address,
            "email": email.display,
            "token_key": secrets.token_urlsafe(9),
            "created_at": now,
        },
        ["address"],
    )
    return session.scalars(select(Subscriber).where(Subscriber.address == email.address)).one()


def _signup_for(
    session: Session, subscriber: Subscriber, target: Target, now: dt.datetime, version: str
) -> Signup:
    """Return the person's signup row for a target, creating a pending one if there is none."""
    where = (
        Signup.subscriber_id == subscriber.id,
        Signup.product_handle == target.handle,
        Signup.sku == target.sku,
    )
    signup = session.scalar(select(Signup).where(*where))
    if signup is not None:
        return signup
    _insert_ignore(
        session,
        Signup,
        {
            "subscriber_id": subscriber.id,
            "product_handle": target.handle,
            "sku": target.sku,
            "status": "pending",
            "left_reason": "",
            "quantity": 1,
            "signed_up_at": now,
            "pending_since": now,
            "consent_version": version,
            "consent_at": now,
            "via": "form",
            "page": "",
            "referrer": "",
            "utm": {},
            "channel": "direct",
            "source": "",
            "medium": "",
            "campaign": "",
        },
        ["subscriber_id", "product_handle", "sku"],
    )
    return session.scalars(select(Signup).where(*where)).one()


# --------------------------------------------------------------------------- tokens and links


@dataclass(frozen=True)
class SubscriberToken:
    """What a manage or unsubscribe token says: whose, and which waitlists."""

    subscriber_id: int
    token_key: str
    scope: str


class TokenError(ValueError):
    """A link token that is forged, mangled or (for confirmation links) expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def confirm_token(secret: str, subscriber: Subscriber, signup: Signup) -> str:
    """Return the signed, expiring token of a signup's confirmation link."""
    serializer = URLSafeTimedSerializer(secret, salt=CONFIRM_SALT)
    return str(serializer.dumps([subscriber.id, subscriber.token_key, signup.id]))


def read_confirm_token(secret: str, token: str, max_age_seconds: int) -> tuple[int, str, int]:
    """Return (subscriber id, token key, signup id) from a confirmation token."""
    serializer = URLSafeTimedSerializer(secret, salt=CONFIRM_SALT)
    try:
        data = serializer.loads(token, max_age=max_age_seconds)
    except SignatureExpired:
        raise TokenError("This confirmation link has expired.", expired=True) from None
    except BadData:
        raise TokenError("This link is not valid.") from None
    if not (isinstance(data, list) and len(data) == 3):
        raise TokenError("This link is not valid.")
    subscriber_id, key, signup_id = data
    if not (isinstance(subscriber_id, int) and isinstance(key, str) and isinstance(signup_id, int)):
        raise TokenError("This link is not valid.")
    return subscriber_id, key, signup_id


def subscriber_token(secret: str, salt: str, subscriber: Subscriber, scope: str) -> str:
    """Return a never-expiring manage or unsubscribe token for a person and a scope."""
    serializer = URLSafeSerializer(secret, salt=salt)
    return str(serializer.dumps([subscriber.id, subscriber.token_key, scope]))


def read_subscriber_token(secret: str, salt: str, token: str) -> SubscriberToken:
    """Return what a manage or unsubscribe token says, or raise ``TokenError``."""
    serializer = URLSafeSerializer(secret, salt=salt)
    try:
        data = serializer.loads(token)
    except BadData:
        raise TokenError("This link is not valid.") from None
    if not (isinstance(data, list) and len(data) == 3):
        raise TokenError("This link is not valid.")
    subscriber_id, key, scope = data
    if not (isinstance(subscriber_id, int) and isinstance(key, str) and isinstance(scope, str)):
        raise TokenError("This link is not valid.")
    return SubscriberToken(subscriber_id, key, scope)


def token_subscriber(
    session: Session, token: SubscriberToken | tuple[int, str]
) -> Subscriber | None:
    """Return the subscriber a valid token names, or None when they are gone (erased)."""
    subscriber_id, key = (
        (token.subscriber_id, token.token_key) if isinstance(token, SubscriberToken) else token
    )
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or not hmac.compare_digest(subscriber.token_key, key):
        return None
    return subscriber


def site_urls(settings: Mapping[str, Any]) -> SiteURLs:
    """Return the URL helper for these settings."""
    return SiteURLs(
        str(settings["SITE_URL"]), str(settings.get("API_URL") or ""), str(settings["STORE_URL"])
    )


def confirm_url(settings: Mapping[str, Any], subscriber: Subscriber, signup: Signup) -> str:
    """Return the absolute confirmation link of a signup (on ``API_URL``)."""
    token = confirm_token(str(settings["SECRET_KEY"]), subscriber, signup)
    return site_urls(settings).api(f"/waitlist/confirm/{token}")


def manage_url(settings: Mapping[str, Any], subscriber: Subscriber) -> str:
    """Return the absolute link of the person's manage page (on ``API_URL``)."""
    token = subscriber_token(str(settings["SECRET_KEY"]), MANAGE_SALT, subscriber, SCOPE_ALL)
    return site_urls(settings).api(f"/waitlist/manage/{token}")


def unsubscribe_url(settings: Mapping[str, Any], subscriber: Subscriber, scope: str) -> str:
    """Return the absolute unsubscribe link for one product's waitlist or (``*``) everything."""
    token = subscriber_token(str(settings["SECRET_KEY"]), UNSUBSCRIBE_SALT, subscriber, scope)
    return site_urls(settings).api(f"/unsubscribe/{token}")


def unsubscribe_headers(
    settings: Mapping[str, Any], subscriber: Subscriber, scope: str
) -> dict[str, str]:
    """Return ``List-Unsubscribe`` (HTTPS, plus a mailto when set) and ``List-Unsubscribe-Post``."""
    value = f"<{unsubscribe_url(settings, subscriber, scope)}>"
    mailto = str(settings.get("WAITLIST_UNSUBSCRIBE_MAILTO") or "").strip()
    if mailto:
        value += f", <mailto:{mailto}?subject=unsubscribe>"
    return {"List-Unsubscribe": value, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def footer_links(settings: Mapping[str, Any], subscriber: Subscriber, scope: str) -> dict[str, str]:
    """Return the links every email's footer shows: manage, unsubscribe (scope) and everything."""
    return {
        "manage_url": manage_url(settings, subscriber),
        "unsubscribe_url": unsubscribe_url(settings, subscriber, scope),
        "unsubscribe_all_url": unsubscribe_url(settings, subscriber, SCOPE_ALL),
    }


def queue_confirmation(
    session: Session,
    settings: Mapping[str, Any],
    env: jinja2.Environment,
    subscriber: Subscriber,
    signup: Signup,
    target: Target,
    now: dt.datetime,
) -> None:
    """Render the double opt-in email for a signup and put it in the mail queue."""
    urls = site_urls(settings)
    days = int(settings["WAITLIST_UNCONFIRMED_DAYS"])
    links = footer_links(settings, subscriber, SCOPE_ALL)
    context = {
        "product_title": target.title,
        "variant_title": target.variant_title,
        "product_url": urls.absolute(urls.product(target.handle)),
        "image_url": urls.absolute(target.image) if target.image else "",
        "price": format_money(target.price, str(settings.get("CURRENCY") or "USD"))
        if target.price is not None
        else "",
        "confirm_url": confirm_url(settings, subscriber, signup),
        "valid_days": days,
        "manage_url": links["manage_url"],
        # Whoever did not ask for this email wants no more of any kind.
        "unsubscribe_url": links["unsubscribe_all_url"],
    }
    email = render_email(env, "waitlist_confirm", settings, context)
    enqueue(
        session,
        idempotency_key=f"waitlist-confirm:{signup.id}:{now.timestamp():.6f}",
        to=subscriber.email,
        subject=email.subject,
        html=email.html,
        text=email.text,
        headers=unsubscribe_headers(settings, subscriber, SCOPE_ALL),
        categories=("waitlist-confirm",),
        custom_args={"kind": "waitlist-confirm"},
    )


# --------------------------------------------------------------------------- confirm, leave


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation link did: ``confirmed``, ``already``, ``left`` or ``gone``."""

    status: str
    subscriber: Subscriber | None = None
    signup: Signup | None = None


def confirm(
    session: Session, secret: str, token: str, max_age_seconds: int, now: dt.datetime
) -> Confirmation:
    """Confirm the signup a token names (raises ``TokenError`` for bad or expired tokens)."""
    subscriber_id, key, signup_id = read_confirm_token(secret, token, max_age_seconds)
    subscriber = token_subscriber(session, (subscriber_id, key))
    signup = session.get(Signup, signup_id)
    if subscriber is None or signup is None or signup.subscriber_id != subscriber.id:
        return Confirmation("gone")
    if signup.status == "confirmed":
        return Confirmation("already", subscriber, signup)
    if signup.status != "pending":
        return Confirmation("left", subscriber, signup)
    signup.status = "confirmed"
    signup.confirmed_at = now
    return Confirmation("confirmed", subscriber, signup)


def waiting_signups(session: Session, subscriber: Subscriber) -> list[Signup]:
    """Return the person's signups that are still waiting, oldest first."""
    return list(
        session.scalars(
            select(Signup)
            .where(Signup.subscriber_id == subscriber.id, Signup.status.in_(WAITING))
            .order_by(Signup.signed_up_at, Signup.id)
        )
    )


def leave(
    session: Session, subscriber: Subscriber, signup_id: int, now: dt.datetime, reason: str = "left"
) -> Signup | None:
    """End one of the person's signups (not a suppression); None when it is not theirs."""
    signup = session.get(Signup, signup_id)
    if signup is None or signup.subscriber_id != subscriber.id:
        return None
    if signup.status in WAITING:
        _end(signup, reason, now)
    return signup


def unsubscribe(
    session: Session, secret: str, subscriber: Subscriber, scope: str, now: dt.datetime
) -> int:
    """Leave one product's waitlists, or (scope ``*``) everything plus a suppression.

    Returns how many signups stopped waiting.
    """
    if scope == SCOPE_ALL:
        suppress(session, secret, subscriber.address, "unsubscribed", now)
    ended = 0
    for signup in waiting_signups(session, subscriber):
        if scope in (SCOPE_ALL, signup.product_handle):
            _end(signup, "unsubscribed", now)
            ended += 1
    return ended


def _end(signup: Signup, reason: str, now: dt.datetime) -> None:
    signup.status = "left"
    signup.left_reason = reason
    signup.left_at = now


# --------------------------------------------------------------------------- purge


@dataclass(frozen=True)
class PurgeReport:
    """What a purge removed."""

    signups: int
    subscribers: int
    rate_limits: int


def purge_unconfirmed(
    session: Session,
    now: dt.datetime,
    days: int = int(DEFAULTS["WAITLIST_UNCONFIRMED_DAYS"]),
) -> PurgeReport:
    """Delete signups left unconfirmed for ``days``, people left with none, and old counters.

    Pass ``days=settings["WAITLIST_UNCONFIRMED_DAYS"]``. Imported unconfirmed rows age from
    the import (their ``pending_since``), not from their original signup date.
    """
    cutoff = now - dt.timedelta(days=days)
    signups = _rowcount(
        session.execute(
            delete(Signup).where(Signup.status == "pending", Signup.pending_since < cutoff)
        )
    )
    orphans = _rowcount(
        session.execute(
            delete(Subscriber).where(
                ~select(Signup.id).where(Signup.subscriber_id == Subscriber.id).exists()
            )
        )
    )
    # The longest window in use is the day of the confirmation cap.
    counters = _rowcount(
        session.execute(
            delete(RateLimit).where(RateLimit.window_start < now - dt.timedelta(days=1))
        )
    )
    return PurgeReport(signups, orphans, counters)


# --------------------------------------------------------------------------- export


EXPORT_COLUMNS = (
    "email",
    "product",
    "variant",
    "quantity",
    "signed_up_at",
    "confirmed",
    "confirmed_at",
    "consent_version",
    "consent_at",
    "channel",
    "source",
    "page",
)


def export_rows(session: Session, product: str | None = None) -> Iterator[dict[str, str]]:
    """Yield every waiting signup (pending and confirmed) as a CSV row, oldest first."""
    query = (
        select(Signup, Subscriber)
        .join(Subscriber, Signup.subscriber_id == Subscriber.id)
        .where(Signup.status.in_(WAITING))
        .order_by(Signup.product_handle, Signup.signed_up_at, Signup.id)
    )
    if product:
        query = query.where(Signup.product_handle == product)
    for signup, subscriber in session.execute(query):
        yield {
            "email": subscriber.email,
            "product": signup.product_handle,
            "variant": signup.sku,
            "quantity": str(signup.quantity),
            "signed_up_at": _iso(signup.signed_up_at),
            "confirmed": "true" if signup.status == "confirmed" else "false",
            "confirmed_at": _iso(signup.confirmed_at),
            "consent_version": signup.consent_version,
            "consent_at": _iso(signup.consent_at),
            "channel": signup.channel,
            "source": signup.source,
            "page": signup.page,
        }


def write_export(session: Session, out: IO[str], product: str | None = None) -> int:
    """Write the waitlist as CSV (``EXPORT_COLUMNS``) and return the number of rows."""
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in export_rows(session, product):
        writer.writerow(row)
        count += 1
    return count


def _iso(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- erasure


@dataclass(frozen=True)
class Erasure:
    """What erasing a person removed."""

    found: bool
    signups_anonymized: int
    mail_removed: int
    suppressed: bool
    #: Orders that lose the address (they stay as anonymous sales).
    orders_anonymized: int = 0


def forget(session: Session, secret: str, email: str, now: dt.datetime) -> Erasure:
    """Remove a person's personal data everywhere; anonymous signup rows and suppression stay.

    The subscriber row goes; each signup keeps product, variant, quantity, dates, status,
    channel and consent version, and loses its link to the person, client hash, referrer,
    page and UTM values. Queued mail to the address is deleted.
    """
    try:
        address = normalize_email(email).address
    except InvalidEmail:
        address = email.strip().lower()
    mail_removed = forget_address(session, address)
    # Imported here: engine.orders reads addresses with this module's normalize_email.
    from engine.orders import forget_orders

    orders = forget_orders(session, address)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.address == address))
    suppressed = is_suppressed(session, secret, address)
    if subscriber is None:
        return Erasure(False, 0, mail_removed, suppressed, orders)
    signups = list(session.scalars(select(Signup).where(Signup.subscriber_id == subscriber.id)))
    for signup in signups:
        if signup.status in WAITING:
            _end(signup, "erased", now)
        signup.subscriber_id = None
        signup.subscriber = None
        signup.client_hash = None
        signup.referrer = ""
        signup.page = ""
        signup.utm = {}
        signup.campaign = ""
    anonymized = len(signups)
    session.flush()
    session.delete(subscriber)
    session.flush()
    return Erasure(True, anonymized, mail_removed, suppressed, orders)


# --------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    """What ``import_waitlist`` did (or, on a dry look, would do)."""

    created: int = 0
    updated: int = 0
    confirmed: int = 0
    unchanged: int = 0
    suppressed: int = 0
    left: int = 0
    duplicates: int = 0


class WaitlistImportError(ValueError):
    """A waitlist file with problems; nothing was imported. ``errors`` are ``file:line: …``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


IMPORT_COLUMNS = ("email", "variant", "product", "signed_up_at", "confirmed", "quantity")
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n", ""}


@dataclass
class _ImportRow:
    line: int
    email: EmailAddress
    target: Target
    signed_up_at: dt.datetime
    confirmed: bool
    quantity: int


def import_waitlist(
    session: Session,
    settings: Mapping[str, Any],
    path: Path,
    now: dt.datetime,
    coming_soon: Mapping[str, Mapping[str, Any]] | None = None,
) -> ImportReport:
    """Import a waitlist CSV from another back-in-stock tool, all or nothing.

    Raises ``WaitlistImportError`` listing every bad line. Idempotent: a row already there
    changes nothing except that the earlier signup date wins and a confirmation is kept.
    Unconfirmed rows stay pending, are never emailed and age from the import; suppressed
    addresses are skipped; a person who left a waitlist is not put back on it.
    """
    rows = _read_import(session, settings, path, coming_soon or {}, now)
    secret = str(settings["SECRET_KEY"])
    version = record_consent_text(session, IMPORT_CONSENT_TEXT, now)
    report = ImportReport()
    merged: dict[tuple[str, str, str], _ImportRow] = {}
    for row in rows:
        key = (row.email.address, row.target.handle, row.target.sku)
        first = merged.get(key)
        if first is None:
            merged[key] = row
            continue
        report.duplicates += 1
        first.signed_up_at = min(first.signed_up_at, row.signed_up_at)
        first.confirmed = first.confirmed or row.confirmed
        first.quantity = max(first.quantity, row.quantity)
    cap = int(settings["WAITLIST_MAX_QUANTITY"])
    for row in merged.values():
        if is_suppressed(session, secret, row.email.address):
            report.suppressed += 1
            continue
        subscriber = _subscriber_for(session, row.email, now)
        where = (
            Signup.subscriber_id == subscriber.id,
            Signup.product_handle == row.target.handle,
            Signup.sku == row.target.sku,
        )
        signup = session.scalar(select(Signup).where(*where))
        if signup is None:
            session.add(
                Signup(
                    subscriber_id=subscriber.id,
                    product_handle=row.target.handle,
                    sku=row.target.sku,
                    status="confirmed" if row.confirmed else "pending",
                    left_reason="",
                    quantity=min(row.quantity, cap),
                    signed_up_at=row.signed_up_at,
                    pending_since=now,
                    confirmed_at=row.signed_up_at if row.confirmed else None,
                    consent_version=version,
                    consent_at=row.signed_up_at,
                    via="import",
                    channel="direct",
                    source="import",
                )
            )
            report.created += 1
            continue
        if signup.status == "left":
            report.left += 1
            continue
        changed = False
        if row.signed_up_at < signup.signed_up_at:
            signup.signed_up_at = row.signed_up_at
            report.updated += 1
            changed = True
        if row.confirmed and signup.status == "pending":
            signup.status = "confirmed"
            signup.confirmed_at = now
            report.confirmed += 1
            changed = True
        if not changed:
            report.unchanged += 1
    session.flush()
    return report


def _read_import(
    session: Session,
    settings: Mapping[str, Any],
    path: Path,
    coming_soon: Mapping[str, Mapping[str, Any]],
    now: dt.datetime,
) -> list[_ImportRow]:
    """Parse and check every row; raise ``WaitlistImportError`` with all problems at once."""
    name = path.name
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise WaitlistImportError([f"{path}: cannot read: {exc.strerror}"]) from None
    errors: list[str] = []
    rows: list[_ImportRow] = []
    urls = site_urls(settings)
    header: list[str] = []
    with handle:
        reader = csv.reader(handle, strict=True)
        line = 1
        try:
            for fields in reader:
                # The physical line a record starts on, as an editor shows it (a quoted
                # field may span lines; blank lines are skipped but still counted).
                start, line = line, reader.line_num + 1
                if not fields or not any(value.strip() for value in fields):
                    continue
                if not header:
                    header = [value.strip().lower() for value in fields]
                    problem = _check_header(header)
                    if problem:
                        raise WaitlistImportError([f"{name}:{start}: {problem}"])
                    continue
                if len(fields) > len(header):
                    errors.append(f"{name}:{start}: more fields than the header has columns")
                    continue
                record = dict(zip(header, (value.strip() for value in fields), strict=False))
                problems = _check_row(session, urls, coming_soon, record, now, rows, start)
                errors.extend(f"{name}:{start}: {problem}" for problem in problems)
        except (csv.Error, UnicodeDecodeError) as exc:
            errors.append(f"{name}:{line}: {exc}")
    if not header and not errors:
        errors.append(f"{name}:1: the file is empty; expected a header row")
    if errors:
        raise WaitlistImportError(errors)
    return rows


def _check_header(header: list[str]) -> str:
    """Return what is wrong with a header row, or "" when it is usable."""
    known = set(IMPORT_COLUMNS) | set(EXPORT_COLUMNS)
    for column in header:
        if column not in known:
            return f"unknown column {column!r}; expected {', '.join(IMPORT_COLUMNS)}"
    if len(set(header)) != len(header):
        return "a column appears twice"
    missing = [column for column in ("email", "signed_up_at", "confirmed") if column not in header]
    if "variant" not in header and "product" not in header:
        missing.append("variant or product")
    if missing:
        return f"missing column(s): {', '.join(missing)}"
    return ""


def _check_row(
    session: Session,
    urls: SiteURLs,
    coming_soon: Mapping[str, Mapping[str, Any]],
    record: Mapping[str, str],
    now: dt.datetime,
    rows: list[_ImportRow],
    line: int,
) -> list[str]:
    """Validate one record, appending it to ``rows`` when good; return its problems."""
    values = dict(record)
    problems: list[str] = []
    email: EmailAddress | None = None
    try:
        email = normalize_email(values.get("email", ""))
    except InvalidEmail as exc:
        problems.append(f"email: {exc}")
    target: Target | None = None
    try:
        target = resolve_target(
            session,
            urls,
            handle=values.get("product", ""),
            sku=values.get("variant", ""),
            coming_soon=coming_soon,
        )
    except WaitlistError as exc:
        problems.append(f"{exc.field}: {exc.message}")
    signed_up_at = _parse_time(values.get("signed_up_at", ""), now, problems)
    confirmed_text = values.get("confirmed", "").lower()
    if confirmed_text not in _TRUE | _FALSE:
        problems.append(f"confirmed: expected true or false, got {values.get('confirmed')!r}")
    quantity = 1
    if values.get("quantity"):
        try:
            quantity = int(values["quantity"])
        except ValueError:
            quantity = 0
        if quantity < 1:
            problems.append(f"quantity: expected a whole number from 1, got {values['quantity']!r}")
    if problems or email is None or target is None or signed_up_at is None:
        return problems
    rows.append(_ImportRow(line, email, target, signed_up_at, confirmed_text in _TRUE, quantity))
    return []


def _parse_time(text: str, now: dt.datetime, problems: list[str]) -> dt.datetime | None:
    """Parse an ISO 8601 date or time (no zone = UTC); note a problem and return None if bad."""
    if not text:
        problems.append("signed_up_at: missing (ISO 8601, e.g. 2024-05-01T09:30:00Z)")
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"signed_up_at: not an ISO 8601 date or time: {text!r}")
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if value > now + dt.timedelta(minutes=5):
        problems.append(f"signed_up_at: {text} is in the future")
        return None
    return value


# --------------------------------------------------------------------------- database helpers


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert_ignore(
    session: Session, model: type[Any], values: Mapping[str, Any], keys: Iterable[str]
) -> None:
    """Insert a row unless one with the same unique ``keys`` exists (concurrency-safe)."""
    insert = dialect_insert(_dialect(session))
    # Core, not ORM, inserts: the ORM's bulk path costs more than the statement itself.
    table = cast(Table, model.__table__)
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=list(keys))
    session.execute(statement)


def _rowcount(result: Result[Any]) -> int:
    """Return how many rows an UPDATE or DELETE touched."""
    return int(cast(CursorResult[Any], result).rowcount or 0)
