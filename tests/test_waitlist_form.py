"""The waitlist form on built pages: its fields, a plain post of them, the demo's signups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from lxml import html as lxml_html
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.content import load_content
from engine.db import get_db, utcnow
from engine.demo import seed_demo
from engine.demo.signups import DEMO_SIGNUPS, seed_signups
from engine.models import ConsentText, Signup, Variant
from engine.pages import make_environment, plan_site, render_page
from engine.settings import bundled_path
from engine.tracking import CHANNELS
from engine.waitlist import consent_version

SITE = "https://shop.test"
API = "https://api.shop.test"
#: Demo products in each state that shows the form (or none).
SOLD_OUT_SIZE = "talus-ridge-runner"  # in stock, size 10 sold out
BACK_SOON = "ridgeline-frameless-35"  # two sizes, both sold out
BACK_SOON_SINGLE = "cairnwood-trekker-2"  # one variant, sold out
COMING_SOON = "ridgeline-ul1-carbon"
IN_STOCK = "ridgeline-ul1-tent"  # every variant sellable: no form


@pytest.fixture
def demo_app(config: dict[str, Any]) -> Iterator[Flask]:
    """An app on the demo catalog and content, with the API on its own host."""
    from engine import create_app

    settings = {
        **config,
        "CONTENT_DIR": str(bundled_path("demo_content")),
        "API_URL": API,
        "WAITLIST_CLIENT_LIMIT": 1000,
        "WAITLIST_MAX_QUANTITY": 5,
    }
    application = create_app(settings)
    database = get_db(application)
    database.upgrade()
    with database.session() as session:
        seed_demo(session)
    yield application
    database.dispose()


def render(app: Flask, handle: str) -> lxml_html.HtmlElement:
    """Plan the demo site and return one product page, parsed."""
    with get_db(app).sessions() as session:
        content = load_content(Path(app.config["CONTENT_DIR"]))
        site = plan_site(session, app.config, content)
    page = next(p for p in site.pages if p.path == f"/products/{handle}/")
    return lxml_html.fromstring(render_page(make_environment(app.config), page))


def form_of(page: lxml_html.HtmlElement) -> lxml_html.FormElement:
    """Return the waitlist form of a page."""
    forms = page.xpath('//section[@id="waitlist"]//form')
    assert len(forms) == 1
    return forms[0]


def not_sellable(session: Session, handle: str) -> set[str]:
    """Return the SKUs of a product's variants that cannot be bought now."""
    rows = session.scalars(
        select(Variant.sku).where(Variant.product.has(handle=handle), Variant.sellable.is_(False))
    )
    return set(rows)


def variant_choices(form: lxml_html.FormElement) -> list[str]:
    """Return the SKUs the variant choice offers (the "any" choice left out)."""
    return [value for value in form.xpath('.//select[@name="variant"]/option/@value') if value]


def test_form_offers_exactly_the_variants_that_cannot_be_bought(demo_app: Flask) -> None:
    with get_db(demo_app).sessions() as session:
        sold_out = not_sellable(session, SOLD_OUT_SIZE)
        back_soon = not_sellable(session, BACK_SOON)
    assert sold_out == {"TL-RR-M-10"}
    in_stock_form = form_of(render(demo_app, SOLD_OUT_SIZE))
    assert variant_choices(in_stock_form) == ["TL-RR-M-10"]
    back_soon_form = form_of(render(demo_app, BACK_SOON))
    assert set(variant_choices(back_soon_form)) == back_soon and len(back_soon) == 2
    # Back soon: the whole product is a choice too ("any size").
    assert back_soon_form.xpath('.//select[@name="variant"]/option[1]/@value') == [""]
    # No variant choice for a single variant or a coming-soon product; the product is named.
    for handle in (BACK_SOON_SINGLE, COMING_SOON):
        form = form_of(render(demo_app, handle))
        assert not form.xpath('.//*[@name="variant"]')
        assert form.xpath('.//input[@name="product"]/@value') == [handle]
    # Nothing sold out: no form at all.
    assert not render(demo_app, IN_STOCK).xpath('//*[@id="waitlist"]')


def test_form_fields_consent_honeypot_and_action(demo_app: Flask) -> None:
    page = render(demo_app, BACK_SOON)
    form = form_of(page)
    assert form.get("method") == "post"
    assert form.get("action") == API + "/api/waitlist"
    email = form.xpath('.//input[@name="email"]')[0]
    assert (email.get("type"), email.get("autocomplete")) == ("email", "email")
    assert email.get("required") is not None
    assert page.xpath('//label[@for="waitlist-email"]')
    consent = form.xpath('.//input[@name="consent"]')[0]
    assert consent.get("type") == "checkbox" and consent.get("checked") is None
    label = page.xpath('//label[@for="waitlist-consent"]')[0].text_content()
    assert label == demo_app.config["WAITLIST_CONSENT_TEXT"]
    assert form.xpath('.//input[@name="consent_version"]/@value') == [consent_version(label)]
    quantity = form.xpath('.//input[@name="quantity"]')[0]
    assert (quantity.get("min"), quantity.get("max")) == ("1", "5")
    assert quantity.get("required") is None
    assert form.xpath('.//input[@name="page"]/@value') == [f"/products/{BACK_SOON}/"]
    honeypot = form.xpath('.//input[@name="website"]')[0]
    assert (honeypot.get("tabindex"), honeypot.get("autocomplete")) == ("-1", "off")
    assert honeypot.getparent().get("aria-hidden") == "true"
    # The thanks a no-JS post comes back to, and the live region the script answers in.
    assert page.xpath('//*[@id="waitlist-thanks"]')
    assert form.xpath('.//*[@role="status"]')
    assert page.xpath('//script[contains(@src, "/assets/waitlist.js")]/@defer')


def test_page_keys_follow_the_form_settings(demo_app: Flask) -> None:
    def keys() -> dict[str, str]:
        with get_db(demo_app).sessions() as session:
            content = load_content(Path(demo_app.config["CONTENT_DIR"]))
            return {p.path: p.key for p in plan_site(session, demo_app.config, content).pages}

    before = keys()
    for name, value in (
        ("WAITLIST_CONSENT_TEXT", "Tell me when it is back."),
        ("WAITLIST_MAX_QUANTITY", 3),
        ("API_URL", "https://signups.shop.test"),
    ):
        demo_app.config[name] = value
        after = keys()
        assert all(after[path] != before[path] for path in before), name
        before = after


def filled(form: lxml_html.FormElement, email: str) -> dict[str, str]:
    """Return the fields a browser would post: the form's own values, filled in."""
    fields = dict(form.form_values())
    # Browsers send empty text fields too (lxml leaves out inputs without a value).
    for field in form.xpath('.//input[@type="text" or @type="email" or @type="number"]'):
        fields.setdefault(field.get("name"), field.get("value") or "")
    fields["email"] = email
    fields["consent"] = form.xpath('.//input[@name="consent"]/@value')[0]
    choices = variant_choices(form)
    if choices:
        fields["variant"] = choices[-1]
    return fields


@pytest.mark.parametrize("handle", [SOLD_OUT_SIZE, BACK_SOON, COMING_SOON])
def test_posting_the_rendered_form_stores_a_pending_signup(demo_app: Flask, handle: str) -> None:
    form = form_of(render(demo_app, handle))
    fields = filled(form, "Walker@Example.com")
    assert set(fields) >= {"email", "consent", "consent_version", "product", "page", "website"}
    assert fields["website"] == "" and fields["quantity"] == ""
    path = form.get("action").removeprefix(API)
    response = demo_app.test_client().post(path, data=fields, headers={"Origin": SITE})
    assert response.status_code == 303
    assert response.headers["Location"] == f"{SITE}/products/{handle}/#waitlist-thanks"
    with get_db(demo_app).sessions() as session:
        signup = session.scalars(select(Signup)).one()
        assert (signup.product_handle, signup.status, signup.via) == (handle, "pending", "form")
        assert signup.sku == fields.get("variant", "")
        assert signup.page == f"/products/{handle}/"
        assert signup.quantity == 1
        assert signup.subscriber is not None and signup.subscriber.address == "walker@example.com"
        assert signup.consent_version == fields["consent_version"]
        assert session.get(ConsentText, signup.consent_version) is not None


def test_posting_the_form_with_the_honeypot_filled_stores_nothing(demo_app: Flask) -> None:
    form = form_of(render(demo_app, BACK_SOON))
    fields = {**filled(form, "bot@example.com"), "website": "https://spam.example"}
    response = demo_app.test_client().post("/api/waitlist", data=fields)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("#waitlist-thanks")
    with get_db(demo_app).sessions() as session:
        assert session.scalar(select(func.count()).select_from(Signup)) == 0


def test_posting_the_form_without_consent_shows_the_problem(demo_app: Flask) -> None:
    form = form_of(render(demo_app, BACK_SOON))
    fields = filled(form, "walker@example.com")
    del fields["consent"]
    response = demo_app.test_client().post("/api/waitlist", data=fields)
    assert response.status_code == 400
    assert "Tick the box" in response.get_data(as_text=True)
    assert f"/products/{BACK_SOON}/#waitlist" in response.get_data(as_text=True)


def test_demo_signups_are_confirmed_and_pending_from_several_channels(demo_app: Flask) -> None:
    db = get_db(demo_app)
    with db.session() as session:
        assert seed_signups(session, demo_app.config, utcnow()) == len(DEMO_SIGNUPS)
    with db.session() as session:
        assert seed_signups(session, demo_app.config, utcnow()) == 0  # idempotent
        signups = list(session.scalars(select(Signup)))
    assert len(signups) == len(DEMO_SIGNUPS)
    statuses = {signup.status for signup in signups}
    assert statuses == {"confirmed", "pending"}
    channels = {signup.channel for signup in signups}
    assert channels <= set(CHANNELS) and len(channels) >= 5
    handles = {signup.product_handle for signup in signups}
    assert {SOLD_OUT_SIZE, BACK_SOON, BACK_SOON_SINGLE, COMING_SOON} <= handles
    assert all(signup.consent_version and signup.client_hash is None for signup in signups)
    assert {s.sku for s in signups if s.product_handle == SOLD_OUT_SIZE} == {"TL-RR-M-10"}
