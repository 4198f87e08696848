"""``/waitlist/rejoin/<token>``: the restock email's way back onto the waitlist it used up."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select

from engine.db import get_session, utcnow
from engine.models import Campaign, CampaignMessage, Product
from engine.waitlist import TokenError, is_suppressed, manage_url, site_urls, token_subscriber
from engine.web.subscriber import message, render

bp = Blueprint("rejoin", __name__)


@bp.route("/waitlist/rejoin/<token>", methods=["GET", "POST"])
def rejoin_page(token: str) -> Response:
    """GET: a page with one button (mail scanners prefetch links). POST: back on the list."""
    from engine.campaigns import read_rejoin_token, rejoin

    settings = current_app.config
    secret = str(settings["SECRET_KEY"])
    try:
        subscriber_id, key, message_id = read_rejoin_token(secret, token)
    except TokenError:
        return message(404, "This link does not work", "Try the link in the email again.")
    session = get_session()
    subscriber = token_subscriber(session, (subscriber_id, key))
    handle = session.scalar(
        select(Campaign.product_handle)
        .join(CampaignMessage, CampaignMessage.campaign_id == Campaign.id)
        .where(CampaignMessage.message_id == message_id)
    )
    title = ""
    if handle:
        title = session.scalar(select(Product.title).where(Product.handle == handle)) or handle
    context = {
        "done": False,
        "missing": subscriber is None
        or handle is None
        or is_suppressed(session, secret, subscriber.address),
        "title": title,
        "action": site_urls(settings).api(f"/waitlist/rejoin/{token}"),
        "manage": manage_url(settings, subscriber) if subscriber is not None else "",
    }
    if context["missing"] or request.method != "POST":
        return render("subscriber/rejoin.html.j2", 200, "Back on the waitlist?", **context)
    assert subscriber is not None
    waiting = rejoin(session, subscriber.id, key, message_id, utcnow())
    session.commit()
    if not waiting:
        context["missing"] = True
        return render("subscriber/rejoin.html.j2", 200, "Back on the waitlist?", **context)
    return render(
        "subscriber/rejoin.html.j2",
        200,
        "You are back on the waitlist",
        **{**context, "done": True},
    )
