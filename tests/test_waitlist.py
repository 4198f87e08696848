"""Waitlist domain: addresses, consent, rate limits, signups, tokens, purge, erasure, import."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.db import Database
from engine.models import ConsentText, Product, RateLimit, Signup, Subscriber, Variant
from engine.waitlist import (
    IMPORT_CONSENT_TEXT,
    SCOPE_ALL,
    UNSUBSCRIBE_SALT,
    InvalidEmail,
    SignupRequest,
    Target,
    TokenError,
    WaitlistError,
    WaitlistImportError,
    address_hash,
    confirm,
    confirm_token,
    consent_version,
    forget,
    hit_rate_limit,
    import_waitlist,
    is_suppressed,
    normalize_email,
    purge_unconfirmed,
    read_subscriber_token,
    resolve_target,
    sign_up,
    site_urls,
    subscriber_token,
    token_subscriber,
    unsubscribe,
    unsubscribe_headers,
    waiting_signups,
    write_export,
)

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
COMING_SOON = {"packraft": {"status": "coming-soon", "title": "Packraft One"}}


def add_catalog(session: Session) -> None:
    """Add a tent (green sold out, blue in stock), a sold-out stove and a draft product."""
    session.add_all(
        [
            Product(
                handle="tent",
                title="Trail Tent",
                variants=[
                    Variant(
                        sku="TENT-GREEN",
                        option_key="green",
                        option_values=["Green"],
                        price=Decimal("199.00"),
                        stock=0,
                        sellable=False,
                    ),
                    Variant(
                        sku="TENT-BLUE",
                        option_key="blue",
                        option_values=["Blue"],
                        price=Decimal("199.00"),
                        stock=4,
                        sellable=True,
                    ),
                ],
            ),
            Product(
                handle="stove",
                title="Camp Stove",
                variants=[
                    Variant(
                        sku="STOVE",
                        option_key="",
                        option_values=[],
                        price=Decimal("59.00"),
                        stock=0,
                        sellable=False,
                    )
                ],
            ),
            Product(handle="draft", title="Draft", status="draft", variants=[]),
        ]
    )
    session.commit()


@pytest.fixture
def settings(app: Flask) -> dict[str, Any]:
    """Return the app's settings as a plain dict."""
    return dict(app.config)


@pytest.fixture
def catalog(session: Session) -> Session:
    """Return a session over a database holding the test catalog."""
    add_catalog(session)
    return session


def request_for(email: str, **overrides: Any) -> SignupRequest:
    """Return a signup request for an address."""
    values: dict[str, Any] = {
        "email": normalize_email(email),
        "quantity": 1,
        "consent_text": "Email me when it is back.",
        "page": "/products/stove/",
        "client_hash": "c" * 64,
    }
    values.update(overrides)
    return SignupRequest(**values)


def target(session: Session, settings: dict[str, Any], handle: str = "", sku: str = "") -> Target:
    """Resolve a target against the test catalog and coming-soon products."""
    return resolve_target(
        session, site_urls(settings), handle=handle, sku=sku, coming_soon=COMING_SOON
    )


# --------------------------------------------------------------------------- addresses


def test_addresses_are_normalized_for_deduplication_and_keep_their_display_form() -> None:
    email = normalize_email("  Ana.Lima@Example.COM ")
    assert email.display == "Ana.Lima@example.com"
    assert email.address == "ana.lima@example.com"


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "ana", "ana@", "@example.com", "ana@example", "ana@shop.test", "a@localhost",
     "x" * 10_000 + "@example.com"],
)  # fmt: skip
def test_unusable_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalize_email(raw)


def test_address_hash_is_keyed() -> None:
    assert address_hash("a", "ana@example.com") != address_hash("b", "ana@example.com")
    assert len(address_hash("a", "ana@example.com")) == 64
    with pytest.raises(ValueError):
        address_hash("", "ana@example.com")


def test_consent_version_changes_with_the_words_only() -> None:
    assert consent_version("Email me.") == consent_version("Email  me.\n")
    assert consent_version("Email me.") != consent_version("Email me soon.")


# --------------------------------------------------------------------------- rate limits


def test_rate_limit_counts_in_the_database_across_sessions(db: Database) -> None:
    with db.session() as one:
        assert hit_rate_limit(one, "client:x", 2, 30, NOW) == 0
    with db.session() as two:
        assert hit_rate_limit(two, "client:x", 2, 30, NOW + dt.timedelta(seconds=1)) == 0
    with db.session() as three:
        assert hit_rate_limit(three, "client:x", 2, 30, NOW + dt.timedelta(seconds=10)) == 20
        assert hit_rate_limit(three, "client:y", 2, 30, NOW) == 0
    with db.session() as later:
        assert hit_rate_limit(later, "client:x", 2, 30, NOW + dt.timedelta(seconds=30)) == 0
        row = later.get(RateLimit, "client:x")
        assert row is not None and row.hits == 1
        assert row.window_start == NOW + dt.timedelta(seconds=30)


def test_rate_limit_of_zero_is_off(session: Session) -> None:
    for _ in range(5):
        assert hit_rate_limit(session, "k", 0, 30, NOW) == 0
    assert session.scalar(select(func.count()).select_from(RateLimit)) == 0


# --------------------------------------------------------------------------- targets


def test_targets_resolve_from_catalog_and_coming_soon(
    catalog: Session, settings: dict[str, Any]
) -> None:
    green = target(catalog, settings, sku="TENT-GREEN")
    assert (green.handle, green.sku, green.sellable, green.variant_title) == (
        "tent",
        "TENT-GREEN",
        False,
        "Green",
    )
    blue = target(catalog, settings, handle="tent", sku="TENT-BLUE")
    assert blue.sellable and blue.buy_url.startswith("https://checkout.shop.test/products/tent?")
    assert target(catalog, settings, handle="stove").sellable is False
    assert target(catalog, settings, handle="packraft").title == "Packraft One"


@pytest.mark.parametrize(
    ("handle", "sku", "field"),
    [
        ("", "", "product"),
        ("nope", "", "product"),
        ("draft", "", "product"),
        ("", "NOPE", "variant"),
        ("stove", "TENT-GREEN", "variant"),
        ("packraft", "TENT-GREEN", "variant"),
    ],
)
def test_unknown_targets_name_the_field(
    catalog: Session, settings: dict[str, Any], handle: str, sku: str, field: str
) -> None:
    with pytest.raises(WaitlistError) as caught:
        target(catalog, settings, handle=handle, sku=sku)
    assert caught.value.field == field


# --------------------------------------------------------------------------- signing up


def test_signup_records_consent_source_and_client_hash(
    catalog: Session, settings: dict[str, Any]
) -> None:
    request = request_for(
        "Ana@Example.com",
        quantity=99,
        referrer="https://www.google.com/",
        utm={"utm_source": "newsletter", "utm_medium": "email"},
        via="json",
        site_host="shop.test",
    )
    outcome = sign_up(catalog, settings, request, target(catalog, settings, handle="stove"), NOW)
    catalog.commit()
    assert outcome.status == "pending" and outcome.send_confirmation
    signup = outcome.signup
    assert signup is not None and signup.subscriber is not None
    assert signup.subscriber.email == "Ana@example.com"
    assert signup.subscriber.address == "ana@example.com"
    assert signup.quantity == int(settings["WAITLIST_MAX_QUANTITY"])
    assert (signup.channel, signup.source, signup.medium) == ("email", "newsletter", "email")
    assert signup.consent_version == consent_version("Email me when it is back.")
    assert signup.consent_at == NOW and signup.signed_up_at == NOW
    assert signup.client_hash == "c" * 64
    text = catalog.get(ConsentText, signup.consent_version)
    assert text is not None and text.text == "Email me when it is back."


def test_repeat_signup_is_idempotent_and_resends_only_after_the_window(
    catalog: Session, settings: dict[str, Any]
) -> None:
    stove = target(catalog, settings, handle="stove")
    first = sign_up(catalog, settings, request_for("ana@example.com"), stove, NOW)
    again = sign_up(catalog, settings, request_for("ANA@example.com"), stove, NOW)
    assert first.send_confirmation and not again.send_confirmation
    later = NOW + dt.timedelta(minutes=int(settings["WAITLIST_CONFIRM_RESEND_MINUTES"]))
    assert sign_up(
        catalog, settings, request_for("ana@example.com"), stove, later
    ).send_confirmation
    assert catalog.scalar(select(func.count()).select_from(Signup)) == 1
    assert catalog.scalar(select(func.count()).select_from(Subscriber)) == 1


def test_confirmation_emails_per_address_are_capped_per_day(
    catalog: Session, settings: dict[str, Any]
) -> None:
    settings["WAITLIST_CONFIRMATIONS_PER_DAY"] = 2
    sent = []
    for handle, sku in [("stove", ""), ("tent", "TENT-GREEN"), ("packraft", "")]:
        outcome = sign_up(
            catalog,
            settings,
            request_for("ana@example.com"),
            target(catalog, settings, handle=handle, sku=sku),
            NOW,
        )
        sent.append(outcome.send_confirmation)
    assert sent == [True, True, False]
    assert catalog.scalar(select(func.count()).select_from(Signup)) == 3


def test_suppressed_addresses_are_discarded(catalog: Session, settings: dict[str, Any]) -> None:
    stove = target(catalog, settings, handle="stove")
    outcome = sign_up(catalog, settings, request_for("ana@example.com"), stove, NOW)
    assert outcome.subscriber is not None
    unsubscribe(catalog, settings["SECRET_KEY"], outcome.subscriber, SCOPE_ALL, NOW)
    again = sign_up(catalog, settings, request_for("Ana@Example.com"), stove, NOW)
    assert again.status == "discarded" and again.signup is None


def test_confirm_tokens_confirm_once_and_expire(catalog: Session, settings: dict[str, Any]) -> None:
    secret = settings["SECRET_KEY"]
    stove = target(catalog, settings, handle="stove")
    outcome = sign_up(catalog, settings, request_for("ana@example.com"), stove, NOW)
    assert outcome.subscriber is not None and outcome.signup is not None
    token = confirm_token(secret, outcome.subscriber, outcome.signup)
    assert confirm(catalog, secret, token, 3600, NOW).status == "confirmed"
    assert confirm(catalog, secret, token, 3600, NOW).status == "already"
    assert outcome.signup.status == "confirmed" and outcome.signup.confirmed_at == NOW
    with pytest.raises(TokenError) as expired:
        confirm(catalog, secret, token, -1, NOW)
    assert expired.value.expired
    with pytest.raises(TokenError):
        confirm(catalog, secret, token + "x", 3600, NOW)
    with pytest.raises(TokenError):
        confirm(catalog, "another-secret", token, 3600, NOW)


def test_subscriber_tokens_carry_scope_and_die_with_the_person(
    catalog: Session, settings: dict[str, Any]
) -> None:
    secret = settings["SECRET_KEY"]
    stove = target(catalog, settings, handle="stove")
    outcome = sign_up(catalog, settings, request_for("ana@example.com"), stove, NOW)
    catalog.commit()
    subscriber = outcome.subscriber
    assert subscriber is not None
    token = subscriber_token(secret, UNSUBSCRIBE_SALT, subscriber, "stove")
    claim = read_subscriber_token(secret, UNSUBSCRIBE_SALT, token)
    assert claim.scope == "stove" and token_subscriber(catalog, claim) is subscriber
    with pytest.raises(TokenError):
        read_subscriber_token(secret, "waitlist-manage", token)
    forget(catalog, secret, "ana@example.com", NOW)
    catalog.commit()
    # A new person who gets the same row id does not inherit the old links.
    again = sign_up(catalog, settings, request_for("bea@example.com"), stove, NOW)
    catalog.commit()
    assert again.subscriber is not None
    assert token_subscriber(catalog, claim) is None


def test_unsubscribe_headers_are_one_click(catalog: Session, settings: dict[str, Any]) -> None:
    settings["WAITLIST_UNSUBSCRIBE_MAILTO"] = "unsubscribe@example.com"
    stove = target(catalog, settings, handle="stove")
    subscriber = sign_up(catalog, settings, request_for("ana@example.com"), stove, NOW).subscriber
    assert subscriber is not None
    headers = unsubscribe_headers(settings, subscriber, "stove")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith("<https://shop.test/unsubscribe/")
    assert headers["List-Unsubscribe"].endswith(
        ", <mailto:unsubscribe@example.com?subject=unsubscribe>"
    )


def test_unsubscribing_from_one_product_is_not_a_suppression(
    catalog: Session, settings: dict[str, Any]
) -> None:
    secret = settings["SECRET_KEY"]
    for handle, sku in [("stove", ""), ("tent", "TENT-GREEN")]:
        outcome = sign_up(
            catalog,
            settings,
            request_for("ana@example.com"),
            target(catalog, settings, handle=handle, sku=sku),
            NOW,
        )
    subscriber = outcome.subscriber
    assert subscriber is not None
    assert unsubscribe(catalog, secret, subscriber, "tent", NOW) == 1
    assert [s.product_handle for s in waiting_signups(catalog, subscriber)] == ["stove"]
    assert not is_suppressed(catalog, secret, "ana@example.com")
    assert unsubscribe(catalog, secret, subscriber, SCOPE_ALL, NOW) == 1
    assert waiting_signups(catalog, subscriber) == []
    assert is_suppressed(catalog, secret, "ana@example.com")


# --------------------------------------------------------------------------- purge


def test_purge_removes_old_unconfirmed_signups_only(
    catalog: Session, settings: dict[str, Any]
) -> None:
    secret = settings["SECRET_KEY"]
    stove = target(catalog, settings, handle="stove")
    old = sign_up(catalog, settings, request_for("old@example.com"), stove, NOW)
    kept = sign_up(catalog, settings, request_for("kept@example.com"), stove, NOW)
    assert kept.subscriber is not None and kept.signup is not None
    confirm(catalog, secret, confirm_token(secret, kept.subscriber, kept.signup), 3600, NOW)
    sign_up(catalog, settings, request_for("new@example.com"), stove, NOW + dt.timedelta(days=6))
    hit_rate_limit(catalog, "client:x", 5, 30, NOW)
    catalog.commit()
    report = purge_unconfirmed(catalog, NOW + dt.timedelta(days=7, seconds=1), days=7)
    catalog.commit()
    # Counters older than a day go too: one client counter, three confirmation caps.
    assert (report.signups, report.subscribers, report.rate_limits) == (1, 1, 4)
    assert old.subscriber is not None
    left = set(catalog.scalars(select(Subscriber.address)))
    assert left == {"kept@example.com", "new@example.com"}


# --------------------------------------------------------------------------- export, erasure


def test_export_lists_waiting_signups_as_csv(catalog: Session, settings: dict[str, Any]) -> None:
    secret = settings["SECRET_KEY"]
    stove = target(catalog, settings, handle="stove")
    ana = sign_up(catalog, settings, request_for("Ana@example.com"), stove, NOW)
    sign_up(
        catalog,
        settings,
        request_for("bea@example.com"),
        target(catalog, settings, sku="TENT-GREEN"),
        NOW,
    )
    assert ana.subscriber is not None and ana.signup is not None
    confirm(catalog, secret, confirm_token(secret, ana.subscriber, ana.signup), 3600, NOW)
    out = io.StringIO()
    assert write_export(catalog, out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("email,product,variant,quantity,signed_up_at,confirmed")
    assert lines[1].startswith("Ana@example.com,stove,,1,2026-03-02T12:00:00Z,true")
    assert lines[2].startswith("bea@example.com,tent,TENT-GREEN,1,2026-03-02T12:00:00Z,false")
    only = io.StringIO()
    assert write_export(catalog, only, product="tent") == 1


def test_forget_removes_personal_data_and_keeps_counts_and_suppression(
    catalog: Session, settings: dict[str, Any]
) -> None:
    secret = settings["SECRET_KEY"]
    stove = target(catalog, settings, handle="stove")
    outcome = sign_up(
        catalog,
        settings,
        request_for("ana@example.com", referrer="https://news.example.org/?u=ana"),
        stove,
        NOW,
    )
    assert outcome.subscriber is not None
    unsubscribe(catalog, secret, outcome.subscriber, SCOPE_ALL, NOW)
    catalog.commit()
    erasure = forget(catalog, secret, "ANA@example.com", NOW)
    catalog.commit()
    assert erasure.found and erasure.signups_anonymized == 1 and erasure.suppressed
    assert catalog.scalar(select(func.count()).select_from(Subscriber)) == 0
    row = catalog.scalars(select(Signup)).one()
    assert row.subscriber_id is None and row.client_hash is None
    assert row.referrer == "" and row.page == "" and row.utm == {}
    assert (row.product_handle, row.quantity, row.signed_up_at) == ("stove", 1, NOW)
    assert is_suppressed(catalog, secret, "ana@example.com")
    assert not forget(catalog, secret, "nobody@example.com", NOW).found


# --------------------------------------------------------------------------- import


def write_csv(tmp_path: Path, text: str, name: str = "waitlist.csv") -> Path:
    """Write a CSV file for the importer."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_IMPORT = """email,variant,product,signed_up_at,confirmed,quantity
ana@example.com,TENT-GREEN,,2025-11-02T08:00:00Z,true,2
bea@example.com,,stove,2025-12-24,false,
cid@example.com,,packraft,2026-01-05T10:00:00+01:00,TRUE,1
"""


def test_import_keeps_dates_and_pending_rows_age_from_the_import(
    catalog: Session, settings: dict[str, Any], tmp_path: Path
) -> None:
    report = import_waitlist(catalog, settings, write_csv(tmp_path, GOOD_IMPORT), NOW, COMING_SOON)
    catalog.commit()
    assert (report.created, report.unchanged) == (3, 0)
    rows = {s.subscriber.address: s for s in catalog.scalars(select(Signup)) if s.subscriber}
    ana, bea, cid = rows["ana@example.com"], rows["bea@example.com"], rows["cid@example.com"]
    assert ana.status == "confirmed" and ana.quantity == 2 and ana.sku == "TENT-GREEN"
    assert ana.signed_up_at == dt.datetime(2025, 11, 2, 8, 0, tzinfo=dt.UTC)
    assert bea.status == "pending" and bea.pending_since == NOW and bea.confirmation_sent_at is None
    assert bea.signed_up_at == dt.datetime(2025, 12, 24, tzinfo=dt.UTC)
    assert cid.signed_up_at == dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    assert ana.via == "import" and ana.consent_version == consent_version(IMPORT_CONSENT_TEXT)
    # Pending imported rows are purged a number of days after the import, not after 2025.
    assert purge_unconfirmed(catalog, NOW + dt.timedelta(days=1), days=7).signups == 0

    again = import_waitlist(catalog, settings, write_csv(tmp_path, GOOD_IMPORT), NOW, COMING_SOON)
    assert (again.created, again.unchanged) == (0, 3)
    assert catalog.scalar(select(func.count()).select_from(Signup)) == 3


def test_import_reports_every_bad_line_and_imports_nothing(
    catalog: Session, settings: dict[str, Any], tmp_path: Path
) -> None:
    text = (
        "email,variant,product,signed_up_at,confirmed\n"
        "ana@example.com,TENT-GREEN,,2025-11-02,true\n"
        "\n"
        "not-an-address,,stove,2025-11-02,true\n"
        'bea@example.com,,"no\nsuch",2025-11-02,maybe\n'
        "cid@example.com,,stove,yesterday,false\n"
        "dan@example.com,,stove,2099-01-01,false\n"
    )
    with pytest.raises(WaitlistImportError) as caught:
        import_waitlist(catalog, settings, write_csv(tmp_path, text), NOW, COMING_SOON)
    errors = caught.value.errors
    assert errors[0].startswith("waitlist.csv:4: email:")
    assert errors[1] == "waitlist.csv:5: product: We don't know that product."
    assert errors[2] == "waitlist.csv:5: confirmed: expected true or false, got 'maybe'"
    assert errors[3].startswith("waitlist.csv:7: signed_up_at: not an ISO 8601")
    assert errors[4].startswith("waitlist.csv:8: signed_up_at: 2099-01-01 is in the future")
    assert len(errors) == 5
    assert catalog.scalar(select(func.count()).select_from(Signup)) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "waitlist.csv:1: the file is empty"),
        ("email,sku,signed_up_at,confirmed\n", "waitlist.csv:1: unknown column 'sku'"),
        ("email,product,confirmed\n", "waitlist.csv:1: missing column(s): signed_up_at"),
    ],
)
def test_import_refuses_bad_headers(
    catalog: Session, settings: dict[str, Any], tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(WaitlistImportError) as caught:
        import_waitlist(catalog, settings, write_csv(tmp_path, text), NOW, COMING_SOON)
    assert caught.value.errors[0].startswith(message)


def test_import_skips_suppressed_and_merges_duplicates(
    catalog: Session, settings: dict[str, Any], tmp_path: Path
) -> None:
    from engine.waitlist import suppress

    suppress(catalog, settings["SECRET_KEY"], "ana@example.com", "unsubscribed", NOW)
    text = (
        "email,product,signed_up_at,confirmed\n"
        "Ana@Example.com,stove,2025-11-02,true\n"
        "bea@example.com,stove,2025-11-05,false\n"
        "BEA@example.com,stove,2025-11-01,true\n"
    )
    report = import_waitlist(catalog, settings, write_csv(tmp_path, text), NOW, COMING_SOON)
    assert (report.created, report.suppressed, report.duplicates) == (1, 1, 1)
    bea = catalog.scalars(select(Signup)).one()
    assert bea.status == "confirmed"
    assert bea.signed_up_at == dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
