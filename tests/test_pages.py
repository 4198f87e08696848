"""Pages: which pages exist per product state, what they show, their markup and their keys."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import textwrap
from collections import Counter
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from lxml import html as lxml_html
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.catalog import set_stock
from engine.content import ContentErrors, load_content
from engine.models import Product, Variant
from engine.pages import (
    Site,
    format_money,
    jsonld_dumps,
    make_environment,
    plan_site,
    price_valid_until,
    render_page,
)
from engine.urls import SiteURLs

GOLDEN = Path(__file__).resolve().parent / "golden" / "pages"
SITE = "https://shop.test"
SCHEMA = "https://schema.org/"

# ------------------------------------------------------------------ factories


def make_product(
    session: Session,
    handle: str,
    title: str,
    variants: list[dict[str, Any]],
    *,
    option_names: list[str] | None = None,
    product_type: str = "",
    tags: list[str] | None = None,
    vendor: str = "Ridgeline",
    body: str = "",
    images: list[Any] | None = None,
    status: str = "active",
    published: bool = True,
    seo_title: str = "",
    seo_description: str = "",
) -> Product:
    """Add a product with its variants; stock goes through the one stock function."""
    product = Product(
        handle=handle,
        title=title,
        body_html=body,
        vendor=vendor,
        product_type=product_type,
        tags=tags or [],
        status=status,
        published=published,
        seo_title=seo_title,
        seo_description=seo_description,
        option_names=option_names or [],
        images=images or [],
        metafields={},
    )
    session.add(product)
    session.flush()
    for position, spec in enumerate(variants, start=1):
        values = spec.get("options", ["Default Title"])
        variant = Variant(
            product=product,
            sku=spec.get("sku"),
            option_key="/".join(values),
            option_values=values,
            position=position,
            price=Decimal(spec.get("price", "10.00")),
            compare_at_price=Decimal(spec["compare_at"]) if spec.get("compare_at") else None,
            barcode=spec.get("barcode", ""),
            grams=spec.get("grams", 0),
            image=spec.get("image", ""),
        )
        session.add(variant)
        session.flush()
        set_stock(
            session,
            variant,
            spec.get("stock", 5),
            tracked=spec.get("tracked", True),
            policy=spec.get("policy", "deny"),
            source="import",
            new=True,
        )
    session.flush()
    return product


def write(folder: Path, relative: str, text: str) -> None:
    """Write one content file."""
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def make_catalog(session: Session) -> None:
    """Add a small outdoor store's catalog covering every page state."""
    make_product(
        session,
        "solo-tent",
        "Solo Tent",
        [
            {
                "sku": "ST-1",
                "price": "299.00",
                "compare_at": "349.00",
                "stock": 5,
                "barcode": "0850012340011",
                "grams": 1050,
            }
        ],
        product_type="Tent",
        tags=["ultralight"],
        body="<p>A one-person tent that packs to the size of a water bottle.</p>",
        images=[{"src": "/assets/products/solo-tent.svg", "alt": "Solo Tent pitched"}],
    )
    make_product(
        session,
        "duo-tent",
        "Duo Tent",
        [
            {"sku": "DT-SG", "options": ["Sage"], "price": "429.00", "stock": 3, "grams": 1290},
            {"sku": "DT-SD", "options": ["Sand"], "price": "429.00", "stock": 2, "grams": 1290},
        ],
        option_names=["Color"],
        product_type="Tent",
        body="<p>Two doors, two vestibules and room for two pads.</p>",
        images=["/assets/products/duo-tent.svg"],
    )
    make_product(
        session,
        "trail-pack",
        "Trail Pack 40",
        [
            {"sku": "TP-S", "options": ["S"], "price": "189.00", "stock": 4, "grams": 980},
            {"sku": "TP-M", "options": ["M"], "price": "189.00", "stock": 0, "grams": 1010},
            {"sku": "TP-L", "options": ["L"], "price": "199.00", "stock": 2, "grams": 1040},
        ],
        option_names=["Size"],
        product_type="Backpack",
        tags=["packs"],
        vendor="Talus",
        body="<p>A 40-litre pack for fast weekends.</p>",
        images=[{"src": "https://cdn.example.com/trail-pack.jpg", "alt": "Trail Pack 40"}],
    )
    make_product(
        session,
        "down-quilt",
        "Down Quilt 20",
        [{"sku": "DQ-1", "price": "349.00", "stock": 0, "policy": "continue"}],
        product_type="Sleeping Bag",
        vendor="Ember",
        body="<p>An 850-fill quilt rated to 20°F.</p>",
        images=["/assets/products/down-quilt.svg"],
    )
    make_product(
        session,
        "storm-shell",
        "Storm Shell Jacket",
        [
            {"sku": "SS-S", "options": ["S", "Red"], "price": "259.00", "stock": 0},
            {"sku": "SS-M", "options": ["M", "Red"], "price": "259.00", "stock": 0},
        ],
        option_names=["Size", "Color"],
        product_type="Jacket",
        tags=["packs"],
        vendor="Northfork",
        body="<p>A waterproof shell that packs into its own pocket.</p>",
        images=["/assets/products/storm-shell.svg"],
    )
    make_product(
        session,
        "camp-mug",
        "Camp Mug",
        [{"sku": "CM-1", "price": "19.00", "stock": 0, "tracked": False}],
        product_type="Kitchen",
        vendor="Ember",
        body="<p>Titanium, 450 ml.</p>",
    )
    make_product(session, "old-tent", "Old Tent", [{"sku": "OT-1"}], status="archived")
    make_product(session, "retired-stove", "Retired Stove", [{"sku": "RS-1"}], status="archived")
    make_product(session, "draft-lamp", "Draft Lamp", [{"sku": "DL-1"}], status="draft")
    make_product(session, "hidden-cup", "Hidden Cup", [{"sku": "HC-1"}], published=False)


def make_content(folder: Path) -> None:
    """Write the store's Markdown: categories, comparisons, guides, pages, product copy."""
    write(
        folder,
        "categories/tents.md",
        """
        ---
        title: Tents
        description: Ultralight tents for one and two people.
        types: [Tent]
        ---
        Shelters we have pitched in wind and rain.
        """,
    )
    write(
        folder,
        "categories/packs.md",
        """
        ---
        title: Packs and shells
        description: Backpacks and the shells that keep them dry.
        tags: [packs]
        ---
        Carry less, carry it better.
        """,
    )
    write(
        folder,
        "categories/sleep.md",
        """
        ---
        title: Sleep
        description: Quilts and bags for cold nights.
        types: [Sleeping Bag]
        products: [camp-mug]
        ---
        Warm nights start here.
        """,
    )
    write(
        folder,
        "products/solo-tent.md",
        """
        ---
        description: The Solo Tent weighs 1.05 kg and pitches in three minutes.
        attributes:
          Capacity: 1 person
          Doors: 1
        faq:
          - question: Is it freestanding?
            answer: Semi-freestanding; it needs **two** stakes.
        ---
        Tested on the Pacific Crest Trail for a whole season.
        """,
    )
    write(
        folder,
        "products/duo-tent.md",
        """
        ---
        attributes:
          Capacity: 2 people
          Doors: 2
        ---
        """,
    )
    write(
        folder,
        "products/old-tent.md",
        """
        ---
        replaced_by: solo-tent
        ---
        """,
    )
    write(
        folder,
        "products/cloud-bivy.md",
        """
        ---
        status: coming-soon
        title: Cloud Bivy
        description: A 400-gram bivy with a bug-net hood, arriving next spring.
        price: 199.00
        available_from: 2027-03-01
        category: tents
        image: /assets/products/cloud-bivy.svg
        image_alt: Cloud Bivy on a granite ledge
        ---
        The lightest shelter we have ever made.
        """,
    )
    write(
        folder,
        "products/peak-poles.md",
        """
        ---
        status: coming-soon
        title: Peak Trekking Poles
        description: Carbon trekking poles we are thinking about making. Tell us if you want them.
        ---
        Folding carbon poles at 290 g a pair.
        """,
    )
    write(
        folder,
        "comparisons/solo-tent-vs-duo-tent.md",
        """
        ---
        products: [solo-tent, duo-tent]
        description: Solo Tent or Duo Tent? Weight, space and price side by side.
        attributes: [price, availability, weight, Capacity, Doors]
        ---
        Pick the Solo for weight, the Duo for room.
        """,
    )
    write(
        folder,
        "guides/choosing-a-tent.md",
        """
        ---
        title: Choosing a backpacking tent
        description: How to choose a backpacking tent by weight, space and weather.
        products: [solo-tent, duo-tent, cloud-bivy, storm-shell]
        ---
        ## Weight first

        Every gram counts on a long trail.
        """,
    )
    write(
        folder,
        "pages/about.md",
        """
        ---
        title: About us
        description: Who we are and why we test every product on the trail.
        ---
        We are a small team of hikers.
        """,
    )
    write(folder, "assets/products/solo-tent.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>")


SETTINGS = {
    "SITE_NAME": "Trail Shop",
    "SITE_DESCRIPTION": "Outdoor gear, tested on the trail.",
    "CATEGORY_PAGE_SIZE": 2,
    "PRICE_VALID_UNTIL": "2027-12-31",
}


@pytest.fixture
def store_app(config: dict[str, Any]) -> Iterator[Flask]:
    """An app with the test store's settings (two products per category page)."""
    from engine import create_app
    from engine.db import get_db

    application = create_app({**config, **SETTINGS})
    database = get_db(application)
    database.upgrade()
    yield application
    database.dispose()


@pytest.fixture
def store(store_app: Flask) -> Iterator[tuple[Flask, Session]]:
    """The test store: catalog committed, content written; yields the app and a session."""
    from engine.db import get_db

    make_content(Path(store_app.config["CONTENT_DIR"]))
    with get_db(store_app).sessions() as session:
        make_catalog(session)
        session.commit()
        yield store_app, session


def plan(app: Flask, session: Session, base_url: str | None = None) -> Site:
    """Plan the store's site from its content folder."""
    content = load_content(Path(app.config["CONTENT_DIR"]))
    return plan_site(session, app.config, content, base_url=base_url)


def render_all(app: Flask, site: Site) -> dict[str, bytes]:
    """Render every page of a plan."""
    env = make_environment(app.config)
    return {page.path: render_page(env, page) for page in site.pages}


def jsonld(document: bytes) -> list[dict[str, Any]]:
    """Return the JSON-LD objects of a rendered page."""
    tree = lxml_html.fromstring(document)
    return [
        json.loads(script.text) for script in tree.xpath('//script[@type="application/ld+json"]')
    ]


def of_type(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Return the JSON-LD objects of one type."""
    return [item for item in items if item["@type"] == kind]


def text_of(document: bytes, xpath: str) -> list[str]:
    """Return the whitespace-normalized text of the elements an XPath selects."""
    tree = lxml_html.fromstring(document)
    return [" ".join(node.text_content().split()) for node in tree.xpath(xpath)]


def attribute(document: bytes, xpath: str) -> list[str]:
    """Return the attribute values an XPath selects."""
    return [str(value) for value in lxml_html.fromstring(document).xpath(xpath)]


def test_product_pages_plan_their_lists_when_rendered(store: tuple[Flask, Session]) -> None:
    app, session = store
    site = plan(app, session)
    product = site.page("/products/solo-tent/")
    assert product is not None and product.fill is not None
    assert list(product.context) == ["page"]  # the plan keeps only the page's meta
    whole = product.materialized()
    assert whole.fill is None and whole.context["product"].handle == "solo-tent"
    assert [card.handle for card in whole.context["related"]]
    assert whole.key == product.key
    env = make_environment(app.config)
    assert render_page(env, whole) == render_page(env, product)


def test_category_pages_render_right_after_the_products_they_list(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    site = plan(app, session)
    order = sorted(site.pages, key=lambda page: page.render_rank)
    rank = {page.path: position for position, page in enumerate(order)}
    assert len(set(rank.values())) == len(site.pages)
    category_pages = [page for page in order if page.path.startswith("/categories/")]
    assert len(category_pages) >= 2
    for page in category_pages:
        listed = [card.path for card in page.full_context()["products"]]
        # Each page follows its own products, which follow the category's previous page.
        assert [rank[path] for path in listed] == list(
            range(rank[page.path] - len(listed), rank[page.path])
        ) or not listed


# ------------------------------------------------------------------ golden files

GOLDEN_PAGES = {
    "/products/solo-tent/": "product-in-stock-single-variant.html",
    "/products/trail-pack/": "product-in-stock-one-size-sold-out.html",
    "/products/down-quilt/": "product-backorder.html",
    "/products/storm-shell/": "product-back-soon.html",
    "/products/cloud-bivy/": "product-coming-soon-with-price.html",
    "/products/peak-poles/": "product-coming-soon-without-price.html",
    "/categories/tents/": "category-page-1.html",
    "/categories/tents/page/2/": "category-page-2.html",
    "/compare/solo-tent-vs-duo-tent/": "comparison.html",
    "/guides/choosing-a-tent/": "guide.html",
    "/about/": "page.html",
    "/": "home.html",
    "/404.html": "404.html",
}


def check_golden(name: str, data: bytes) -> None:
    """Compare rendered bytes with a committed golden file (UPDATE_GOLDEN=1 rewrites it)."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.is_file(), f"no golden file {path}; run with UPDATE_GOLDEN=1 and review it"
    assert data.decode() == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def test_pages_match_golden_files(store: tuple[Flask, Session]) -> None:
    app, session = store
    pages = render_all(app, plan(app, session))
    for path, name in GOLDEN_PAGES.items():
        check_golden(name, pages[path])


# ------------------------------------------------------------------ which pages exist


def test_page_states_decide_which_pages_exist(store: tuple[Flask, Session]) -> None:
    app, session = store
    site = plan(app, session)
    templates = {page.path: page.template for page in site.pages}
    assert templates["/products/solo-tent/"] == "pages/product.html.j2"
    assert templates["/products/down-quilt/"] == "pages/product.html.j2"  # backorder sells
    assert templates["/products/camp-mug/"] == "pages/product.html.j2"  # untracked sells
    assert templates["/products/storm-shell/"] == "pages/back-soon.html.j2"
    assert templates["/products/cloud-bivy/"] == "pages/coming-soon.html.j2"
    for hidden in ("draft-lamp", "hidden-cup", "old-tent", "retired-stove"):
        assert f"/products/{hidden}/" not in templates
    rules = {rule.source: (rule.target, rule.status) for rule in site.redirects}
    assert rules == {
        "/products/old-tent/": ("/products/solo-tent/", 301),
        "/products/retired-stove/": (None, 410),
        "/compare/duo-tent-vs-solo-tent/": ("/compare/solo-tent-vs-duo-tent/", 301),
    }
    assert [page.path for page in site.pages if not page.indexable] == ["/404.html", "/410.html"]
    assert "/assets/style.css" in site.assets and "/assets/favicon.ico" in site.assets
    assert "/assets/products/solo-tent.svg" in site.assets


def test_back_soon_page_keeps_content_and_price_without_buy_link(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    page = render_all(app, plan(app, session))["/products/storm-shell/"]
    assert text_of(page, "//h1") == ["Storm Shell Jacket"]
    assert "A waterproof shell" in page.decode()
    assert text_of(page, '//p[@class="price"]') == ["$259.00"]
    assert not attribute(page, '//a[contains(@href, "checkout.shop.test")]/@href')
    assert attribute(page, '//section[@id="waitlist"]//form/@action') == [
        "https://shop.test/api/waitlist"
    ]


def test_in_stock_page_links_to_the_store_and_lists_sold_out_variants(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    page = render_all(app, plan(app, session))["/products/trail-pack/"]
    assert attribute(page, '//a[@class="button"]/@href') == [
        "https://checkout.shop.test/products/trail-pack"
    ]
    assert text_of(page, '//table[@class="variants"]/caption') == ["Options and availability"]
    assert text_of(page, '//tr[@class="is-outofstock"]/td') == ["M", "$189.00", "Sold out"]
    assert "Sold out right now: Size M." in text_of(page, '//section[@id="waitlist"]')[0]
    solo = render_all(app, plan(app, session))["/products/solo-tent/"]
    assert not attribute(solo, '//section[@id="waitlist"]/@id')  # nothing sold out


def test_discontinued_successor_chain_and_dead_ends(store: tuple[Flask, Session]) -> None:
    app, session = store
    content = Path(app.config["CONTENT_DIR"])
    write(content, "products/retired-stove.md", "---\nreplaced_by: old-tent\n---\n")
    rules = {rule.source: rule for rule in plan(app, session).redirects}
    # retired-stove -> old-tent (archived) -> solo-tent (live): one hop for the shopper
    assert rules["/products/retired-stove/"].target == "/products/solo-tent/"
    write(content, "products/old-tent.md", "---\nreplaced_by: retired-stove\n---\n")
    rules = {rule.source: rule for rule in plan(app, session).redirects}
    assert rules["/products/old-tent/"].status == 410  # a loop has no successor


def test_coming_soon_file_becomes_a_catalog_page_when_the_product_arrives(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    make_product(
        session, "cloud-bivy", "Cloud Bivy", [{"sku": "CB-1", "price": "209.00"}],
        product_type="Tent",
    )  # fmt: skip
    site = plan(app, session)
    bivy = next(page for page in site.pages if page.path == "/products/cloud-bivy/")
    assert bivy.template == "pages/product.html.j2"
    page = render_page(make_environment(app.config), bivy)
    assert text_of(page, '//p[@class="price"]') == ["$209.00"]
    assert "The lightest shelter we have ever made." in page.decode()  # the file's copy stays
    offer = of_type(jsonld(page), "Product")[0]["offers"]
    assert offer["availability"] == SCHEMA + "InStock"


def test_category_pages_have_their_own_title_canonical_and_item_list(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    pages = render_all(app, plan(app, session))
    first, second = pages["/categories/tents/"], pages["/categories/tents/page/2/"]
    assert text_of(first, "//title") == ["Tents | Trail Shop"]
    assert text_of(second, "//title") == ["Tents – Page 2 | Trail Shop"]
    assert attribute(second, '//link[@rel="canonical"]/@href') == [
        f"{SITE}/categories/tents/page/2/"
    ]
    for page in (first, second):
        items = jsonld(page)
        assert not of_type(items, "Product") and not of_type(items, "ProductGroup")
        (item_list,) = of_type(items, "ItemList")
        shown = attribute(page, '//main//ul[@class="grid"]//a[@class="card-link"]/@href')
        assert [element["url"] for element in item_list["itemListElement"]] == shown
        positions = [element["position"] for element in item_list["itemListElement"]]
        assert positions == list(range(1, len(shown) + 1))
    # listed, then by title: Cloud Bivy (coming soon, declared), Duo Tent | Solo Tent
    assert text_of(first, '//main//h3[@class="card-title"]') == ["Cloud Bivy", "Duo Tent"]
    assert text_of(second, '//main//h3[@class="card-title"]') == ["Solo Tent"]
    assert attribute(first, '//nav[@class="pagination"]//a[@rel="next"]/@href') == [
        f"{SITE}/categories/tents/page/2/"
    ]
    sleep = pages["/categories/sleep/"]
    assert text_of(sleep, '//main//h3[@class="card-title"]') == ["Camp Mug", "Down Quilt 20"]


def test_comparison_table_uses_catalog_and_front_matter(store: tuple[Flask, Session]) -> None:
    app, session = store
    page = render_all(app, plan(app, session))["/compare/solo-tent-vs-duo-tent/"]
    rows = [
        [" ".join(cell.text_content().split()) for cell in row]
        for row in lxml_html.fromstring(page).xpath('//table[@class="compare"]/tbody/tr')
    ]
    assert rows == [
        ["Price", "$299.00", "$429.00"],
        ["Availability", "In stock", "In stock"],
        ["Weight", "1.05 kg", "1.29 kg"],
        ["Capacity", "1 person", "2 people"],
        ["Doors", "1", "2"],
    ]
    assert text_of(page, '//table[@class="compare"]/caption') == ["Solo Tent and Duo Tent compared"]
    solo = render_all(app, plan(app, session))["/products/solo-tent/"]
    assert f"{SITE}/compare/solo-tent-vs-duo-tent/" in attribute(
        solo, '//section[@class="see-also"]//a/@href'
    )


def test_comparison_row_without_data_is_a_content_error(store: tuple[Flask, Session]) -> None:
    app, session = store
    write(
        Path(app.config["CONTENT_DIR"]),
        "comparisons/trail-pack-vs-storm-shell.md",
        """
        ---
        products: [trail-pack, storm-shell]
        description: Pack or shell?
        attributes:
          - price
          - weight
        ---
        """,
    )
    with pytest.raises(ContentErrors) as caught:
        plan(app, session)
    assert [str(error) for error in caught.value.errors] == [
        "comparisons/trail-pack-vs-storm-shell.md:6: no 'weight' data for 'storm-shell'; "
        "compare only what both products state"
    ]


def test_comparison_of_a_product_without_page_is_not_published(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    duo = session.scalars(select(Product).where(Product.handle == "duo-tent")).one()
    duo.status = "archived"
    site = plan(app, session)
    paths = {page.path for page in site.pages}
    assert "/compare/solo-tent-vs-duo-tent/" not in paths
    assert "/compare/duo-tent-vs-solo-tent/" not in {rule.source for rule in site.redirects}


def test_unknown_handles_raise_content_errors_with_lines(store: tuple[Flask, Session]) -> None:
    app, session = store
    write(
        Path(app.config["CONTENT_DIR"]),
        "guides/bad.md",
        "---\ntitle: Bad\ndescription: Bad guide.\nproducts:\n  - solo-tent\n  - nope\n---\n",
    )
    with pytest.raises(ContentErrors) as caught:
        plan(app, session)
    assert [str(error) for error in caught.value.errors] == [
        "guides/bad.md:6: unknown product 'nope'"
    ]


def test_guide_shows_live_availability_of_featured_products(store: tuple[Flask, Session]) -> None:
    app, session = store
    page = render_all(app, plan(app, session))["/guides/choosing-a-tent/"]
    badges = text_of(page, '//main//p[@class="card-meta"]/span[starts-with(@class, "badge")]')
    assert badges == ["In stock", "In stock", "Coming soon", "Sold out – back soon"]
    set_stock(session, session.scalars(select(Variant).where(Variant.sku == "ST-1")).one(), 0,
              source="cli")  # fmt: skip
    page = render_all(app, plan(app, session))["/guides/choosing-a-tent/"]
    badges = text_of(page, '//main//p[@class="card-meta"]/span[starts-with(@class, "badge")]')
    assert badges[0] == "Sold out – back soon"


def test_related_products_come_from_front_matter_or_the_category(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    pages = render_all(app, plan(app, session))
    related = '//section[@class="related"]//h3'
    # the next products in the category's order, wrapping round
    assert text_of(pages["/products/duo-tent/"], related) == ["Solo Tent", "Cloud Bivy"]
    assert text_of(pages["/products/solo-tent/"], related) == ["Cloud Bivy", "Duo Tent"]
    write(
        Path(app.config["CONTENT_DIR"]),
        "products/duo-tent.md",
        "---\nrelated: [trail-pack, draft-lamp]\nattributes:\n  Capacity: 2\n  Doors: 2\n---\n",
    )
    pages = render_all(app, plan(app, session))
    assert text_of(pages["/products/duo-tent/"], related) == ["Trail Pack 40"]


# ------------------------------------------------------------------ head tags and markup


def test_every_indexable_page_has_unique_title_description_and_self_canonical(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    site = plan(app, session)
    pages = render_all(app, site)
    titles, descriptions = Counter(), Counter()
    for plan_ in site.pages:
        page = pages[plan_.path]
        assert page.startswith(b'<!doctype html>\n<html lang="en">')
        assert len(text_of(page, "//h1")) == 1, plan_.path
        assert len(text_of(page, "//main")) == 1
        if not plan_.indexable:
            assert attribute(page, '//meta[@name="robots"]/@content') == ["noindex"]
            assert not attribute(page, '//link[@rel="canonical"]/@href')
            continue
        (title,) = text_of(page, "//title")
        (description,) = attribute(page, '//meta[@name="description"]/@content')
        assert title and description, plan_.path
        titles[title] += 1
        descriptions[description] += 1
        url = SITE + plan_.path
        assert attribute(page, '//link[@rel="canonical"]/@href') == [url]
        assert attribute(page, '//meta[@property="og:url"]/@content') == [url]
        assert attribute(page, '//meta[@property="og:title"]/@content') == [title]
        assert attribute(page, '//meta[@name="twitter:card"]/@content')
        for image in lxml_html.fromstring(page).xpath("//img"):
            assert image.get("alt") is not None, plan_.path
        for href in attribute(page, "//a/@href"):
            assert href.startswith(("https://", "#")), (plan_.path, href)
    assert max(titles.values()) == 1 and max(descriptions.values()) == 1


def test_duplicate_titles_are_made_unique(store: tuple[Flask, Session]) -> None:
    app, session = store
    body = "<p>A one-person tent that packs to the size of a water bottle.</p>"
    make_product(session, "solo-tent-2", "Solo Tent", [{"sku": "ST-2"}], body=body)
    site = plan(app, session)
    pages = render_all(app, site)
    assert text_of(pages["/products/solo-tent/"], "//title") == ["Solo Tent | Trail Shop"]
    assert text_of(pages["/products/solo-tent-2/"], "//title") == [
        "Solo Tent | Trail Shop (solo-tent-2)"
    ]


def check_offer(offer: dict[str, Any], visible_prices: list[str]) -> None:
    """Check an Offer against Google's merchant-listing required and recommended properties."""
    assert offer["@type"] == "Offer"
    assert re.fullmatch(r"\d+\.\d{2}", offer["price"])
    assert offer["priceCurrency"] == "USD"
    assert format_money(Decimal(offer["price"])) in " ".join(visible_prices)
    assert offer["availability"] in {
        SCHEMA + name for name in ("InStock", "OutOfStock", "BackOrder", "PreOrder")
    }
    assert offer["itemCondition"] == SCHEMA + "NewCondition"
    assert offer["url"].startswith(SITE + "/products/")
    assert offer["priceValidUntil"] == "2027-12-31"
    shipping = offer["shippingDetails"]
    assert shipping["@type"] == "OfferShippingDetails"
    assert shipping["shippingRate"] == {
        "@type": "MonetaryAmount",
        "value": "0.00",
        "currency": "USD",
    }
    assert shipping["shippingDestination"]["addressCountry"] == "US"
    assert shipping["deliveryTime"]["transitTime"]["unitCode"] == "DAY"
    returns = offer["hasMerchantReturnPolicy"]
    assert returns["@type"] == "MerchantReturnPolicy"
    assert returns["applicableCountry"] == "US"
    assert returns["returnPolicyCategory"] == SCHEMA + "MerchantReturnFiniteReturnWindow"
    assert returns["merchantReturnDays"] == 30
    assert returns["returnFees"] == SCHEMA + "FreeReturn"


def test_product_markup_meets_google_product_snippet_and_merchant_listing(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    pages = render_all(app, plan(app, session))
    expected = {
        "solo-tent": ["InStock"],
        "trail-pack": ["InStock", "OutOfStock", "InStock"],
        "down-quilt": ["BackOrder"],
        "storm-shell": ["OutOfStock", "OutOfStock"],
        "camp-mug": ["InStock"],
        "duo-tent": ["InStock", "InStock"],
        "cloud-bivy": ["PreOrder"],
    }
    for handle, availability in expected.items():
        page = pages[f"/products/{handle}/"]
        items = jsonld(page)
        products = of_type(items, "Product") + of_type(items, "ProductGroup")
        assert len(products) == 1, handle
        (product,) = products
        assert product["@context"] == "https://schema.org"
        assert product["name"] == text_of(page, "//h1")[0]
        assert product["url"] == f"{SITE}/products/{handle}/"
        assert product["description"] == attribute(page, '//meta[@name="description"]/@content')[0]
        prices = text_of(page, '//p[@class="price"] | //table[@class="variants"]//td')
        if product["@type"] == "ProductGroup":
            assert product["productGroupID"] == handle
            assert product["variesBy"]
            variants = product["hasVariant"]
            for variant in variants:
                assert variant["@type"] == "Product"
                assert variant["name"] and variant["image"] and variant["sku"]
                check_offer(variant["offers"], prices)
            offers = [variant["offers"] for variant in variants]
        else:
            check_offer(product["offers"], prices)
            offers = [product["offers"]]
        assert [offer["availability"] for offer in offers] == [SCHEMA + a for a in availability]
        if handle != "cloud-bivy":
            assert product["brand"]["@type"] == "Brand"
        if handle != "camp-mug":  # merchant listings need an image; camp-mug has none
            assert product["image"] and all(url.startswith("https://") for url in product["image"])
    solo = of_type(jsonld(pages["/products/solo-tent/"]), "Product")[0]
    assert solo["gtin"] == "0850012340011" and solo["sku"] == "ST-1"
    bivy = of_type(jsonld(pages["/products/cloud-bivy/"]), "Product")[0]
    assert bivy["offers"]["availabilityStarts"] == "2027-03-01"
    storm = of_type(jsonld(pages["/products/storm-shell/"]), "ProductGroup")[0]
    assert storm["variesBy"] == [SCHEMA + "size", SCHEMA + "color"]
    assert [(v["size"], v["color"]) for v in storm["hasVariant"]] == [("S", "Red"), ("M", "Red")]
    assert storm["hasVariant"][0]["offers"]["url"].startswith(
        f"{SITE}/products/storm-shell/?variant="
    )
    # a coming-soon product without a price carries no Product markup at all
    poles = jsonld(pages["/products/peak-poles/"])
    assert [item["@type"] for item in poles] == ["BreadcrumbList"]


def test_breadcrumbs_match_the_visible_trail(store: tuple[Flask, Session]) -> None:
    app, session = store
    site = plan(app, session)
    pages = render_all(app, site)
    for plan_ in site.pages:
        page = pages[plan_.path]
        crumbs = of_type(jsonld(page), "BreadcrumbList")
        if plan_.path in ("/", "/404.html", "/410.html"):
            assert not crumbs
            continue
        (crumb_list,) = crumbs
        elements = crumb_list["itemListElement"]
        assert [e["position"] for e in elements] == list(range(1, len(elements) + 1))
        assert elements[0] == {
            "@type": "ListItem",
            "position": 1,
            "name": "Home",
            "item": SITE + "/",
        }
        assert elements[-1]["item"] == SITE + plan_.path
        visible = text_of(page, '//nav[@aria-label="Breadcrumb"]//li')
        assert visible == [e["name"] for e in elements]
        links = attribute(page, '//nav[@aria-label="Breadcrumb"]//a/@href')
        assert links == [e["item"] for e in elements[:-1]]
    product = of_type(jsonld(pages["/products/trail-pack/"]), "BreadcrumbList")[0]
    assert [e["name"] for e in product["itemListElement"]] == [
        "Home", "Packs and shells", "Trail Pack 40",
    ]  # fmt: skip


def test_json_ld_and_html_escape_hostile_catalog_text(store: tuple[Flask, Session]) -> None:
    app, session = store
    make_product(session, "evil", '</script><script>alert("x")</script> & Co',
                 [{"sku": "EV-1"}], product_type="Tent")  # fmt: skip
    page = render_all(app, plan(app, session))["/products/evil/"]
    assert b"<script>alert" not in page
    assert of_type(jsonld(page), "Product")[0]["name"].startswith("</script>")
    assert text_of(page, "//h1") == ['</script><script>alert("x")</script> & Co']
    assert jsonld_dumps({"a": "</script>&\u2028"}) == '{"a":"\\u003c/script\\u003e\\u0026\\u2028"}'


def test_base_url_replaces_site_url_everywhere(store: tuple[Flask, Session]) -> None:
    app, session = store
    base = "https://staging.example.org/shop"
    site = plan(app, session, base_url=base)
    env = make_environment(app.config, base_url=base)
    page = render_page(env, next(p for p in site.pages if p.path == "/products/solo-tent/"))
    assert attribute(page, '//link[@rel="canonical"]/@href') == [f"{base}/products/solo-tent/"]
    # Only the API (page views, signups) stays where API_URL says.
    assert SITE.encode() not in page.replace(f"{SITE}/api/".encode(), b"")
    default = plan(app, session)
    assert {p.key for p in site.pages}.isdisjoint({p.key for p in default.pages})


# ------------------------------------------------------------------ keys


def keys_of(site: Site) -> dict[str, str]:
    """Return each page's key by path."""
    return {page.path: page.key for page in site.pages}


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str]:
    """Return the paths whose value differs."""
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def test_one_sku_selling_out_changes_exactly_the_pages_that_show_it(
    store: tuple[Flask, Session],
) -> None:
    app, session = store
    before_site = plan(app, session)
    before_bytes = render_all(app, before_site)
    assert keys_of(plan(app, session)) == keys_of(before_site)  # planning is deterministic
    variant = session.scalars(select(Variant).where(Variant.sku == "ST-1")).one()
    set_stock(session, variant, 0, source="cli")
    after_site = plan(app, session)
    after_bytes = render_all(app, after_site)
    expected = {
        "/products/solo-tent/",  # its own page
        "/categories/tents/page/2/",  # the category page that lists it (not page 1)
        "/compare/solo-tent-vs-duo-tent/",  # the comparison that includes it
        "/guides/choosing-a-tent/",  # the guide that features it
        "/",  # home now lists it under "Back soon"
        "/products/duo-tent/",  # related-product blocks that show it
        "/products/cloud-bivy/",
    }
    assert changed(keys_of(before_site), keys_of(after_site)) == expected
    assert changed(before_bytes, after_bytes) == expected


def test_stock_change_that_shows_nowhere_changes_no_key(store: tuple[Flask, Session]) -> None:
    app, session = store
    before = plan(app, session)
    variant = session.scalars(select(Variant).where(Variant.sku == "ST-1")).one()
    set_stock(session, variant, 4, source="cli")  # still in stock; pages do not show counts
    after = plan(app, session)
    assert keys_of(after) == keys_of(before)
    assert render_all(app, after) == render_all(app, before)


def test_content_template_and_setting_changes_change_the_right_keys(
    store: tuple[Flask, Session], tmp_path: Path
) -> None:
    app, session = store
    before = keys_of(plan(app, session))
    content = Path(app.config["CONTENT_DIR"])
    guide = content / "guides/choosing-a-tent.md"
    guide.write_text(guide.read_text().replace("How to choose", "How we choose"), encoding="utf-8")
    after = keys_of(plan(app, session))
    # the guide itself and the home page (which shows guide descriptions)
    assert changed(before, after) == {"/guides/choosing-a-tent/", "/"}

    overrides = tmp_path / "theme"
    write(overrides, "pages/page.html.j2", '{% extends "layout.html.j2" %}{% block main %}'
          "<h1>{{ heading }}</h1>{% endblock %}")  # fmt: skip
    app.config["TEMPLATES_DIR"] = str(overrides)
    themed_site = plan(app, session)
    themed = keys_of(themed_site)
    assert changed(after, themed) == set(after)  # a theme file can change any page
    page = render_page(make_environment(app.config), themed_site.pages[-3])
    assert themed_site.pages[-3].path == "/about/"
    assert '<main id="main" class="wrap">\n<h1>About us</h1></main>' in page.decode()

    app.config["CURRENCY"] = "EUR"
    assert changed(themed, keys_of(plan(app, session))) == set(themed)


def test_theme_and_content_asset_clash_is_a_content_error(store: tuple[Flask, Session]) -> None:
    app, session = store
    write(Path(app.config["CONTENT_DIR"]), "assets/style.css", "body{}")
    with pytest.raises(ContentErrors) as caught:
        plan(app, session)
    assert str(caught.value) == "assets/style.css:1: has the same URL as a theme file"


# ------------------------------------------------------------------ helpers


def test_price_valid_until_is_stable_for_a_year() -> None:
    # the date moves once a year (when today + 365 days crosses New Year), never daily
    assert price_valid_until(dt.date(2025, 12, 31), 365) == dt.date(2026, 12, 31)
    assert price_valid_until(dt.date(2026, 1, 1), 365) == dt.date(2027, 12, 31)
    assert price_valid_until(dt.date(2026, 11, 25), 365) == dt.date(2027, 12, 31)
    assert price_valid_until(dt.date(2026, 12, 31), 365) == dt.date(2027, 12, 31)


def test_money_and_urls() -> None:
    assert format_money(Decimal("1249.5"), "USD") == "$1,249.50"
    assert format_money(Decimal("1200"), "JPY") == "¥1,200"
    assert format_money(Decimal("12"), "XYZ") == "12.00 XYZ"
    urls = SiteURLs("https://shop.test/", "", "https://store.test")
    assert urls.product("tent") == "/products/tent/"
    assert urls.category("tents", 1) == "/categories/tents/"
    assert urls.category("tents", 3) == "/categories/tents/page/3/"
    assert urls.compare("a-vs-b") == "/compare/a-vs-b/"
    assert urls.guide("g") == "/guides/g/" and urls.page("about") == "/about/"
    assert urls.asset("products/a b.svg") == "/assets/products/a%20b.svg"
    assert urls.absolute("/x/") == "https://shop.test/x/"
    assert urls.absolute("https://cdn.test/a.jpg") == "https://cdn.test/a.jpg"
    assert urls.api("/api/waitlist") == "https://shop.test/api/waitlist"
    assert urls.buy("tent") == "https://store.test/products/tent"
    assert urls.buy("tent", 42) == "https://store.test/products/tent?variant=42"
    assert urls.product("café") == "/products/caf%C3%A9/"
    assert urls.product("..") == "/products/%2E%2E/"
