"""The bundled demo store: it seeds, builds every page state, refuses a foreign catalog, re-runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select

import engine.cli
from engine.catalog import import_catalog
from engine.db import Database
from engine.demo import (
    DEMO_CATALOG,
    DEMO_CATEGORY_PAGE_SIZE,
    DemoError,
    build_demo,
    demo_config,
    demo_handles,
    demo_urls,
    explicit_settings,
    seed_demo,
    serving_url,
    write_demo_config,
)
from engine.models import Product, StockTransition
from engine.settings import bundled_path, read_config_file

URL_VARIABLES = ("ENGINE_SITE_URL", "ENGINE_API_URL", "ENGINE_ALLOWED_ORIGINS")


@pytest.fixture
def demo_settings(app: Flask) -> dict[str, Any]:
    """Return the app's settings as ``engine demo`` completes them for a fresh instance."""
    settings = dict(app.config)
    settings.update(demo_config(settings, explicit=set()))
    return settings


def product_markup(site: Path, handle: str) -> dict[str, Any] | None:
    """Return the Product or ProductGroup JSON-LD of a built product page, if any."""
    page = lxml.html.parse(str(site / "products" / handle / "index.html"))
    for script in page.xpath('//script[@type="application/ld+json"]'):
        data = json.loads(script.text)
        items = data if isinstance(data, list) else data.get("@graph", [data])
        for item in items:
            if item.get("@type") in ("Product", "ProductGroup"):
                return dict(item)
    return None


def availability(site: Path, handle: str) -> list[str]:
    """Return the schema.org availability of each offer on a product page."""
    markup = product_markup(site, handle)
    assert markup is not None, f"{handle}: no Product markup"
    offers = [markup["offers"]] if "offers" in markup else []
    offers += [variant["offers"] for variant in markup.get("hasVariant", [])]
    return [offer["availability"].rsplit("/", 1)[-1] for offer in offers]


def test_demo_builds_every_page_state(db: Database, demo_settings: dict[str, Any]) -> None:
    with db.session() as session:
        setup = build_demo(session, demo_settings)
    assert setup.imported is not None
    assert (setup.imported.created, setup.imported.archived) == (38, 2)
    assert setup.imported.variants > 90
    site = Path(setup.build.output)

    assert availability(site, "ridgeline-ul1-tent") == ["InStock"]
    assert availability(site, "cairnwood-trekker-2") == ["OutOfStock"]  # back soon
    assert availability(site, "talus-summit-2") == ["BackOrder"]  # continue at 0
    assert availability(site, "ember-silk-liner") == ["InStock"]  # untracked
    assert availability(site, "ridgeline-frameless-35") == ["OutOfStock", "OutOfStock"]
    # One sold-out size among sellable ones, as a ProductGroup with hasVariant.
    sizes = availability(site, "talus-ridge-runner")
    assert sizes.count("OutOfStock") == 1 and sizes.count("InStock") == 4
    assert product_markup(site, "talus-ridge-runner")["@type"] == "ProductGroup"  # type: ignore[index]
    assert set(availability(site, "ember-down-0")) == {"InStock", "BackOrder"}
    # Coming soon: PreOrder with a price, no Product markup without one.
    assert availability(site, "ridgeline-ul1-carbon") == ["PreOrder"]
    assert product_markup(site, "talus-fastpack-25") is None
    assert (site / "products" / "cairnwood-scree-runner" / "index.html").is_file()

    for page in (
        "index.html",
        "categories/tents/index.html",
        "categories/sleeping-bags/index.html",
        "categories/backpacks/index.html",
        "categories/trail-footwear/index.html",
        "categories/trail-footwear/page/2/index.html",
        "compare/ridgeline-ul2-tent-vs-cairnwood-trekker-2/index.html",
        "compare/ember-down-20-vs-northfork-drift-30/index.html",
        "compare/talus-fastpack-40-vs-ridgeline-frameless-35/index.html",
        "guides/choosing-a-backpacking-tent/index.html",
        "guides/sleeping-bag-temperature-ratings/index.html",
        "guides/trail-runners-or-hiking-boots/index.html",
        "about/index.html",
        "shipping-returns/index.html",
        "404.html",
        "assets/products/ridgeline-ul2-tent.svg",
    ):
        assert (site / page).is_file(), page

    # Discontinued: a 301 to the successor, a 410 without one, and no page for either.
    rules = (site / "_redirects").read_text(encoding="utf-8").splitlines()
    assert "/products/ridgeline-ul2-classic/ /products/ridgeline-ul2-tent/ 301" in rules
    assert any(
        line.startswith("/products/northfork-flannel-rectangular/ ") and line.endswith(" 410")
        for line in rules
    )
    assert (
        "/compare/cairnwood-trekker-2-vs-ridgeline-ul2-tent/ "
        "/compare/ridgeline-ul2-tent-vs-cairnwood-trekker-2/ 301"
    ) in rules
    assert not (site / "products" / "ridgeline-ul2-classic").exists()
    assert not (site / "products" / "northfork-flannel-rectangular").exists()

    sitemap = (site / "sitemap.xml").read_text(encoding="utf-8")
    assert "https://shop.test/products/cairnwood-trekker-2/</loc>" in sitemap
    assert "https://shop.test/categories/trail-footwear/page/2/</loc>" in sitemap
    assert "ridgeline-ul2-classic" not in sitemap


def test_demo_rerun_keeps_the_catalog_and_changes_nothing(
    db: Database, demo_settings: dict[str, Any]
) -> None:
    with db.session() as session:
        build_demo(session, demo_settings)
    with db.session() as session:
        transitions = session.scalar(select(func.count()).select_from(StockTransition))
        again = build_demo(session, demo_settings)
        assert again.imported is None
        assert not again.build.changed
        assert session.scalar(select(func.count()).select_from(Product)) == 38
        assert session.scalar(select(func.count()).select_from(StockTransition)) == transitions
        # The bundled export itself re-imports as unchanged.
        report = import_catalog(session, DEMO_CATALOG)
        assert report.ok and report.unchanged == 38 and report.created == report.updated == 0


def test_demo_refuses_a_foreign_catalog(db: Database) -> None:
    with db.session() as session:
        session.add(Product(handle="my-own-tent", title="My Own Tent"))
    with db.session() as session, pytest.raises(DemoError, match="my-own-tent"):
        seed_demo(session)
    with db.session() as session:
        assert list(session.scalars(select(Product.handle))) == ["my-own-tent"]


def test_demo_catalog_is_the_shopify_export_shape() -> None:
    header = DEMO_CATALOG.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("Handle,Title,Body (HTML),Vendor,Product Category,Type,Tags,")
    for column in (
        "Variant Inventory Tracker",
        "Variant Inventory Qty",
        "Variant Inventory Policy",
        "Image Src",
        "Image Position",
        "SEO Title",
        "SEO Description",
        "Status",
    ):
        assert f",{column}," in f",{header},"
    handles = demo_handles()
    assert len(handles) == 38
    assets = bundled_path("demo_content") / "assets" / "products"
    assert all((assets / f"{handle}.svg").is_file() for handle in handles)


def test_demo_command_seeds_builds_and_serves(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    served: list[tuple[str, int, bool]] = []

    def fake_server(_app: Flask, host: str, port: int, *, scheduler: bool) -> None:
        served.append((host, port, scheduler))

    monkeypatch.setattr(engine.cli, "run_server", fake_server)
    result = runner.invoke(args=["demo", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "demo catalog imported: created 38" in result.output
    assert served == [("127.0.0.1", 8123, True)]
    assert app.config["SITE_URL"] == app.config["API_URL"] == "http://127.0.0.1:8123"
    assert app.config["ALLOWED_ORIGINS"] == ["http://127.0.0.1:8123"]

    # The test's CONTENT_DIR does not exist, so the bundled demo content is written once.
    config = read_config_file(Path(app.instance_path) / "config.toml")
    assert config["CONTENT_DIR"] == str(bundled_path("demo_content"))
    assert config["CATEGORY_PAGE_SIZE"] == DEMO_CATEGORY_PAGE_SIZE
    page = Path(app.config["OUTPUT_DIR"]) / "products" / "ridgeline-ul1-tent" / "index.html"
    assert 'href="http://127.0.0.1:8123/products/ridgeline-ul1-tent/"' in page.read_text()

    again = runner.invoke(args=["demo", "--port", "8123", "--no-serve"])
    assert again.exit_code == 0, again.output
    assert "demo catalog already in this instance: kept as it is" in again.output
    assert "wrote" not in again.output
    assert served == [("127.0.0.1", 8123, True)]


def test_demo_command_refuses_a_foreign_catalog(
    app: Flask, db: Database, runner: FlaskCliRunner
) -> None:
    with db.session() as session:
        session.add(Product(handle="my-own-tent", title="My Own Tent"))
    result = runner.invoke(args=["demo", "--no-serve"])
    assert result.exit_code == 1
    assert "already holds another catalog" in result.output
    assert "Traceback" not in result.output
    assert not (Path(app.instance_path) / "config.toml").exists()


def test_explicit_settings_come_from_the_config_file_and_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('site_url = "https://demo.example"\n', encoding="utf-8")
    environ = {"ENGINE_API_URL": "https://api.example", "ENGINE_TEST_DATABASE_URL": "x"}
    assert explicit_settings(tmp_path, environ) == {"SITE_URL", "API_URL"}


def test_demo_urls_default_to_the_served_address_unless_set() -> None:
    settings = {
        "SITE_URL": "https://demo.example",
        "API_URL": "https://api.example/",
        "ALLOWED_ORIGINS": ["https://demo.example"],
    }
    here = "http://0.0.0.0:9000"
    assert demo_urls("0.0.0.0", 9000, settings, set()) == {
        "SITE_URL": here,
        "API_URL": here,
        "ALLOWED_ORIGINS": [here],
    }
    # An explicit SITE_URL wins, and API_URL and ALLOWED_ORIGINS follow it as usual.
    assert demo_urls("0.0.0.0", 9000, settings, {"SITE_URL"}) == {
        "SITE_URL": "https://demo.example",
        "API_URL": "https://demo.example",
        "ALLOWED_ORIGINS": ["https://demo.example"],
    }
    assert demo_urls("0.0.0.0", 9000, settings, {"API_URL"})["API_URL"] == "https://api.example"
    assert serving_url("::1", 8000) == "http://[::1]:8000"


def test_demo_config_uses_bundled_content_only_without_a_content_folder(tmp_path: Path) -> None:
    missing = {"CONTENT_DIR": str(tmp_path / "content")}
    assert demo_config(missing, set()) == {
        "CONTENT_DIR": str(bundled_path("demo_content")),
        "CATEGORY_PAGE_SIZE": DEMO_CATEGORY_PAGE_SIZE,
    }
    (tmp_path / "content").mkdir()
    assert demo_config(missing, set()) == {"CATEGORY_PAGE_SIZE": DEMO_CATEGORY_PAGE_SIZE}
    assert demo_config(missing, {"CONTENT_DIR", "CATEGORY_PAGE_SIZE"}) == {}


def test_demo_config_is_written_once_as_top_level_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('site_name = "Trail Shop"\n\n[extra]\nnote = "a table"\n', encoding="utf-8")
    values = {"CONTENT_DIR": 'C:\\demo "content"', "CATEGORY_PAGE_SIZE": 9}
    assert write_demo_config(tmp_path, values) == ["CONTENT_DIR", "CATEGORY_PAGE_SIZE"]
    config = read_config_file(path)
    assert config["CONTENT_DIR"] == 'C:\\demo "content"'
    assert config["CATEGORY_PAGE_SIZE"] == 9
    assert config["SITE_NAME"] == "Trail Shop"
    text = path.read_text(encoding="utf-8")
    assert write_demo_config(tmp_path, values) == []
    assert path.read_text(encoding="utf-8") == text


def test_demo_shows_a_finished_restock_campaign_once(
    app: Flask, db: Database, runner: FlaskCliRunner
) -> None:
    from engine.catalog import variant_by_sku
    from engine.mail import read_outbox
    from engine.models import Campaign, OrderLine

    first = runner.invoke(args=["demo", "--no-serve"])
    assert first.exit_code == 0, first.output
    listing = runner.invoke(args=["campaigns", "list"])
    assert listing.exit_code == 0, listing.output
    (line,) = listing.output.splitlines()
    assert "finished   ridgeline-ul1-tent" in line
    assert "sent 16  (everyone waiting was told)" in line
    shown = runner.invoke(args=["campaigns", "show", "1"])
    assert shown.exit_code == 0, shown.output
    for expected in (
        "status: finished (everyone waiting was told)",
        "14 units, 16 people",
        "emails: sent 16",
        "delivered: 15",
        "opened: 11",
        "clicked: 6",
        "converted: 4 (direct 3, assisted 1)",
        "revenue: 1,645.00",
        "conversion rate: 25.0%",
    ):
        assert expected in shown.output, shown.output
    # Sent through the outbox backend: one .eml per person, to the waitlist's addresses.
    outbox = read_outbox(Path(app.instance_path) / "outbox")
    assert len(outbox) == 16
    assert {m["To"] for m in outbox} >= {"amara.tarp@example.com", "pia.headwall@example.com"}
    with db.session() as session:
        # Back in stock as the demo catalog has it; the walk-in's order is nobody's sale.
        variant = variant_by_sku(session, "RL-UL1-SG")
        assert variant is not None and (variant.stock, variant.sellable) == (14, True)
        attributed = session.scalar(
            select(func.count()).select_from(OrderLine).where(OrderLine.attribution != "")
        )
        assert attributed == 4
        transitions = session.scalar(select(func.count()).select_from(StockTransition))

    again = runner.invoke(args=["demo", "--no-serve"])
    assert again.exit_code == 0, again.output
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1
        assert session.scalar(select(func.count()).select_from(StockTransition)) == transitions
    assert len(read_outbox(Path(app.instance_path) / "outbox")) == 16
    shown = runner.invoke(args=["campaigns", "show", "1"])
    assert "converted: 4 (direct 3, assisted 1)" in shown.output
