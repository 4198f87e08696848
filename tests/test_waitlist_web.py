"""Waitlist service end to end: signup, confirmation email, confirm, manage, unsubscribe, CLI."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select

from engine import create_app
from engine.db import Database, get_db, utcnow
from engine.mail import make_backend, outbox_dir, read_outbox
from engine.mail.base import substitute
from engine.mailqueue import drain
from engine.models import MailMessage, Signup, Subscriber, Suppression
from engine.waitlist import address_hash, consent_version, record_consent_text
from tests.test_waitlist import add_catalog

SITE = "https://shop.test"
FORM_HEADERS = {"Origin": SITE}


@pytest.fixture
def config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Add a coming-soon product to the content folder."""
    products = tmp_path / "content" / "products"
    products.mkdir(parents=True)
    (products / "packraft.md").write_text(
        "---\nstatus: coming-soon\ntitle: Packraft One\n---\nA boat.\n", encoding="utf-8"
    )
    return config


@pytest.fixture
def store(db: Database) -> Database:
    """Return the database holding the test catalog."""
    with db.sessions() as session:
        add_catalog(session)
    return db


def post_json(client: FlaskClient, body: Any, **headers: str) -> Any:
    """Post a signup as the page's script does: JSON sent as text/plain."""
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        "/api/waitlist",
        data=data,
        content_type="text/plain;charset=UTF-8",
        headers={"Origin": SITE, **headers},
    )


def post_form(client: FlaskClient, fields: dict[str, str], **headers: str) -> Any:
    """Post a signup as the page's form does without JavaScript."""
    return client.post("/api/waitlist", data=fields, headers={**FORM_HEADERS, **headers})


def queued(db: Database) -> list[MailMessage]:
    """Return the mail queue, oldest first."""
    with db.sessions() as session:
        return list(session.scalars(select(MailMessage).order_by(MailMessage.id)))


def count(db: Database, model: type[Any]) -> int:
    """Count a table's rows."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def as_sent(message: MailMessage) -> str:
    """Return a queued email's text part as it is sent: the person's substitutions applied."""
    return substitute(message.text, message.substitutions)


def link(text: str, path: str) -> str:
    """Return the first service link with this path prefix in an email's text."""
    match = re.search(re.escape(SITE + path) + r"[A-Za-z0-9._-]+", text)
    assert match, f"no {path} link in {text!r}"
    return match.group(0)[len(SITE) :]


# --------------------------------------------------------------------------- the whole path


def test_signup_confirm_manage_and_one_click_unsubscribe(
    app: Flask, client: FlaskClient, store: Database
) -> None:
    response = post_form(
        client,
        {
            "email": "Ana@Example.com",
            "variant": "TENT-GREEN",
            "product": "tent",
            "consent": "yes",
            "quantity": "2",
            "page": "/products/tent/",
            "website": "",
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == SITE + "/products/tent/#waitlist-thanks"
    assert "Set-Cookie" not in response.headers

    [email] = queued(store)
    assert email.to_email == "Ana@example.com"
    assert email.subject == "Confirm your waitlist signup for Trail Tent"
    assert email.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email.headers["List-Unsubscribe"].startswith(f"<{SITE}/unsubscribe/")
    assert "1 Example Street" in email.text and "1 Example Street" in email.html
    with store.sessions() as session:
        signup = session.scalars(select(Signup)).one()
        assert (signup.status, signup.quantity, signup.via) == ("pending", 2, "form")

    # The email as it leaves: the person's own links in both parts, no placeholder left.
    assert drain(store, app.config, make_backend(app.config)).sent == 1
    [sent] = read_outbox(outbox_dir(app.config))
    assert (
        sent["To"] == "Ana@example.com"
        and sent["List-Unsubscribe"] == email.headers["List-Unsubscribe"]
    )
    text_part = sent.get_body(("plain",))
    html_part = sent.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, html = text_part.get_content(), html_part.get_content()
    for part in (text, html):
        assert "-confirm_url-" not in part and "-manage_url-" not in part
        assert "-unsubscribe_url-" not in part
    confirm_link = link(text, "/waitlist/confirm/")
    assert f'href="{SITE}{confirm_link}"' in html
    assert link(text, "/unsubscribe/") == link(email.headers["List-Unsubscribe"], "/unsubscribe/")

    page = client.get(confirm_link)
    assert page.status_code == 200 and "on the list" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    with store.sessions() as session:
        assert session.scalars(select(Signup)).one().status == "confirmed"

    manage = client.get(link(text, "/waitlist/manage/"))
    body = manage.get_data(as_text=True)
    assert manage.status_code == 200
    assert "Trail Tent" in body and "TENT-GREEN" in body and 'name="leave"' in body

    unsubscribe = link(email.headers["List-Unsubscribe"], "/unsubscribe/")
    shown = client.get(unsubscribe)
    assert shown.status_code == 200 and "<form" in shown.get_data(as_text=True)
    assert count(store, Suppression) == 0, "a GET must never unsubscribe"

    done = client.post(
        unsubscribe,
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert done.status_code == 200
    assert "Set-Cookie" not in done.headers and "Location" not in done.headers
    assert "unsubscribed" in done.get_data(as_text=True)
    with store.sessions() as session:
        signup = session.scalars(select(Signup)).one()
        assert (signup.status, signup.left_reason) == ("left", "unsubscribed")
        assert session.get(Suppression, address_hash("test-secret", "ana@example.com"))
    # A mailbox provider may post twice; the second is answered the same way.
    assert client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200


def test_json_signup_answers_pending_and_is_idempotent(
    client: FlaskClient, store: Database
) -> None:
    body = {
        "email": "bea@example.com",
        "product": "stove",
        "consent": True,
        "page": "/products/stove/",
        "referrer": "https://www.google.com/",
        "utm_source": "newsletter",
        "utm_medium": "email",
    }
    first = post_json(client, body)
    second = post_json(client, {**body, "email": "BEA@Example.com"})
    for response in (first, second):
        assert response.status_code == 202
        assert response.get_json() == {"status": "pending"}
        assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert count(store, Signup) == 1 and count(store, Subscriber) == 1
    assert len(queued(store)) == 1, "no second confirmation within the window"
    with store.sessions() as session:
        signup = session.scalars(select(Signup)).one()
        assert (signup.channel, signup.source, signup.via) == ("email", "newsletter", "json")
        assert signup.referrer == "https://www.google.com/"
        assert signup.client_hash and "127.0.0.1" not in signup.client_hash


def test_suppressed_address_is_answered_alike_and_stores_nothing(
    client: FlaskClient, store: Database, app: Flask
) -> None:
    with store.sessions() as session:
        key = address_hash(str(app.config["SECRET_KEY"]), "ana@example.com")
        session.add(Suppression(address_hash=key, reason="unsubscribed", created_at=utcnow()))
        session.commit()
    response = post_json(client, {"email": "Ana@Example.com", "product": "stove", "consent": True})
    assert response.status_code == 202 and response.get_json() == {"status": "pending"}
    assert count(store, Signup) == 0 and count(store, Subscriber) == 0
    assert queued(store) == []


def test_joining_again_after_leaving_is_a_fresh_signup_with_a_new_confirmation(
    client: FlaskClient, store: Database, app: Flask
) -> None:
    body = {"email": "cid@example.com", "product": "stove", "consent": True, "quantity": 2}
    assert post_json(client, body).status_code == 202
    with store.sessions() as session:
        signup = session.scalars(select(Signup)).one()
        first_signed_up = signup.signed_up_at
        signup.status, signup.left_reason, signup.left_at = "left", "left", utcnow()
        # The first confirmation went out long enough ago for another one.
        signup.confirmation_sent_at = utcnow() - dt.timedelta(hours=2)
        session.commit()
    old_wording = "Email me when it is back."
    with store.sessions() as session:
        record_consent_text(session, old_wording, utcnow())
        session.commit()
    again = {**body, "quantity": 3, "consent_version": consent_version(old_wording)}
    assert post_json(client, again).status_code == 202
    with store.sessions() as session:
        signup = session.scalars(select(Signup)).one()
        assert (signup.status, signup.quantity, signup.left_at) == ("pending", 3, None)
        assert signup.signed_up_at > first_signed_up
        # The page showed the old wording: that is the one recorded.
        assert signup.consent_version == consent_version(old_wording)
    _first, second = queued(store)
    assert client.get(link(as_sent(second), "/waitlist/confirm/")).status_code == 200
    with store.sessions() as session:
        assert session.scalars(select(Signup)).one().status == "confirmed"


def test_concurrent_repeats_of_one_signup_store_one_row_and_one_email(
    app: Flask, store: Database
) -> None:
    body = json.dumps({"email": "dee@example.com", "variant": "TENT-GREEN", "consent": True})

    def post(number: int) -> int:
        response = app.test_client().post(
            "/api/waitlist",
            data=body,
            content_type="text/plain",
            environ_base={"REMOTE_ADDR": f"10.1.0.{number}"},
        )
        return response.status_code

    app.config["WAITLIST_ADDRESS_LIMIT"] = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(16)))
    assert statuses == [202] * 16
    assert count(store, Subscriber) == 1 and count(store, Signup) == 1
    assert len(queued(store)) == 1


def test_manage_page_leave_button_leaves_one_waitlist(client: FlaskClient, store: Database) -> None:
    for product in ("stove", "packraft"):
        post_json(client, {"email": "cid@example.com", "product": product, "consent": True})
    first = queued(store)[0]
    manage = link(as_sent(first), "/waitlist/manage/")
    with store.sessions() as session:
        stove = session.scalars(select(Signup).where(Signup.product_handle == "stove")).one()
    response = client.post(manage, data={"leave": str(stove.id)})
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "You left the waitlist for Camp Stove" in body
    assert "Packraft One" in body
    assert count(store, Suppression) == 0
    with store.sessions() as session:
        statuses = dict(session.execute(select(Signup.product_handle, Signup.status)).all())
    assert statuses == {"stove": "left", "packraft": "pending"}


def test_bad_tokens_are_refused_politely(client: FlaskClient, store: Database) -> None:
    for path in ("/waitlist/confirm/x.y.z", "/waitlist/manage/abc", "/unsubscribe/abc"):
        response = client.get(path)
        assert response.status_code == 404
        assert "This link does not work" in response.get_data(as_text=True)
    assert client.post("/unsubscribe/abc").status_code == 404


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "email"),
        ({"email": "", "product": "stove", "consent": True}, "email"),
        ({"email": "not an address", "product": "stove", "consent": True}, "email"),
        ({"email": "x" * 10_240 + "@example.com", "product": "stove", "consent": True}, "email"),
        ({"email": "ana@shop.test", "product": "stove", "consent": True}, "email"),
        ({"email": "ana@example.com", "product": "nope", "consent": True}, "product"),
        ({"email": "ana@example.com", "variant": "NOPE", "consent": True}, "variant"),
        ({"email": "ana@example.com", "consent": True}, "product"),
        ({"email": "ana@example.com", "product": "stove"}, "consent"),
        ({"email": "ana@example.com", "product": "stove", "consent": False}, "consent"),
        ({"email": "ana@example.com", "product": "stove", "consent": True, "quantity": 0},
         "quantity"),
        ({"email": "ana@example.com", "product": "stove", "consent": True, "quantity": "lots"},
         "quantity"),
        ({"email": ["ana@example.com"], "product": "stove", "consent": True}, "body"),
    ],
)  # fmt: skip
def test_bad_json_signups_get_field_errors(
    client: FlaskClient, store: Database, body: dict[str, Any], field: str
) -> None:
    response = post_json(client, body)
    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert list(errors) == [field] or field in errors
    assert all(isinstance(message, str) and message for message in errors[field])
    assert count(store, Signup) == 0 and count(store, Subscriber) == 0


@pytest.mark.parametrize("raw", ["{", "[1, 2]", "", "null", b"\xff\xfe"])
def test_broken_json_is_400(client: FlaskClient, store: Database, raw: str | bytes) -> None:
    response = post_json(client, raw)
    assert response.status_code == 400
    assert "body" in response.get_json()["errors"]


def test_form_errors_are_an_html_page_with_a_way_back(client: FlaskClient, store: Database) -> None:
    response = post_form(client, {"email": "ana@", "product": "stove", "page": "/products/stove/"})
    body = response.get_data(as_text=True)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "Tick the box" in body and "@-sign" in body
    assert f'href="{SITE}/products/stove/#waitlist"' in body
    assert count(store, Signup) == 0


def test_sellable_variant_answers_it_is_back_and_stores_nothing(
    client: FlaskClient, store: Database
) -> None:
    response = post_json(
        client, {"email": "ana@example.com", "variant": "TENT-BLUE", "consent": True}
    )
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "available",
        "url": "https://checkout.shop.test/products/tent?variant=2",
    }
    form = post_form(client, {"email": "ana@example.com", "variant": "TENT-BLUE", "consent": "y"})
    assert form.status_code == 200 and "Good news" in form.get_data(as_text=True)
    assert "https://checkout.shop.test/products/tent?variant=2" in form.get_data(as_text=True)
    assert count(store, Signup) == 0 and count(store, Subscriber) == 0 and not queued(store)


def test_honeypot_is_answered_like_success_and_stored_nowhere(
    client: FlaskClient, store: Database
) -> None:
    fields = {"email": "bot@example.com", "product": "stove", "consent": "y", "website": "x.com"}
    form = post_form(client, {**fields, "page": "/products/stove/"})
    assert form.status_code == 303
    assert form.headers["Location"] == SITE + "/products/stove/#waitlist-thanks"
    response = post_json(client, fields)
    assert response.status_code == 202 and response.get_json() == {"status": "pending"}
    assert count(store, Signup) == 0 and count(store, Subscriber) == 0 and not queued(store)


def test_foreign_origins_are_refused(client: FlaskClient, store: Database) -> None:
    fields = {"email": "ana@example.com", "product": "stove", "consent": "y"}
    form = post_form(client, fields, Origin="https://evil.example")
    assert form.status_code == 403 and "not accepted" in form.get_data(as_text=True)
    referer_only = client.post(
        "/api/waitlist", data=fields, headers={"Referer": "https://evil.example/page"}
    )
    assert referer_only.status_code == 403
    sandboxed = post_form(client, fields, Origin="null")
    assert sandboxed.status_code == 403
    response = post_json(client, {**fields, "consent": True}, Origin="https://evil.example")
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert count(store, Signup) == 0


def test_cors_preflight_for_allowed_origins_only(client: FlaskClient, store: Database) -> None:
    ok = client.options(
        "/api/waitlist",
        headers={"Origin": SITE, "Access-Control-Request-Method": "POST"},
    )
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == SITE
    assert "Content-Type" in ok.headers["Access-Control-Allow-Headers"]
    refused = client.options("/api/waitlist", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_other_content_types_are_refused(client: FlaskClient, store: Database) -> None:
    response = client.post("/api/waitlist", data="<x/>", content_type="application/xml")
    assert response.status_code == 415


def test_redirects_only_ever_go_to_the_site(client: FlaskClient, store: Database) -> None:
    for page in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"):
        response = post_form(
            client,
            {
                "email": f"p{len(page)}@example.com",
                "product": "stove",
                "consent": "y",
                "page": page,
            },
        )
        assert response.status_code == 303
        assert response.headers["Location"] == SITE + "/products/stove/#waitlist-thanks"


# --------------------------------------------------------------------------- rate limits


def test_flood_from_one_client_gets_429_with_retry_after(
    client: FlaskClient, store: Database
) -> None:
    statuses = []
    for number in range(7):
        response = post_json(
            client, {"email": f"flood{number}@example.com", "product": "stove", "consent": True}
        )
        statuses.append(response.status_code)
    assert statuses == [202] * 5 + [429, 429]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "email" in response.get_json()["errors"]
    assert response.headers["Access-Control-Expose-Headers"] == "Retry-After"
    assert count(store, Signup) == 5
    form = post_form(client, {"email": "late@example.com", "product": "stove", "consent": "y"})
    assert form.status_code == 429 and form.headers["Retry-After"]


def test_flood_for_one_address_from_many_clients_gets_429(
    client: FlaskClient, store: Database
) -> None:
    statuses = []
    for number, product in enumerate(("stove", "packraft", "stove", "packraft")):
        response = client.post(
            "/api/waitlist",
            data=json.dumps({"email": "ana@example.com", "product": product, "consent": True}),
            content_type="text/plain",
            environ_base={"REMOTE_ADDR": f"10.0.0.{number}"},
        )
        statuses.append(response.status_code)
    assert statuses == [202, 202, 202, 429]
    assert int(response.headers["Retry-After"]) > 60


@pytest.fixture
def proxied(config: dict[str, Any]) -> Iterator[Flask]:
    """Yield an app behind one trusted proxy, with a one-per-window client limit."""
    application = create_app({**config, "TRUSTED_PROXIES": 1, "WAITLIST_CLIENT_LIMIT": 1})
    get_db(application).upgrade()
    with get_db(application).sessions() as session:
        add_catalog(session)
    yield application
    get_db(application).dispose()


def test_clients_behind_a_trusted_proxy_are_told_apart(proxied: Flask) -> None:
    client = proxied.test_client()

    def post(forwarded: str, email: str) -> int:
        response = client.post(
            "/api/waitlist",
            data=json.dumps({"email": email, "product": "stove", "consent": True}),
            content_type="text/plain",
            headers={"X-Forwarded-For": forwarded},
        )
        return response.status_code

    assert post("203.0.113.1", "a@example.com") == 202
    assert post("203.0.113.2", "b@example.com") == 202
    assert post("203.0.113.1", "c@example.com") == 429


def test_forwarded_header_is_ignored_without_trusted_proxies(
    client: FlaskClient, app: Flask, store: Database
) -> None:
    app.config["WAITLIST_CLIENT_LIMIT"] = 1
    first = post_json(
        client,
        {"email": "a@example.com", "product": "stove", "consent": True},
        **{"X-Forwarded-For": "203.0.113.1"},
    )
    second = post_json(
        client,
        {"email": "b@example.com", "product": "stove", "consent": True},
        **{"X-Forwarded-For": "203.0.113.2"},
    )
    assert (first.status_code, second.status_code) == (202, 429)


# --------------------------------------------------------------------------- CLI


def test_export_erasure_and_reimport(
    client: FlaskClient, runner: FlaskCliRunner, store: Database, tmp_path: Path
) -> None:
    post_json(client, {"email": "Ana@Example.com", "product": "stove", "consent": True})
    post_json(client, {"email": "bea@example.com", "variant": "TENT-GREEN", "consent": True})
    client.get(link(as_sent(queued(store)[0]), "/waitlist/confirm/"))

    exported = runner.invoke(args=["waitlist", "export"])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["email"], r["product"], r["variant"], r["confirmed"]) for r in rows] == [
        ("Ana@example.com", "stove", "", "true"),
        ("bea@example.com", "tent", "TENT-GREEN", "false"),
    ]
    only = runner.invoke(args=["waitlist", "export", "--product", "tent"])
    assert len(list(csv.DictReader(io.StringIO(only.stdout)))) == 1
    backup = tmp_path / "backup.csv"
    backup.write_text(exported.stdout, encoding="utf-8")

    forgotten = runner.invoke(args=["subscribers", "forget", "ana@example.com"])
    assert forgotten.exit_code == 0, forgotten.output
    assert "1 signup(s) anonymized" in forgotten.output
    with store.sessions() as session:
        assert (
            session.scalar(select(Subscriber).where(Subscriber.address == "ana@example.com"))
            is None
        )
        assert session.scalar(select(func.count()).select_from(Signup)) == 2
        assert not any("ana" in m.to_email.lower() for m in session.scalars(select(MailMessage)))

    imported = runner.invoke(args=["waitlist", "import", str(backup)])
    assert imported.exit_code == 0, imported.output
    assert "created 1" in imported.output and "unchanged 1" in imported.output
    again = runner.invoke(args=["waitlist", "import", str(backup)])
    assert "created 0" in again.output and "unchanged 2" in again.output
    with store.sessions() as session:
        ana = session.scalar(select(Subscriber).where(Subscriber.address == "ana@example.com"))
        assert ana is not None and [s.status for s in ana.signups] == ["confirmed"]
    assert len(queued(store)) == 1, "imports never send email"


def test_import_errors_are_line_numbered_and_change_nothing(
    runner: FlaskCliRunner, store: Database, tmp_path: Path
) -> None:
    path = tmp_path / "old.csv"
    path.write_text(
        "email,product,signed_up_at,confirmed\n"
        "ana@example.com,stove,2025-01-01,true\n"
        "ana@example.com,ghost,2025-01-01,true\n",
        encoding="utf-8",
    )
    result = runner.invoke(args=["waitlist", "import", str(path)])
    assert result.exit_code == 1
    assert "old.csv:3: product: We don't know that product." in result.stderr
    assert "nothing was imported" in result.stderr
    assert count(store, Signup) == 0


def test_forget_an_unknown_address(runner: FlaskCliRunner, store: Database) -> None:
    result = runner.invoke(args=["subscribers", "forget", "nobody@example.com"])
    assert result.exit_code == 0
    assert "no personal data held" in result.output
