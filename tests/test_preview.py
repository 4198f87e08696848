"""Live preview: the exact bytes a build writes, redirects, assets, errors, reserved prefixes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from test_pages import SETTINGS, make_catalog, make_content, plan, write

from engine import create_app
from engine.catalog import set_stock
from engine.db import get_db
from engine.models import Variant
from engine.pages import Site, make_environment, render_page


@pytest.fixture
def preview(config: dict[str, Any]) -> Iterator[tuple[Flask, FlaskClient]]:
    """The test store behind the web app, plus routes standing in for the service's own."""
    application = create_app({**config, **SETTINGS})
    service = Blueprint("service_stand_in", __name__)

    @service.get("/api/status")
    def api_status() -> dict[str, str]:
        return {"route": "api"}

    @service.post("/api/signup")
    def api_signup() -> dict[str, str]:
        return {"route": "signup"}

    @service.get("/waitlist/stand-in/<token>")
    def waitlist_stand_in(token: str) -> str:
        return f"waitlist {token}"

    @service.get("/admin/stand-in")
    def admin() -> str:
        return "admin"

    application.register_blueprint(service)
    database = get_db(application)
    database.upgrade()
    make_content(Path(application.config["CONTENT_DIR"]))
    with database.sessions() as session:
        make_catalog(session)
        session.commit()
    yield application, application.test_client()
    database.dispose()


def site_now(app: Flask) -> Site:
    """Plan the site in a session of its own (closed at once: SQLite allows one writer)."""
    with get_db(app).sessions() as session:
        return plan(app, session)


def test_every_page_is_byte_identical_to_render_page(
    preview: tuple[Flask, FlaskClient],
) -> None:
    app, client = preview
    site = site_now(app)
    env = make_environment(app.config)
    for page in site.pages:
        if page.path in ("/404.html", "/410.html"):
            continue
        response = client.get(page.path)
        assert response.status_code == 200, page.path
        assert response.content_type == "text/html; charset=utf-8"
        assert response.data == render_page(env, page), page.path
    assert (
        client.get("/products/solo-tent/index.html").data == client.get("/products/solo-tent/").data
    )


def test_preview_shows_stock_changes_at_once(preview: tuple[Flask, FlaskClient]) -> None:
    app, client = preview
    assert b"Sold out right now" not in client.get("/products/solo-tent/").data
    with get_db(app).session() as session:
        variant = session.scalars(select(Variant).where(Variant.sku == "ST-1")).one()
        set_stock(session, variant, 0, source="cli")
    page = client.get("/products/solo-tent/").data
    assert b"Sold out \xe2\x80\x93 back soon" in page
    assert b"checkout.shop.test" not in page


def test_redirects_gone_and_missing_pages(preview: tuple[Flask, FlaskClient]) -> None:
    app, client = preview
    site = site_now(app)
    env = make_environment(app.config)
    pages = {page.path: render_page(env, page) for page in site.pages}

    moved = client.get("/products/old-tent/")
    assert (moved.status_code, moved.headers["Location"]) == (301, "/products/solo-tent/")
    reversed_pair = client.get("/compare/duo-tent-vs-solo-tent/")
    assert reversed_pair.status_code == 301
    assert reversed_pair.headers["Location"] == "/compare/solo-tent-vs-duo-tent/"
    gone = client.get("/products/retired-stove/")
    assert (gone.status_code, gone.data) == (410, pages["/410.html"])
    for path in ("/nowhere/", "/products/draft-lamp/", "/products/hidden-cup/", "/404.html"):
        missing = client.get(path)
        assert (missing.status_code, missing.data) == (404, pages["/404.html"]), path
    folder = client.get("/products/solo-tent")
    assert (folder.status_code, folder.headers["Location"]) == (301, "/products/solo-tent/")


def test_assets_are_served_from_theme_and_content(
    preview: tuple[Flask, FlaskClient],
) -> None:
    app, client = preview
    site = site_now(app)
    css = client.get("/assets/style.css")
    assert css.status_code == 200 and css.content_type.startswith("text/css")
    assert css.data == site.assets["/assets/style.css"].read_bytes()
    svg = client.get("/assets/products/solo-tent.svg")
    assert svg.status_code == 200 and svg.content_type.startswith("image/svg+xml")
    assert client.get("/assets/favicon.ico").status_code == 200
    assert client.get("/assets/nothing.css").status_code == 404


def test_reserved_prefixes_are_never_shadowed(preview: tuple[Flask, FlaskClient]) -> None:
    _app, client = preview
    assert client.get("/healthz").get_json()["status"] == "ok"
    assert client.get("/api/status").get_json() == {"route": "api"}
    assert client.get("/waitlist/stand-in/abc").data == b"waitlist abc"
    assert client.get("/admin/stand-in").data == b"admin"
    assert client.get("/api/signup").status_code == 405  # the service's route, wrong method
    for path in ("/api/unknown", "/hooks/x", "/waitlist/nothing/here", "/admin/x", "/healthz/x"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"Trail Shop" not in response.data, path  # not the site's 404 page


def test_content_errors_show_a_page_for_the_marketer(
    preview: tuple[Flask, FlaskClient],
) -> None:
    app, client = preview
    write(
        Path(app.config["CONTENT_DIR"]),
        "guides/bad.md",
        "---\ntitle: Bad <guide>\ndescription: x\nproducts: [nope]\ncolour: red\n---\n",
    )
    response = client.get("/products/solo-tent/")
    assert response.status_code == 503
    assert response.content_type == "text/html; charset=utf-8"
    body = response.get_data(as_text=True)
    assert "Content needs fixing" in body
    assert "guides/bad.md:5: unknown field &#x27;colour&#x27;" in body
    assert "<guide>" not in body


def test_preview_follows_content_and_theme_edits(
    preview: tuple[Flask, FlaskClient], tmp_path: Path
) -> None:
    app, client = preview
    guide = Path(app.config["CONTENT_DIR"]) / "guides/choosing-a-tent.md"
    assert b"<h1>Choosing a backpacking tent</h1>" in client.get("/guides/choosing-a-tent/").data
    guide.write_text(guide.read_text().replace("title: Choosing", "title: Picking"))
    assert b"<h1>Picking a backpacking tent</h1>" in client.get("/guides/choosing-a-tent/").data
    theme = tmp_path / "theme"
    write(theme, "pages/page.html.j2", '{% extends "layout.html.j2" %}'
          "{% block main %}<h1>Ours: {{ heading }}</h1>{% endblock %}")  # fmt: skip
    app.config["TEMPLATES_DIR"] = str(theme)
    assert b"<h1>Ours: About us</h1>" in client.get("/about/").data
    (theme / "pages/page.html.j2").write_text(
        '{% extends "layout.html.j2" %}{% block main %}<h1>Theirs: {{ heading }}</h1>{% endblock %}'
    )
    page = client.get("/about/").data
    assert b"<h1>Theirs: About us</h1>" in page
    assert page == render_page(make_environment(app.config), site_now(app).page("/about/"))
