"""``POST /api/waitlist``: signups from static pages, as a plain form post or as JSON.

A form post (JavaScript off) is answered with a 303 to ``SITE_URL`` + page +
``#waitlist-thanks``; JSON (sent as ``text/plain`` so browsers need no CORS preflight, or as
``application/json``) with ``202 {"status": "pending"}``. Both answers are the same for a
new and a repeated signup, and only come after the signup is committed.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import OperationalError
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from wtforms import BooleanField, Form, IntegerField, StringField, ValidationError
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from engine.db import READ_ONLY, get_db, utcnow
from engine.pages import Link
from engine.tracking import client_address_hash
from engine.waitlist import (
    MAX_EMAIL_LENGTH,
    InvalidEmail,
    Person,
    SignupRequest,
    Target,
    WaitlistError,
    confirmation_email,
    consent_known,
    consent_version,
    hit_rate_limit,
    normalize_email,
    prepare_signup,
    queue_confirmation_for,
    record_consent_text,
    resolve_target,
    site_urls,
    store_signup,
)
from engine.web.subscriber import coming_soon_products, environment, message, no_store

bp = Blueprint("api", __name__)

#: The honeypot: a field people never see or fill; a signup with it filled is dropped.
HONEYPOT_FIELD = "website"
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
#: The anchor a form post is sent back to; the page shows its thanks with CSS ``:target``.
THANKS_ANCHOR = "#waitlist-thanks"
#: A signup is a few hundred bytes; anything far larger is not one.
MAX_BODY_BYTES = 64 * 1024

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
JSON_TYPES = ("application/json", "text/plain")


class SignupForm(Form):
    """The fields of a signup, as the page's form and the JSON API send them."""

    email = StringField(
        validators=[
            InputRequired("Enter your email address."),
            Length(
                max=MAX_EMAIL_LENGTH,
                message=f"An email address has at most {MAX_EMAIL_LENGTH} characters.",
            ),
        ]
    )
    variant = StringField(validators=[Optional(), Length(max=255)])
    product = StringField(validators=[Optional(), Length(max=255)])
    consent = BooleanField(
        validators=[DataRequired("Tick the box to agree to get an email about this product.")]
    )
    consent_version = StringField(validators=[Optional(), Length(max=64)])
    quantity = IntegerField(
        validators=[Optional(), NumberRange(min=1, message="Enter a number from 1.")]
    )
    page = StringField(validators=[Optional(), Length(max=2000)])
    referrer = StringField(validators=[Optional(), Length(max=2000)])
    utm_source = StringField(validators=[Optional(), Length(max=200)])
    utm_medium = StringField(validators=[Optional(), Length(max=200)])
    utm_campaign = StringField(validators=[Optional(), Length(max=200)])
    utm_term = StringField(validators=[Optional(), Length(max=200)])
    utm_content = StringField(validators=[Optional(), Length(max=200)])

    normalized = None

    def validate_email(self, field: StringField) -> None:
        """Check syntax and special-use domains (no DNS look-ups) and keep the normalized form."""
        if field.errors:
            return
        try:
            self.normalized = normalize_email(field.data or "")
        except InvalidEmail as exc:
            raise ValidationError(str(exc)) from None


class BadBody(ValueError):
    """A request body that is not a signup at all (wrong type, broken JSON)."""


def _origin_of(url: str) -> str:
    """Return ``scheme://host[:port]`` of a URL, lower-cased, default ports dropped."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ""
    if not parts.scheme or not parts.hostname:
        return ""
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def allowed_origins(settings: Mapping[str, Any]) -> frozenset[str]:
    """Return the origins allowed to post: ``ALLOWED_ORIGINS`` and the service's own."""
    configured = settings.get("ALLOWED_ORIGINS") or []
    if isinstance(configured, str):
        configured = [item for item in configured.split(",") if item.strip()]
    return _origins(
        tuple(str(item) for item in configured),
        str(settings.get("API_URL") or settings["SITE_URL"]),
    )


@functools.lru_cache(maxsize=8)
def _origins(configured: tuple[str, ...], own: str) -> frozenset[str]:
    """Return the allowed origins for these settings (parsed once, asked on every request)."""
    origins = {_origin_of(item) for item in configured}
    origins.add(_origin_of(own))
    origins.discard("")
    return frozenset(origins)


def _request_origin() -> str | None:
    """Return the posting page's origin (``Origin``, else ``Referer``), or None if unknown."""
    origin = request.headers.get("Origin")
    if origin is not None:
        # "null" (sandboxed frames, file: pages) maps to "", which no setting allows.
        return _origin_of(origin) if origin.strip() != "null" else ""
    referer = request.headers.get("Referer")
    if referer:
        return _origin_of(referer)
    return None


def _cors(response: Response) -> Response:
    """Let an allowed origin's script read the answer (and its ``Retry-After``)."""
    origin = request.headers.get("Origin")
    if origin and _origin_of(origin) in allowed_origins(current_app.config):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    response.vary.add("Origin")
    return response


def _json(body: Mapping[str, Any], status: int) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    return _cors(no_store(response))


def _parse_body(mode: str) -> MultiDict[str, str]:
    """Return the submitted fields as a multidict (form fields, or a flat JSON object)."""
    if mode == "form":
        return MultiDict(request.form.items(multi=True))
    raw = request.get_data(cache=False)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadBody("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadBody("Send one JSON object with the signup's fields.")
    fields: MultiDict[str, str] = MultiDict()
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, bool):
            # BooleanField reads "" as unticked.
            fields.add(key, "y" if value else "")
        elif isinstance(value, int | float | str):
            fields.add(key, str(value))
        else:
            raise BadBody(f"{key}: expected a string, number or true/false.")
    return fields


def _safe_page(page: str) -> str:
    """Return the page path to send a form post back to (a path on ``SITE_URL`` only)."""
    page = page.strip()
    if not page.startswith("/") or page.startswith("//") or "\\" in page:
        return ""
    try:
        path = urlsplit(page).path
    except ValueError:
        return ""
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        return ""
    # Percent-encode anything outside a URL path's characters (a header is ASCII only).
    return quote(path, safe="/%:@!$&'()*+,;=-._~")


@bp.route("/api/waitlist", methods=["OPTIONS"])
def waitlist_preflight() -> Response:
    """Answer a CORS preflight for allowed origins (pages send ``text/plain`` and avoid it)."""
    origin = request.headers.get("Origin", "")
    if _origin_of(origin) not in allowed_origins(current_app.config):
        return _json({"errors": {"origin": ["This site may not post signups here."]}}, 403)
    response = Response(status=204)
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = "POST"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Access-Control-Max-Age"] = "86400"
    response.vary.add("Origin")
    return no_store(response)


@bp.post("/api/waitlist")
def waitlist_signup() -> Response:
    """Take a signup: validate, rate-limit, store and queue the confirmation email."""
    settings = current_app.config
    mimetype = request.mimetype
    if mimetype in JSON_TYPES:
        mode = "json"
    elif mimetype in FORM_TYPES or not mimetype:
        mode = "form"
    else:
        return _json(
            {"errors": {"body": ["Send a form post or JSON (text/plain or application/json)."]}},
            415,
        )
    origin = _request_origin()
    if origin is not None and origin not in allowed_origins(settings):
        return _refuse(mode, 403, "origin", "Signups from this site are not accepted here.")
    request.max_content_length = MAX_BODY_BYTES
    try:
        data = _parse_body(mode)
    except BadBody as exc:
        return _refuse(mode, 400, "body", str(exc))
    except RequestEntityTooLarge:
        return _refuse(mode, 413, "body", "The request is too large to be a signup.")
    if data.get(HONEYPOT_FIELD, "").strip():
        # A bot filled the field people never see: answer as for a signup, keep nothing.
        return _accepted(mode, _safe_page(data.get("page", "")))
    try:
        with _one_at_a_time():
            form = SignupForm(data)
            if not form.validate():
                return _invalid(mode, form.errors, data.get("page", ""))
            return _store(mode, form)
    except OperationalError:
        # The database is busy or down: nothing was stored, so the client must retry.
        response = _refuse(mode, 503, "body", "Signups are briefly unavailable; try again.")
        response.headers["Retry-After"] = "5"
        return response


#: One signup at a time per process on SQLite. Its writes queue for SQLite's one writer
#: anyway, and the rest is Python under one GIL: threads that run signups side by side only
#: hand the GIL back and forth (a third more CPU per signup under load) and wait in SQLite's
#: busy handler, whose back-off sleeps up to 100 ms a try. Here they wait in turn, asleep.
_SQLITE_SIGNUPS = threading.Lock()
#: The consent versions known to be stored in this app's database (they are never deleted).
_CONSENTS_KEY = "engine.waitlist.consent_versions"


@contextmanager
def _one_at_a_time() -> Iterator[None]:
    if get_db().engine.dialect.name != "sqlite":
        yield  # PostgreSQL takes concurrent writers; a signup there mostly waits on the network
        return
    with _SQLITE_SIGNUPS:
        yield


def _store(mode: str, form: SignupForm) -> Response:
    """Look up, prepare and render first; then rate-limit and store in one short transaction.

    Everything that needs no lock (validation, the product, the consent wording, the
    source, the rendered confirmation email) is done before the write transaction, so on
    SQLite the write lock is held for a handful of statements only.
    """
    settings = current_app.config
    secret = str(settings["SECRET_KEY"])
    now = utcnow()
    page = _safe_page(form.page.data or "")
    client = client_address_hash(secret, request.remote_addr or "")
    email = form.normalized
    assert email is not None
    consent_text = str(settings["WAITLIST_CONSENT_TEXT"])
    current = consent_version(consent_text)
    shown = (form.consent_version.data or "").strip()
    known: set[str] = current_app.extensions.setdefault(_CONSENTS_KEY, set())
    signup = SignupRequest(
        email=email,
        quantity=form.quantity.data or 1,
        consent_text=consent_text,
        shown_consent_version=shown,
        page=page,
        # Only the JSON path knows the page's own referrer; a form post's Referer is the page.
        referrer=(form.referrer.data or "").strip() if mode == "json" else "",
        utm={name: form[name].data.strip() for name in UTM_FIELDS if form[name].data},
        client_hash=client,
        via=mode,
        site_host=urlsplit(str(settings["SITE_URL"])).hostname or "",
    )
    with get_db().engine.connect() as connection:
        # Reads beside any writer (on SQLite a snapshot, no write lock): the product and
        # whether the wording the page showed is one we know.
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            try:
                target: Target | WaitlistError = resolve_target(
                    connection,
                    site_urls(settings),
                    handle=(form.product.data or "").strip(),
                    sku=(form.variant.data or "").strip(),
                    coming_soon=coming_soon_products,
                )
            except WaitlistError as exc:
                target = exc
            version = current
            if shown and shown != current and (shown in known or consent_known(connection, shown)):
                known.add(shown)
                version = shown
        prepared = confirmation = None
        if isinstance(target, Target) and not target.sellable:
            prepared = prepare_signup(settings, signup, target, version, now)
            confirmation = confirmation_email(environment(), settings, target)
        connection.execution_options(**{READ_ONLY: False})
        with connection.begin():
            retry = hit_rate_limit(
                connection,
                "client:" + client[:40],
                int(settings["WAITLIST_CLIENT_LIMIT"]),
                int(settings["WAITLIST_CLIENT_WINDOW_SECONDS"]),
                now,
            )
            if not retry and prepared is not None:
                retry = hit_rate_limit(
                    connection,
                    "address:" + prepared.address_key[:40],
                    int(settings["WAITLIST_ADDRESS_LIMIT"]),
                    int(settings["WAITLIST_ADDRESS_WINDOW_SECONDS"]),
                    now,
                )
            if not retry and prepared is not None and confirmation is not None:
                if current not in known:
                    record_consent_text(connection, consent_text, now)
                stored = store_signup(connection, settings, prepared, now)
                if stored.send_confirmation:
                    assert stored.subscriber_id is not None and stored.signup_id is not None
                    queue_confirmation_for(
                        connection,
                        settings,
                        confirmation,
                        Person(stored.subscriber_id, stored.token_key),
                        stored.email,
                        stored.signup_id,
                        now,
                    )
    # Committed: answer (pages are rendered outside the transaction).
    if retry:
        return _too_many(mode, retry, page)
    if isinstance(target, WaitlistError):
        return _invalid(mode, {target.field: [target.message]}, page)
    if target.sellable:
        return _available(mode, target)
    known.add(current)
    return _accepted(mode, page or site_urls(settings).product(target.handle))


def _accepted(mode: str, page: str) -> Response:
    if mode == "json":
        return _json({"status": "pending"}, 202)
    site = str(current_app.config["SITE_URL"])
    response = Response(status=303)
    response.headers["Location"] = site + (page or "/") + THANKS_ANCHOR
    return no_store(response)


def _available(mode: str, target: Target) -> Response:
    if mode == "json":
        return _json({"status": "available", "url": target.buy_url}, 200)
    name = target.title + (f" ({target.variant_title})" if target.variant_title else "")
    return message(
        200,
        "Good news: it's back",
        f"{name} is available now, so there is no need to wait.",
        primary=Link(target.buy_url, f"Buy {target.title}"),
    )


def _too_many(mode: str, retry: int, page: str) -> Response:
    text = f"Too many signups at once. Try again in {_duration(retry)}."
    response = _refuse(mode, 429, "email", text, page)
    response.headers["Retry-After"] = str(retry)
    return response


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minutes" if minutes < 90 else f"{math.ceil(minutes / 60)} hours"


def _invalid(mode: str, errors: Mapping[str, list[str]], page: str) -> Response:
    if mode == "json":
        return _json({"errors": dict(errors)}, 400)
    problems = tuple(message for messages in errors.values() for message in messages)
    return _form_problem(400, problems, page)


def _refuse(mode: str, status: int, field: str, text: str, page: str = "") -> Response:
    if mode == "json":
        return _json({"errors": {field: [text]}}, status)
    return _form_problem(status, (text,), page)


def _form_problem(status: int, problems: tuple[str, ...], page: str) -> Response:
    """Render the no-JavaScript error page: what was wrong and a link back to the form."""
    urls = site_urls(current_app.config)
    back = _safe_page(page)
    return message(
        status,
        "Your signup did not go through",
        problems=problems,
        primary=Link(urls.absolute((back or "/") + "#waitlist"), "Back to the form"),
    )
