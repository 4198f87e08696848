"""POST /hooks/inventory: signatures, absolute updates by updated_at, all or nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from engine.catalog import import_catalog
from engine.db import Database, utcnow
from engine.models import StockTransition, Variant
from engine.signatures import (
    SIGNATURE_HEADER,
    SignatureError,
    parse_signature,
    sign,
    verify_signature,
)

SECRET = "whsec-inventory-test"
CATALOG = (
    "handle,title,sku,price,stock,policy\n"
    "tent,Dome Tent,TENT-1,299.00,0,deny\n"
    "lamp,Camp Lamp,LAMP-1,25.00,4,deny\n"
)


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """Return the test settings with the inventory hook's secret."""
    return {**config, "INVENTORY_WEBHOOK_SECRET": SECRET}


@pytest.fixture
def catalog(db: Database, tmp_path: Path) -> None:
    """Import a tent (sold out) and a lamp (4 in stock)."""
    path = tmp_path / "catalog.csv"
    path.write_text(CATALOG, encoding="utf-8")
    with db.session() as session:
        assert import_catalog(session, path).ok


def post(
    client: FlaskClient,
    payload: Any,
    *,
    secret: str = SECRET,
    at: float | None = None,
    header: str | None = None,
) -> TestResponse:
    """Post a signed delivery (``header`` replaces the signature; "" sends none)."""
    body = json.dumps(payload).encode()
    timestamp = int(at if at is not None else utcnow().timestamp())
    headers = {"Content-Type": "application/json"}
    signature = sign(secret, body, timestamp) if header is None else header
    if signature:
        headers[SIGNATURE_HEADER] = signature
    return client.post("/hooks/inventory", data=body, headers=headers)


def item(sku: str, available: int, updated_at: dt.datetime | None = None, **extra: Any) -> dict:
    """Return one delivery item, updated now unless told."""
    moment = updated_at or utcnow()
    return {"sku": sku, "available": available, "updated_at": moment.isoformat(), **extra}


def variant(session: Session, sku: str) -> Variant:
    """Return the variant with this SKU, freshly read."""
    session.expire_all()
    found = session.scalar(select(Variant).where(Variant.sku == sku))
    assert found is not None
    return found


def transitions(session: Session) -> list[tuple[str | None, bool, str]]:
    """Return every recorded transition as (sku, restock, source)."""
    query = select(StockTransition).order_by(StockTransition.id)
    return [(t.sku, t.restock, t.source) for t in session.scalars(query)]


# --- the signature scheme itself ---------------------------------------------------------


def test_signature_round_trip_and_failures() -> None:
    body = b'{"items": []}'
    header = sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature(SECRET, header, body, 1_700_000_100.0, 300) == 1_700_000_000
    # A second v1 (a secret being rotated) is accepted when one matches.
    rotated = f"{header},v1={'0' * 64}"
    assert verify_signature(SECRET, rotated, body, 1_700_000_000.0, 300) == 1_700_000_000
    assert parse_signature(rotated)[1][1] == "0" * 64
    failures = {
        "wrong secret": (sign("other", body, 1_700_000_000), body, 1_700_000_000.0),
        "changed body": (header, body + b" ", 1_700_000_000.0),
        "stale": (header, body, 1_700_000_301.0),
        "future": (header, body, 1_699_999_699.0),
        "missing": ("", body, 1_700_000_000.0),
        "malformed": ("v1=abc", body, 1_700_000_000.0),
        "bad t": ("t=soon,v1=abc", body, 1_700_000_000.0),
    }
    for name, (value, payload, now) in failures.items():
        with pytest.raises(SignatureError):
            verify_signature(SECRET, value, payload, now, 300)
            pytest.fail(name)
    with pytest.raises(SignatureError, match="no signing secret"):
        verify_signature("", header, body, 1_700_000_000.0, 300)


# --- the hook ------------------------------------------------------------------------------


@pytest.mark.usefixtures("catalog")
def test_a_signed_restock_is_applied_through_set_stock(client: FlaskClient, db: Database) -> None:
    response = post(client, {"items": [item("TENT-1", 5), item("LAMP-1", 0)]})
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert (answer["applied"], answer["ignored_stale"], answer["unknown"]) == (2, 0, 0)
    assert answer["restocked"] == ["TENT-1"] and answer["sold_out"] == ["LAMP-1"]
    with db.sessions() as session:
        assert variant(session, "TENT-1").stock == 5 and variant(session, "TENT-1").sellable
        assert not variant(session, "LAMP-1").sellable
        assert transitions(session)[-2:] == [
            ("TENT-1", True, "webhook"),
            ("LAMP-1", False, "webhook"),
        ]


@pytest.mark.usefixtures("catalog")
def test_bare_list_policy_and_unknown_skus(client: FlaskClient, db: Database) -> None:
    response = post(client, [item("TENT-1", 0, policy="continue"), item("NOPE-9", 3)])
    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["applied"], answer["unknown"], answer["unknown_skus"]) == (1, 1, ["NOPE-9"])
    with db.sessions() as session:
        tent = variant(session, "TENT-1")
        assert (tent.inventory_policy, tent.sellable) == ("continue", True)


@pytest.mark.usefixtures("catalog")
def test_replayed_or_older_updates_cannot_fake_a_restock(
    client: FlaskClient, db: Database
) -> None:
    restock_at = utcnow()
    restock = {"items": [item("TENT-1", 5, restock_at)]}
    assert post(client, restock).get_json()["applied"] == 1
    sold_out = {"items": [item("TENT-1", 0, restock_at + dt.timedelta(seconds=1))]}
    assert post(client, sold_out).get_json()["sold_out"] == ["TENT-1"]
    # The first delivery again (a replay, freshly signed or not): its updated_at is older.
    replay = post(client, restock).get_json()
    assert (replay["applied"], replay["ignored_stale"], replay["restocked"]) == (0, 1, [])
    assert replay["stale_skus"] == ["TENT-1"]
    # The very same delivery twice (equal updated_at) is seen already, too.
    assert post(client, sold_out).get_json()["ignored_stale"] == 1
    with db.sessions() as session:
        assert variant(session, "TENT-1").stock == 0
        assert [t for t in transitions(session) if t[0] == "TENT-1"] == [
            ("TENT-1", True, "webhook"),
            ("TENT-1", False, "webhook"),
        ]


@pytest.mark.usefixtures("catalog")
def test_an_update_older_than_the_last_import_is_ignored(client: FlaskClient, db: Database) -> None:
    answer = post(client, [item("TENT-1", 5, utcnow() - dt.timedelta(hours=1))]).get_json()
    assert (answer["applied"], answer["ignored_stale"]) == (0, 1)


@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize(
    "case",
    ["missing", "wrong secret", "stale", "future", "malformed", "tampered"],
)
def test_bad_signatures_get_401_and_change_nothing(
    client: FlaskClient, db: Database, case: str
) -> None:
    payload = {"items": [item("TENT-1", 5)]}
    now = utcnow().timestamp()
    if case == "missing":
        response = post(client, payload, header="")
    elif case == "wrong secret":
        response = post(client, payload, secret="not-the-secret")
    elif case == "stale":
        response = post(client, payload, at=now - 301)
    elif case == "future":
        response = post(client, payload, at=now + 301)
    elif case == "malformed":
        response = post(client, payload, header="sha256=abc")
    else:
        other = json.dumps({"items": [item("TENT-1", 1)]}).encode()
        response = post(client, payload, header=sign(SECRET, other, int(now)))
    assert response.status_code == 401
    assert "error" in response.get_json()
    with db.sessions() as session:
        assert variant(session, "TENT-1").stock == 0
        assert [t for t in transitions(session) if t[0] == "TENT-1"] == []


@pytest.mark.usefixtures("catalog")
def test_a_signature_within_the_tolerance_is_accepted(client: FlaskClient) -> None:
    now = utcnow().timestamp()
    assert post(client, [item("TENT-1", 1)], at=now - 290).status_code == 200
    assert post(client, [item("TENT-1", 2)], at=now + 290).status_code == 200


@pytest.mark.usefixtures("catalog")
def test_bad_items_are_all_reported_and_nothing_is_applied(
    client: FlaskClient, db: Database
) -> None:
    items = [
        item("TENT-1", 5),
        {"sku": "LAMP-1", "available": "many", "updated_at": utcnow().isoformat()},
        {"sku": "", "available": 1, "updated_at": "yesterday"},
        {"sku": "LAMP-1", "available": 1, "updated_at": "2026-11-25T12:00:00"},
        item("LAMP-1", 1, policy="sometimes"),
        item("LAMP-1", 1, utcnow() + dt.timedelta(hours=1)),
        "LAMP-1",
        {"sku": "LAMP-1", "available": True, "updated_at": utcnow().isoformat(), "x": 1},
    ]
    response = post(client, {"items": items})
    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert {(e["index"], e["field"]) for e in errors} >= {
        (1, "available"),
        (2, "sku"),
        (2, "updated_at"),
        (3, "updated_at"),
        (4, "policy"),
        (5, "updated_at"),
        (6, "item"),
        (7, "available"),
        (7, "item"),
    }
    assert not [e for e in errors if e["index"] == 0]
    assert "no UTC offset" in next(e for e in errors if e["index"] == 3)["message"]
    assert "future" in next(e for e in errors if e["index"] == 5)["message"]
    with db.sessions() as session:
        assert variant(session, "TENT-1").stock == 0
        assert ("TENT-1", True, "webhook") not in transitions(session)


@pytest.mark.usefixtures("catalog")
def test_not_json_and_wrong_shapes_are_400(client: FlaskClient) -> None:
    now = int(utcnow().timestamp())
    body = b"sku=TENT-1"
    response = client.post(
        "/hooks/inventory", data=body, headers={SIGNATURE_HEADER: sign(SECRET, body, now)}
    )
    assert response.status_code == 400 and "not JSON" in response.get_json()["error"]
    assert post(client, {"item": []}).status_code == 400
    assert post(client, {"items": {"sku": "TENT-1"}}).status_code == 400


def test_no_secret_configured_is_503(config: dict[str, Any]) -> None:
    from engine import create_app
    from engine.db import get_db

    application: Flask = create_app({**config, "INVENTORY_WEBHOOK_SECRET": ""})
    get_db(application).upgrade()
    try:
        response = post(application.test_client(), [item("TENT-1", 5)])
        assert response.status_code == 503
        assert "INVENTORY_WEBHOOK_SECRET" in response.get_json()["error"]
    finally:
        get_db(application).dispose()


def test_oversized_body_is_413(app: Flask, client: FlaskClient) -> None:
    app.config["HOOK_MAX_BODY_BYTES"] = 100
    response = post(client, [item(f"SKU-{n}", n) for n in range(10)])
    assert response.status_code == 413
