"""Pages for one subscriber: confirm a signup, manage waitlists, unsubscribe (RFC 8058).

Every link here carries a signed token instead of a login; answers set no cookie, are
never cached or indexed, and send no referrer (the token is in the URL).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import select
from werkzeug.sansio.response import Response as BaseResponse

from engine.content import ContentErrors, load_content
from engine.db import get_session, utcnow
from engine.models import Product, Signup, Subscriber
from engine.pages import Link, PageMeta, make_environment
from engine.waitlist import (
    MANAGE_SALT,
    SCOPE_ALL,
    UNSUBSCRIBE_SALT,
    TokenError,
    confirm,
    leave,
    manage_url,
    read_subscriber_token,
    site_urls,
    token_subscriber,
    unsubscribe,
    unsubscribe_url,
    waiting_signups,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseResponse)

bp = Blueprint("subscriber", __name__)

_ENV_KEY = "engine.waitlist.env"
_COMING_SOON_KEY = "engine.waitlist.coming_soon"
_ENV_LOCK = threading.Lock()
_COMING_SOON_LOCK = threading.Lock()


def environment(app: Flask | None = None) -> jinja2.Environment:
    """Return the app's Jinja environment for subscriber pages and emails (built once)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    env: jinja2.Environment | None = app.extensions.get(_ENV_KEY)
    if env is None:
        with _ENV_LOCK:
            env = app.extensions.get(_ENV_KEY)
            if env is None:
                env = make_environment(app.config)
                app.extensions[_ENV_KEY] = env
    return env


def coming_soon_products(app: Flask | None = None) -> Mapping[str, Mapping[str, Any]]:
    """Return the front matter of coming-soon products by handle, re-read when files change.

    Only the listing of ``CONTENT_DIR/products`` (names, sizes, times) is checked per call;
    content with errors keeps the last good answer (``engine build`` reports the errors).
    """
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    folder = Path(str(app.config["CONTENT_DIR"]))
    signature = _listing(folder / "products")
    cached = app.extensions.get(_COMING_SOON_KEY)
    if cached is not None and cached[0] == signature:
        return cached[1]
    with _COMING_SOON_LOCK:
        try:
            content = load_content(folder)
        except ContentErrors as exc:
            log.warning(
                "content has %d problem(s); waitlists keep the last good list", len(exc.errors)
            )
            return cached[1] if cached is not None else {}
        products = {handle: dict(content.products[handle].meta) for handle in content.coming_soon()}
        app.extensions[_COMING_SOON_KEY] = (signature, products)
    return products


def _listing(folder: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return ()
    listing = []
    for entry in entries:
        stat = entry.stat()
        listing.append((entry.name, stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(listing))


def render(template: str, status: int, page_title: str, **context: Any) -> Response:
    """Render a subscriber page in the theme's layout: not indexed, not cached, no cookie."""
    values: dict[str, Any] = {
        "page": PageMeta(title=page_title, description=page_title, path="/", indexable=False),
        # Service pages carry no category navigation: the layout gets empty site chrome.
        "chrome": {"nav": (), "footer": (), "nav_paths": ()},
        "nav": (),
        "breadcrumbs": (),
        "footer": (),
        "jsonld": (),
    }
    values.update(context)
    html = environment().get_template(template).render(values)
    response = Response(html, status=status, mimetype="text/html")
    no_store(response)
    return response


def message(
    status: int,
    heading: str,
    *lines: str,
    problems: tuple[str, ...] = (),
    primary: Link | None = None,
    links: tuple[Link, ...] = (),
) -> Response:
    """Render a short message page (a heading, lines, problems, links onwards)."""
    return render(
        "subscriber/message.html.j2",
        status,
        heading,
        heading=heading,
        lines=lines,
        problems=problems,
        primary=primary,
        links=links,
    )


def no_store(response: R) -> R:
    """Mark a response private: never cached, never indexed, no referrer sent onwards."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _home() -> Link:
    urls = site_urls(current_app.config)
    return Link(urls.absolute("/"), f"Back to {current_app.config['SITE_NAME']}")


def _invalid_link() -> Response:
    return message(
        404,
        "This link does not work",
        "It may have been copied incompletely. Try the link in the email again.",
        primary=_home(),
    )


def _titles(signups: list[Signup]) -> dict[str, str]:
    """Return product titles by handle (catalog titles; the handle when unknown)."""
    handles = {signup.product_handle for signup in signups}
    if not handles:
        return {}
    rows = get_session().execute(
        select(Product.handle, Product.title).where(Product.handle.in_(handles))
    )
    coming_soon = coming_soon_products()
    titles = {handle: str(coming_soon.get(handle, {}).get("title") or handle) for handle in handles}
    titles.update({handle: title for handle, title in rows})
    return titles


@bp.get("/waitlist/confirm/<token>")
def confirm_signup(token: str) -> Response:
    """Confirm a signup (double opt-in) from the link in the confirmation email."""
    settings = current_app.config
    max_age = int(settings["WAITLIST_UNCONFIRMED_DAYS"]) * 86400
    session = get_session()
    try:
        outcome = confirm(session, str(settings["SECRET_KEY"]), token, max_age, utcnow())
    except TokenError as exc:
        if exc.expired:
            return message(
                410,
                "This link has expired",
                "Confirmation links work for "
                f"{settings['WAITLIST_UNCONFIRMED_DAYS']} days. "
                "Sign up again on the product page to get a new one.",
                primary=_home(),
            )
        return _invalid_link()
    session.commit()
    if outcome.status == "gone" or outcome.signup is None or outcome.subscriber is None:
        return message(
            404,
            "This signup no longer exists",
            "Unconfirmed signups are removed after "
            f"{settings['WAITLIST_UNCONFIRMED_DAYS']} days. Sign up again on the product page.",
            primary=_home(),
        )
    urls = site_urls(settings)
    title = _titles([outcome.signup])[outcome.signup.product_handle]
    product = Link(urls.absolute(urls.product(outcome.signup.product_handle)), title)
    manage = Link(manage_url(settings, outcome.subscriber), "See or change your waitlists")
    if outcome.status == "left":
        return message(
            200,
            "You left this waitlist",
            f"You are no longer waiting for {title}. Sign up again on its page if you like.",
            primary=product,
            links=(manage,),
        )
    return message(
        200,
        "You're on the list" if outcome.status == "confirmed" else "Already confirmed",
        f"We will email you once when {title} is available.",
        primary=manage,
        links=(product,),
    )


@bp.route("/waitlist/manage/<token>", methods=["GET", "POST"])
def manage(token: str) -> Response:
    """List the person's waitlists, each with a leave button (POST ``leave=<id>``)."""
    settings = current_app.config
    secret = str(settings["SECRET_KEY"])
    try:
        claim = read_subscriber_token(secret, MANAGE_SALT, token)
    except TokenError:
        return _invalid_link()
    session = get_session()
    subscriber = token_subscriber(session, claim)
    if subscriber is None:
        return message(
            200,
            "Nothing to manage",
            "This address is no longer on any of our lists.",
            primary=_home(),
        )
    notice = ""
    if request.method == "POST":
        notice = _leave_from_form(subscriber)
    return _manage_page(subscriber, token, notice)


def _leave_from_form(subscriber: Subscriber) -> str:
    """Apply a leave button's POST; return the notice to show."""
    raw = request.form.get("leave", "")
    if not raw.isdigit():
        return ""
    session = get_session()
    signup = leave(session, subscriber, int(raw), utcnow())
    session.commit()
    if signup is None:
        return ""
    title = _titles([signup])[signup.product_handle]
    return f"You left the waitlist for {title}."


def _manage_page(subscriber: Subscriber, token: str, notice: str) -> Response:
    settings = current_app.config
    urls = site_urls(settings)
    signups = waiting_signups(get_session(), subscriber)
    titles = _titles(signups)
    entries = [
        {
            "id": signup.id,
            "title": titles[signup.product_handle],
            "variant": signup.sku,
            "url": urls.absolute(urls.product(signup.product_handle)),
            "confirmed": signup.status == "confirmed",
            "since": signup.signed_up_at.date().isoformat(),
        }
        for signup in signups
    ]
    return render(
        "subscriber/manage.html.j2",
        200,
        "Your waitlists",
        email=subscriber.email,
        entries=entries,
        notice=notice,
        action=urls.api(f"/waitlist/manage/{token}"),
        unsubscribe_all=unsubscribe_url(settings, subscriber, SCOPE_ALL),
    )


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe_page(token: str) -> Response:
    """GET: a page with an unsubscribe button. POST (RFC 8058 one-click or the button): do it.

    Answers 200 with a page (never a redirect) and sets no cookie; the POST body is not
    required to say ``List-Unsubscribe=One-Click``, as honouring the click is what matters.
    """
    settings = current_app.config
    secret = str(settings["SECRET_KEY"])
    try:
        claim = read_subscriber_token(secret, UNSUBSCRIBE_SALT, token)
    except TokenError:
        return _invalid_link()
    session = get_session()
    subscriber = token_subscriber(session, claim)
    everything = claim.scope == SCOPE_ALL
    title = claim.scope if everything else _titles_for_handle(claim.scope)
    context: Mapping[str, Any] = {
        "done": False,
        "missing": False,
        "everything": everything,
        "title": title,
        "action": site_urls(settings).api(f"/unsubscribe/{token}"),
        "manage": manage_url(settings, subscriber) if subscriber is not None else "",
    }
    if subscriber is None:
        return render(
            "subscriber/unsubscribe.html.j2", 200, "Unsubscribe", **{**context, "missing": True}
        )
    if request.method == "POST":
        unsubscribe(session, secret, subscriber, claim.scope, utcnow())
        session.commit()
        return render(
            "subscriber/unsubscribe.html.j2",
            200,
            "You are unsubscribed",
            **{**context, "done": True, "manage": "" if everything else context["manage"]},
        )
    return render("subscriber/unsubscribe.html.j2", 200, "Unsubscribe", **context)


def _titles_for_handle(handle: str) -> str:
    title = get_session().scalar(select(Product.title).where(Product.handle == handle))
    return title or str(coming_soon_products().get(handle, {}).get("title") or handle)
