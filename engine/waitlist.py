"""Waitlists: signups with consent, double opt-in, leaving, suppression, purge and data rights.

Functions here take plain values and a session and never commit; the web service, the CLI
and the scheduler own the transactions.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import hmac
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, cast

import jinja2
from itsdangerous import BadData, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from sqlalchemy import (
    Connection,
    CursorResult,
    Executable,
    Result,
    Table,
    bindparam,
    case,
    delete,
    select,
    update,
)
from sqlalchemy.orm import Session

from engine.db import DriverStatement, UTCDateTime, dialect_insert, sqlite_datetime
from engine.mail import MANAGE_URL_TOKEN, UNSUBSCRIBE_URL_TOKEN, Message, RenderedEmail
from engine.mail.base import validate_message
from engine.mail.render import email_templates, render_email
from engine.mailqueue import forget_address, queue
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


def record_consent_text(session: Session | Connection, text: str, now: dt.datetime) -> str:
    """Store a consent wording once and return its version."""
    version = consent_version(text)
    _execute(
        session,
        _statements(_dialect(session)).add_consent,
        {"version": version, "text": text, "created_at": now},
    )
    return version


def consent_known(session: Session | Connection, version: str) -> bool:
    """Return True when this consent version's wording is stored."""
    found = _execute(session, _statements(_dialect(session)).consent_known, {"version": version})
    return found.first() is not None


def consent_for(
    session: Session | Connection, text: str, shown_version: str, now: dt.datetime
) -> str:
    """Return the version to record: the one the page showed if known, else the current text."""
    current = record_consent_text(session, text, now)
    # A page built before the wording changed still shows the old text: record that one.
    if shown_version and shown_version != current and consent_known(session, shown_version):
        return shown_version
    return current


# --------------------------------------------------------------------------- rate limits


def hit_rate_limit(
    session: Session | Connection, key: str, limit: int, window_seconds: int, now: dt.datetime
) -> int:
    """Count one hit on ``key``; return 0 when within the limit, else seconds to wait.

    A fixed window per key, counted with one atomic upsert in the database, so every web
    worker shares the count. A limit of 0 or less turns the limit off.
    """
    if limit <= 0:
        return 0
    window = dt.timedelta(seconds=window_seconds)
    [(hits, window_start)] = _statements(_dialect(session)).rate_limit.execute(
        _connection(session), {"limit_key": key, "now": now, "cutoff": now - window}
    )
    window_start = sqlite_datetime(window_start)
    if hits <= limit:
        return 0
    remaining = (window_start + window - now).total_seconds()
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
    session: Session | Connection,
    urls: SiteURLs,
    *,
    handle: str,
    sku: str,
    coming_soon: Mapping[str, Mapping[str, Any]] | Callable[[], Mapping[str, Mapping[str, Any]]],
) -> Target:
    """Find the product or variant a signup names, or raise ``WaitlistError``.

    ``coming_soon`` maps the handles of products declared only in content to their front
    matter (title, image, price), or is a function returning that map (called only when
    the catalog does not have the product). A catalog product must be active and published.
    """
    statements = _statements(_dialect(session))
    if sku:
        row = _execute(session, statements.variant, {"sku": sku}).first()
        if row is None or not _is_listed(row.status, row.published):
            raise WaitlistError("variant", "We don't know that variant.")
        if handle and handle != row.handle:
            raise WaitlistError("variant", "That variant belongs to another product.")
        title = " / ".join(str(value) for value in row.option_values or ())
        return Target(
            handle=row.handle,
            sku=sku,
            title=row.title,
            variant_title="" if title in ("", "Default Title") else title,
            sellable=bool(row.sellable),
            buy_url=urls.buy(row.handle, row.id),
            image=row.image or _image_of(row.images),
            price=row.price,
        )
    if not handle:
        raise WaitlistError("product", "Choose a product or one of its variants.")
    listed = _execute(session, statements.product, {"handle": handle}).first()
    if listed is not None and _is_listed(listed.status, listed.published):
        variants = _execute(session, statements.product_variants, {"product_id": listed.id}).all()
        prices = [variant.price for variant in variants]
        return Target(
            handle=handle,
            sku="",
            title=listed.title,
            variant_title="",
            sellable=any(variant.sellable for variant in variants),
            buy_url=urls.buy(handle),
            image=_image_of(listed.images),
            price=min(prices) if prices else None,
        )
    meta = (coming_soon() if callable(coming_soon) else coming_soon).get(handle)
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


def _is_listed(status: str, published: bool) -> bool:
    return status in _SELLABLE_PRODUCT_STATUSES and bool(published)


def _image_of(images: Any) -> str:
    for image in images or []:
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


#: The columns a signup takes from its request (``PreparedSignup.columns``).
_SIGNUP_REQUEST_KEYS = (
    "consent_version", "consent_at", "quantity", "via", "client_hash", "page", "referrer",
    "utm", "channel", "source", "medium", "campaign",
)  # fmt: skip
#: The other columns a new signup row is written with.
_NEW_SIGNUP_KEYS = (
    "subscriber_id", "product_handle", "sku", "status", "left_reason", "signed_up_at",
    "pending_since", "confirmation_sent_at",
)  # fmt: skip


@dataclass(frozen=True)
class PreparedSignup:
    """A signup with everything worked out that needs no database: keys, source, columns.

    Made by ``prepare_signup`` before the write transaction, so the transaction itself
    (``store_signup``) only runs its few statements.
    """

    email: EmailAddress
    handle: str
    sku: str
    #: The keyed hash of the address: the suppression key and (truncated) the limits' key.
    address_key: str
    #: The columns a pending signup takes from this request (consent, source, page, …).
    columns: Mapping[str, Any]


@dataclass(frozen=True)
class StoredSignup:
    """What ``store_signup`` did, as plain values (``status`` as in ``SignupOutcome``)."""

    status: str
    subscriber_id: int | None = None
    token_key: str = ""
    email: str = ""
    signup_id: int | None = None
    send_confirmation: bool = False


def prepare_signup(
    settings: Mapping[str, Any],
    request: SignupRequest,
    target: Target,
    version: str,
    now: dt.datetime,
) -> PreparedSignup:
    """Work out a signup's keys and columns (``version``: the consent version to record)."""
    source = classify_source(
        request.referrer or None, request.page or None, request.utm, request.site_host or None
    )
    quantity = max(1, min(request.quantity, int(settings["WAITLIST_MAX_QUANTITY"])))
    columns = {
        "consent_version": version,
        "consent_at": now,
        "quantity": quantity,
        "via": request.via,
        "client_hash": request.client_hash,
        "page": request.page[:2000],
        "referrer": request.referrer[:2000],
        "utm": dict(request.utm),
        "channel": source.channel,
        "source": source.source,
        "medium": source.medium,
        "campaign": source.campaign,
    }
    return PreparedSignup(
        email=request.email,
        handle=target.handle,
        sku=target.sku,
        address_key=address_hash(str(settings["SECRET_KEY"]), request.email.address),
        columns=columns,
    )


def store_signup(
    connection: Connection | Session,
    settings: Mapping[str, Any],
    prepared: PreparedSignup,
    now: dt.datetime,
) -> StoredSignup:
    """Store (or find) the person's signup with Core statements; idempotent for repeats.

    A new address costs four statements (suppression, person, the confirmation cap, the
    signup); a repeat a few more reads. Rules as for ``sign_up``.
    """
    statements = _statements(_dialect(connection))
    driver = _connection(connection)
    if statements.suppressed.execute(driver, {"key": prepared.address_key}):
        return StoredSignup("discarded")
    email = prepared.email
    added_person = statements.add_subscriber.execute(
        driver,
        {
            "address": email.address,
            "email": email.display,
            "token_key": secrets.token_urlsafe(9),
            "created_at": now,
        },
    )
    new_person = bool(added_person)
    if new_person:
        [(subscriber_id, token_key, display)] = added_person
    else:
        person = _execute(connection, statements.subscriber, {"address": email.address}).one()
        subscriber_id, token_key, display = person.id, person.token_key, person.email
    where = {"subscriber_id": subscriber_id, "handle": prepared.handle, "sku": prepared.sku}
    existing = None if new_person else _execute(connection, statements.signup, where).first()
    if existing is None:
        # Nobody else can hold a new person's row; for a known one a concurrent request may
        # have added the signup since: then it is a repeat.
        send = new_person and _confirmation_allowed(connection, settings, prepared, now)
        values = {
            "subscriber_id": subscriber_id,
            "product_handle": prepared.handle,
            "sku": prepared.sku,
            "status": "pending",
            "left_reason": "",
            "signed_up_at": now,
            "pending_since": now,
            "confirmation_sent_at": now if send else None,
            **prepared.columns,
        }
        added = statements.add_signup.execute(driver, values)
        if added:
            [(signup_id,)] = added
            if not new_person:
                send = _confirmation_allowed(connection, settings, prepared, now)
                if send:
                    _execute(
                        connection,
                        statements.update_signup,
                        {"signup_id": signup_id, "sent_at": now},
                    )
            return StoredSignup("pending", subscriber_id, token_key, display, signup_id, send)
        existing = _execute(connection, statements.signup, where).one()
    signup_id, status, sent_at = existing.id, existing.status, existing.confirmation_sent_at
    changes: dict[str, Any] = {}
    if status == "left":
        # Joining again is a new, explicit act: a fresh consent record and a new place in line.
        status = "pending"
        sent_at = None
        changes.update(
            status="pending",
            left_reason="",
            left_at=None,
            confirmed_at=None,
            confirmation_sent_at=None,
            signed_up_at=now,
            pending_since=now,
        )
    if status == "pending":
        changes.update(prepared.columns)
    window = dt.timedelta(minutes=int(settings["WAITLIST_CONFIRM_RESEND_MINUTES"]))
    send = (
        status == "pending"
        and (sent_at is None or now - sent_at >= window)
        and _confirmation_allowed(connection, settings, prepared, now)
    )
    if send:
        changes["confirmation_sent_at"] = now
    if changes:
        table = cast(Table, Signup.__table__)
        _execute(connection, update(table).where(table.c.id == signup_id).values(**changes))
    return StoredSignup("pending", subscriber_id, token_key, display, signup_id, send)


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
    session.flush()
    version = consent_for(session, request.consent_text, request.shown_consent_version, now)
    prepared = prepare_signup(settings, request, target, version, now)
    stored = store_signup(session, settings, prepared, now)
    if stored.status != "pending":
        return SignupOutcome(stored.status)
    # The rows were written around the ORM: load them fresh.
    subscriber = session.get(Subscriber, stored.subscriber_id, populate_existing=True)
    signup = session.get(Signup, stored.signup_id, populate_existing=True)
    return SignupOutcome("pending", subscriber, signup, stored.send_confirmation)


def _confirmation_allowed(
    connection: Connection | Session,
    settings: Mapping[str, Any],
    prepared: PreparedSignup,
    now: dt.datetime,
) -> bool:
    """Count a confirmation email against the address's daily cap; True when within it."""
    key = "confirm:" + prepared.address_key[:40]
    limit = int(settings["WAITLIST_CONFIRMATIONS_PER_DAY"])
    return hit_rate_limit(connection, key, limit, 86400, now) == 0


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


@dataclass(frozen=True)
class Person:
    """What a person's links are made of: the subscriber's id and random token key."""

    id: int
    token_key: str


@functools.lru_cache(maxsize=16)
def _timed_serializer(secret: str, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=salt)


@functools.lru_cache(maxsize=16)
def _serializer(secret: str, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=salt)


def confirm_token(secret: str, subscriber: Subscriber | Person, signup: Signup | int) -> str:
    """Return the signed, expiring token of a signup's confirmation link."""
    signup_id = signup if isinstance(signup, int) else signup.id
    serializer = _timed_serializer(secret, CONFIRM_SALT)
    return str(serializer.dumps([subscriber.id, subscriber.token_key, signup_id]))


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


def subscriber_token(secret: str, salt: str, subscriber: Subscriber | Person, scope: str) -> str:
    """Return a never-expiring manage or unsubscribe token for a person and a scope."""
    serializer = _serializer(secret, salt)
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


def confirm_url(
    settings: Mapping[str, Any], subscriber: Subscriber | Person, signup: Signup | int
) -> str:
    """Return the absolute confirmation link of a signup (on ``API_URL``)."""
    token = confirm_token(str(settings["SECRET_KEY"]), subscriber, signup)
    return site_urls(settings).api(f"/waitlist/confirm/{token}")


def manage_url(settings: Mapping[str, Any], subscriber: Subscriber | Person) -> str:
    """Return the absolute link of the person's manage page (on ``API_URL``)."""
    token = subscriber_token(str(settings["SECRET_KEY"]), MANAGE_SALT, subscriber, SCOPE_ALL)
    return site_urls(settings).api(f"/waitlist/manage/{token}")


def unsubscribe_url(
    settings: Mapping[str, Any], subscriber: Subscriber | Person, scope: str
) -> str:
    """Return the absolute unsubscribe link for one product's waitlist or (``*``) everything."""
    token = subscriber_token(str(settings["SECRET_KEY"]), UNSUBSCRIBE_SALT, subscriber, scope)
    return site_urls(settings).api(f"/unsubscribe/{token}")


def unsubscribe_headers(
    settings: Mapping[str, Any], subscriber: Subscriber | Person, scope: str
) -> dict[str, str]:
    """Return ``List-Unsubscribe`` (HTTPS, plus a mailto when set) and ``List-Unsubscribe-Post``."""
    return list_unsubscribe_headers(settings, unsubscribe_url(settings, subscriber, scope))


def list_unsubscribe_headers(settings: Mapping[str, Any], url: str) -> dict[str, str]:
    """The same headers for an unsubscribe link the caller already made."""
    value = f"<{url}>"
    mailto = str(settings.get("WAITLIST_UNSUBSCRIBE_MAILTO") or "").strip()
    if mailto:
        value += f", <mailto:{mailto}?subject=unsubscribe>"
    return {"List-Unsubscribe": value, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


#: Where each person's confirmation link goes in the once-rendered confirmation email.
CONFIRM_URL_TOKEN = "-confirm_url-"


_CONFIRMATIONS: OrderedDict[tuple[Any, ...], RenderedEmail] = OrderedDict()
_CONFIRMATIONS_LOCK = threading.Lock()
_CONFIRMATIONS_KEPT = 256


def confirmation_email(
    env: jinja2.Environment, settings: Mapping[str, Any], target: Target
) -> RenderedEmail:
    """Return the double opt-in email for a target, rendered and CSS-inlined once.

    The person's own links are the substitution placeholders (``-confirm_url-``, the
    layout's ``-manage_url-`` and ``-unsubscribe_url-``); ``queue_confirmation_for`` puts
    each person's values in as the queue's substitutions. Kept per target and settings
    (the last 256); a changed template file is a new template object, so a new entry.
    """
    templates = email_templates(env, "waitlist_confirm")
    names = (
        "SITE_NAME", "COMPANY_ADDRESS", "SITE_URL", "SITE_LANGUAGE", "API_URL", "STORE_URL",
        "CURRENCY", "WAITLIST_UNCONFIRMED_DAYS",
    )  # fmt: skip
    key = (templates, target, tuple(str(settings.get(name, "")) for name in names))
    with _CONFIRMATIONS_LOCK:
        cached = _CONFIRMATIONS.get(key)
        if cached is not None:
            _CONFIRMATIONS.move_to_end(key)
            return cached
    urls = site_urls(settings)
    context = {
        "product_title": target.title,
        "variant_title": target.variant_title,
        "product_url": urls.absolute(urls.product(target.handle)),
        "image_url": urls.absolute(target.image) if target.image else "",
        "price": format_money(target.price, str(settings.get("CURRENCY") or "USD"))
        if target.price is not None
        else "",
        "confirm_url": CONFIRM_URL_TOKEN,
        "valid_days": int(settings["WAITLIST_UNCONFIRMED_DAYS"]),
        "manage_url": MANAGE_URL_TOKEN,
        # Whoever did not ask for this email wants no more of any kind.
        "unsubscribe_url": UNSUBSCRIBE_URL_TOKEN,
    }
    email = render_email(env, "waitlist_confirm", settings, context)
    validate_message(
        Message(
            subject=email.subject,
            html=email.html,
            text=email.text,
            # As the queue checks it: the sender is MAIL_FROM, checked when the drain sends.
            sender="queue@example.com",
            categories=CONFIRM_CATEGORIES,
        )
    )
    with _CONFIRMATIONS_LOCK:
        _CONFIRMATIONS[key] = email
        while len(_CONFIRMATIONS) > _CONFIRMATIONS_KEPT:
            _CONFIRMATIONS.popitem(last=False)
    return email


#: The categories every confirmation email carries.
CONFIRM_CATEGORIES = ("waitlist-confirm",)


def queue_confirmation_for(
    connection: Connection | Session,
    settings: Mapping[str, Any],
    email: RenderedEmail,
    person: Subscriber | Person,
    to: str,
    signup_id: int,
    now: dt.datetime,
) -> None:
    """Queue a confirmation (from ``confirmation_email``) with this person's links."""
    unsubscribe = unsubscribe_url(settings, person, SCOPE_ALL)
    queue(
        connection,
        idempotency_key=f"waitlist-confirm:{signup_id}:{now.timestamp():.6f}",
        to=to,
        subject=email.subject,
        html=email.html,
        text=email.text,
        headers=list_unsubscribe_headers(settings, unsubscribe),
        substitutions={
            CONFIRM_URL_TOKEN: confirm_url(settings, person, signup_id),
            MANAGE_URL_TOKEN: manage_url(settings, person),
            UNSUBSCRIBE_URL_TOKEN: unsubscribe,
        },
        categories=CONFIRM_CATEGORIES,
        custom_args={"kind": "waitlist-confirm"},
        message_checked=True,
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


def _dialect(session: Session | Connection) -> str:
    if isinstance(session, Connection):
        return session.dialect.name
    return session.get_bind().dialect.name


def _connection(session: Session | Connection) -> Connection:
    return session.connection() if isinstance(session, Session) else session


def _execute(
    session: Session | Connection, statement: Executable, params: Mapping[str, Any] | None = None
) -> Result[Any]:
    """Run a Core statement on a session's connection or a connection, as Core."""
    if isinstance(session, Session):
        return session.connection().execute(statement, params)
    return session.execute(statement, params)


@dataclass(frozen=True)
class _Statements:
    """The signup path's statements, built once per dialect; values are bound parameters."""

    rate_limit: DriverStatement
    variant: Executable
    product: Executable
    product_variants: Executable
    suppressed: DriverStatement
    add_subscriber: DriverStatement
    subscriber: Executable
    signup: Executable
    add_signup: DriverStatement
    update_signup: Executable
    consent_known: Executable
    add_consent: Executable


@functools.cache
def _statements(dialect: str) -> _Statements:
    insert = dialect_insert(dialect)
    limits = cast(Table, RateLimit.__table__)
    now = bindparam("now", type_=UTCDateTime())
    expired = limits.c.window_start <= bindparam("cutoff", type_=UTCDateTime())
    rate_limit = (
        insert(limits)
        .values(key=bindparam("limit_key"), window_start=now, hits=1)
        .on_conflict_do_update(
            index_elements=["key"],
            set_={
                "hits": case((expired, 1), else_=limits.c.hits + 1),
                "window_start": case((expired, now), else_=limits.c.window_start),
            },
        )
        .returning(limits.c.hits, limits.c.window_start)
    )
    products = cast(Table, Product.__table__)
    variants = cast(Table, Variant.__table__)
    product_columns = (
        products.c.handle,
        products.c.title,
        products.c.status,
        products.c.published,
        products.c.images,
    )
    people = cast(Table, Subscriber.__table__)
    signups = cast(Table, Signup.__table__)
    consents = cast(Table, ConsentText.__table__)
    suppressions = cast(Table, Suppression.__table__)
    return _Statements(
        rate_limit=DriverStatement(rate_limit, ["limit_key", "now", "cutoff"]),
        variant=select(
            variants.c.id,
            variants.c.option_values,
            variants.c.sellable,
            variants.c.image,
            variants.c.price,
            *product_columns,
        )
        .join_from(variants, products, variants.c.product_id == products.c.id)
        .where(variants.c.sku == bindparam("sku")),
        product=select(products.c.id, *product_columns).where(
            products.c.handle == bindparam("handle")
        ),
        product_variants=select(variants.c.price, variants.c.sellable).where(
            variants.c.product_id == bindparam("product_id")
        ),
        suppressed=DriverStatement(
            select(suppressions.c.address_hash).where(
                suppressions.c.address_hash == bindparam("key")
            ),
            ["key"],
        ),
        add_subscriber=DriverStatement(
            insert(people)
            .on_conflict_do_nothing(index_elements=["address"])
            .returning(people.c.id, people.c.token_key, people.c.email),
            ["address", "email", "token_key", "created_at"],
        ),
        subscriber=select(people.c.id, people.c.token_key, people.c.email).where(
            people.c.address == bindparam("address")
        ),
        signup=select(signups.c.id, signups.c.status, signups.c.confirmation_sent_at).where(
            signups.c.subscriber_id == bindparam("subscriber_id"),
            signups.c.product_handle == bindparam("handle"),
            signups.c.sku == bindparam("sku"),
        ),
        add_signup=DriverStatement(
            insert(signups)
            .on_conflict_do_nothing(index_elements=["subscriber_id", "product_handle", "sku"])
            .returning(signups.c.id),
            [*_NEW_SIGNUP_KEYS, *_SIGNUP_REQUEST_KEYS],
        ),
        update_signup=update(signups)
        .where(signups.c.id == bindparam("signup_id"))
        .values(confirmation_sent_at=bindparam("sent_at", type_=UTCDateTime())),
        consent_known=select(consents.c.version).where(consents.c.version == bindparam("version")),
        add_consent=insert(consents).on_conflict_do_nothing(index_elements=["version"]),
    )


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
