"""Demo waitlists: confirmed and pending signups on the demo's sold-out and coming-soon products.

Every signup goes through the waitlist's own functions (``resolve_target``, ``sign_up``,
``confirm``), so it carries a consent record and a classified source like a real one. The
addresses are on ``example.com`` (reserved: mail to them reaches nobody), and no
confirmation email is queued. Seeding is idempotent: a signup already there is left alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.content import ContentErrors, load_content
from engine.models import Signup, Subscriber
from engine.waitlist import (
    SignupRequest,
    WaitlistError,
    confirm,
    confirm_token,
    normalize_email,
    resolve_target,
    sign_up,
    site_urls,
)


@dataclass(frozen=True)
class DemoSignup:
    """One demo signup: who, for what, from where, how long ago, and whether confirmed."""

    email: str
    handle: str
    sku: str
    confirmed: bool
    days_ago: int
    quantity: int = 1
    referrer: str = ""
    utm: tuple[tuple[str, str], ...] = ()


def _utm(source: str, medium: str, campaign: str = "") -> tuple[tuple[str, str], ...]:
    values = (("utm_source", source), ("utm_medium", medium), ("utm_campaign", campaign))
    return tuple((name, value) for name, value in values if value)


#: Back soon (cairnwood-trekker-2, ridgeline-frameless-35), one sold-out size
#: (talus-ridge-runner 10) and coming soon (ridgeline-ul1-carbon, talus-fastpack-25), from
#: organic search, email, social, paid, referral and direct visits. Pending signups are
#: recent (unconfirmed ones are purged after WAITLIST_UNCONFIRMED_DAYS).
DEMO_SIGNUPS: tuple[DemoSignup, ...] = (
    DemoSignup("ada.hiker@example.com", "cairnwood-trekker-2", "", True, 12, 1,
               "https://www.google.com/"),
    DemoSignup("ben.trail@example.com", "cairnwood-trekker-2", "", True, 9, 2,
               "", _utm("newsletter", "email", "spring-tents")),
    DemoSignup("cleo.summit@example.com", "cairnwood-trekker-2", "", False, 1, 1,
               "https://duckduckgo.com/"),
    DemoSignup("dan.ridge@example.com", "ridgeline-frameless-35", "RL-FL35-ML", True, 8, 1,
               "https://www.reddit.com/r/Ultralight/"),
    DemoSignup("eva.pack@example.com", "ridgeline-frameless-35", "", True, 6, 1,
               "", _utm("instagram", "social", "ul-packs")),
    DemoSignup("finn.camp@example.com", "ridgeline-frameless-35", "RL-FL35-ML", False, 2, 1,
               "https://www.bing.com/"),
    DemoSignup("gus.runner@example.com", "talus-ridge-runner", "TL-RR-M-10", True, 10, 1,
               "", _utm("google", "cpc", "trail-shoes")),
    DemoSignup("hana.runs@example.com", "talus-ridge-runner", "TL-RR-M-10", True, 4, 2,
               "https://trailrunnerblog.example.net/best-shoes"),
    DemoSignup("ivo.fast@example.com", "talus-ridge-runner", "TL-RR-M-10", False, 0, 1),
    DemoSignup("jun.carbon@example.com", "ridgeline-ul1-carbon", "", True, 14, 1,
               "https://www.google.com/"),
    DemoSignup("kai.light@example.com", "ridgeline-ul1-carbon", "", True, 7, 1,
               "", _utm("facebook", "paid-social", "carbon-teaser")),
    DemoSignup("lea.gram@example.com", "ridgeline-ul1-carbon", "", False, 1, 3,
               "https://www.youtube.com/"),
    DemoSignup("mo.fastpack@example.com", "talus-fastpack-25", "", True, 5, 1,
               "", _utm("newsletter", "email", "coming-soon")),
    DemoSignup("nia.vest@example.com", "talus-fastpack-25", "", False, 3, 1),
)  # fmt: skip


def seed_signups(
    session: Session,
    settings: Mapping[str, Any],
    now: dt.datetime,
    signups: tuple[DemoSignup, ...] = DEMO_SIGNUPS,
) -> int:
    """Add the demo signups that are not there yet; return how many were added.

    Products missing from this catalog or content are skipped, so a store's own content
    folder (without the demo's coming-soon files) still seeds what it can.
    """
    try:
        content = load_content(Path(str(settings["CONTENT_DIR"])))
        coming_soon = {handle: content.products[handle].meta for handle in content.coming_soon()}
    except ContentErrors:
        coming_soon = {}
    urls = site_urls(settings)
    secret = str(settings["SECRET_KEY"])
    site_host = urlsplit(str(settings["SITE_URL"])).hostname or ""
    added = 0
    for demo in signups:
        email = normalize_email(demo.email)
        if _exists(session, email.address, demo.handle, demo.sku):
            continue
        try:
            target = resolve_target(
                session, urls, handle=demo.handle, sku=demo.sku, coming_soon=coming_soon
            )
        except WaitlistError:
            continue
        if target.sellable:
            continue  # restocked while exploring the demo: nobody waits for it
        when = now - dt.timedelta(days=demo.days_ago, hours=3 * (added % 7))
        request = SignupRequest(
            email=email,
            quantity=demo.quantity,
            consent_text=str(settings["WAITLIST_CONSENT_TEXT"]),
            page=urls.product(demo.handle),
            referrer=demo.referrer,
            utm=dict(demo.utm),
            via="json" if demo.referrer or demo.utm else "form",
            site_host=site_host,
        )
        outcome = sign_up(session, settings, request, target, when)
        if outcome.signup is None or outcome.subscriber is None:
            continue  # a suppressed address stays suppressed
        if demo.confirmed:
            token = confirm_token(secret, outcome.subscriber, outcome.signup)
            confirm(session, secret, token, 86400, when + dt.timedelta(minutes=20))
        added += 1
    session.flush()
    return added


def _exists(session: Session, address: str, handle: str, sku: str) -> bool:
    """Return True when this address already has a signup row for the target."""
    found = session.scalar(
        select(Signup.id)
        .join(Subscriber, Signup.subscriber_id == Subscriber.id)
        .where(Subscriber.address == address, Signup.product_handle == handle, Signup.sku == sku)
    )
    return found is not None
