"""The restock email and the approval email: rendered once per campaign, personalized by
substitutions (each person's link token, unsubscribe, manage and re-join links)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jinja2
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.campaigns.status import CampaignError
from engine.mail import RenderedEmail, render_email
from engine.models import Campaign, Product, Subscriber
from engine.pages import format_money
from engine.tracking import LINK_TOKEN_PARAM
from engine.waitlist import (
    SCOPE_ALL,
    TokenError,
    list_unsubscribe_headers,
    manage_url,
    site_urls,
    unsubscribe_url,
)

#: Replaced in each copy by the message id: the per-message link token (``et``).
TOKEN_PLACEHOLDER = "-engine_token-"
#: Replaced in each copy by the person's signed one-click way back onto the waitlist.
REJOIN_PLACEHOLDER = "-rejoin_url-"
REJOIN_SALT = "waitlist-rejoin"
UTM_SOURCE = "restock"
UTM_MEDIUM = "email"


def tracked_url(url: str, campaign_id: int, token: str = TOKEN_PLACEHOLDER) -> str:
    """Return a link with the campaign's UTM parameters and the per-message token."""
    parts = urlsplit(url)
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not key.startswith("utm_") and key != LINK_TOKEN_PARAM
    ]
    query += [
        ("utm_source", UTM_SOURCE),
        ("utm_medium", UTM_MEDIUM),
        ("utm_campaign", str(campaign_id)),
        (LINK_TOKEN_PARAM, token),
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="-")))


def rejoin_token(secret: str, subscriber: Subscriber, message_id: str) -> str:
    """Return the signed, never-expiring token of a restock email's re-join link."""
    serializer = URLSafeSerializer(secret, salt=REJOIN_SALT)
    return str(serializer.dumps([subscriber.id, subscriber.token_key, message_id]))


def read_rejoin_token(secret: str, token: str) -> tuple[int, str, str]:
    """Return (subscriber id, token key, message id) from a re-join token."""
    try:
        data = URLSafeSerializer(secret, salt=REJOIN_SALT).loads(token)
    except BadData:
        raise TokenError("This link is not valid.") from None
    if not (isinstance(data, list) and len(data) == 3 and all(data)):
        raise TokenError("This link is not valid.")
    subscriber_id, key, message_id = data
    if not (
        isinstance(subscriber_id, int) and isinstance(key, str) and isinstance(message_id, str)
    ):
        raise TokenError("This link is not valid.")
    return subscriber_id, key, message_id


def rejoin_url(settings: Mapping[str, Any], subscriber: Subscriber, message_id: str) -> str:
    """Return the absolute re-join link (on ``API_URL``)."""
    token = rejoin_token(str(settings["SECRET_KEY"]), subscriber, message_id)
    return site_urls(settings).api(f"/waitlist/rejoin/{token}")


@dataclass(frozen=True)
class Personalization:
    """What is one person's own in a restock email."""

    substitutions: dict[str, str]
    headers: dict[str, str]


def personalize(
    settings: Mapping[str, Any], subscriber: Subscriber, message_id: str
) -> Personalization:
    """Return a person's substitutions (token and links) and one-click unsubscribe headers."""
    from engine.mail import MANAGE_URL_TOKEN, UNSUBSCRIBE_URL_TOKEN

    unsubscribe = unsubscribe_url(settings, subscriber, SCOPE_ALL)
    return Personalization(
        substitutions={
            TOKEN_PLACEHOLDER: message_id,
            UNSUBSCRIBE_URL_TOKEN: unsubscribe,
            MANAGE_URL_TOKEN: manage_url(settings, subscriber),
            REJOIN_PLACEHOLDER: rejoin_url(settings, subscriber, message_id),
        },
        headers=list_unsubscribe_headers(settings, unsubscribe),
    )


def _first_image(product: Product, skus: list[str]) -> str:
    for variant in product.variants:
        if variant.sku in skus and variant.image:
            return str(variant.image)
    for image in product.images or []:
        if isinstance(image, Mapping) and image.get("src"):
            return str(image["src"])
        if isinstance(image, str) and image:
            return image
    return ""


def restock_context(
    session: Session, settings: Mapping[str, Any], campaign: Campaign
) -> dict[str, Any]:
    """Return what the restock templates show: the product, its tracked links, the price."""
    product = session.scalar(select(Product).where(Product.handle == campaign.product_handle))
    if product is None:
        raise CampaignError(
            f"campaign {campaign.id}: product {campaign.product_handle!r} is not in the catalog"
        )
    urls = site_urls(settings)
    skus = [str(sku) for sku in campaign.skus or []]
    returned = [v for v in product.variants if v.sellable and (not skus or v.sku in skus)]
    shown = returned or [v for v in product.variants if v.sellable] or list(product.variants)
    prices = [v.price for v in shown]
    single = len(product.variants) == 1
    variant_titles = [] if single else [v.title for v in returned if v.title != "Default Title"]
    buy = urls.buy(product.handle, returned[0].id if len(returned) == 1 and not single else None)
    image = _first_image(product, skus)
    return {
        "campaign_id": campaign.id,
        "product_title": product.title,
        "variant_titles": variant_titles,
        "price": format_money(min(prices), str(settings.get("CURRENCY") or "USD"))
        if prices
        else "",
        "image_url": urls.absolute(image) if image else "",
        "product_url": tracked_url(urls.absolute(urls.product(product.handle)), campaign.id),
        "buy_url": tracked_url(buy, campaign.id),
        "home_url": tracked_url(urls.absolute("/"), campaign.id),
        "rejoin_url": REJOIN_PLACEHOLDER,
    }


def render_restock(
    session: Session, settings: Mapping[str, Any], env: jinja2.Environment, campaign: Campaign
) -> RenderedEmail:
    """Render a campaign's restock email once, with placeholders for each person's parts."""
    return render_email(env, "restock", settings, restock_context(session, settings, campaign))


def render_approval(
    settings: Mapping[str, Any],
    env: jinja2.Environment,
    campaign: Campaign,
    preview: RenderedEmail,
    plan_line: str,
) -> RenderedEmail:
    """Render the email asking the marketer to approve a draft campaign."""
    context = {
        "campaign_id": campaign.id,
        "product_handle": campaign.product_handle,
        "plan": plan_line,
        "preview_subject": preview.subject,
        "preview_text": preview.text,
        "command": f"engine campaigns send {campaign.id}",
        "preview_command": f"engine campaigns preview {campaign.id}",
        "cancel_command": f"engine campaigns cancel {campaign.id}",
        # The marketer is not on a list: the footer links lead to the site.
        "unsubscribe_url": str(settings["SITE_URL"]) + "/",
        "manage_url": str(settings["SITE_URL"]) + "/",
    }
    return render_email(env, "campaign_approval", settings, context)
