"""Orders: Shopify orders CSV import, POST /hooks/orders, attribution to restock emails."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from engine.catalog import import_catalog
from engine.db import Database, utcnow
from engine.models import (
    Campaign,
    CampaignMessage,
    Order,
    OrderLine,
    PageView,
    Subscriber,
)
from engine.orders import (
    OrderImportError,
    attribute_orders,
    campaign_conversions,
    import_orders,
    parse_order_time,
)
from engine.signatures import SIGNATURE_HEADER, sign
from engine.waitlist import forget

SECRET = "whsec-orders-test"
CATALOG = (
    "handle,title,option1_name,option1_value,sku,price,stock\n"
    "tent,Dome Tent,Color,Moss,TENT-MOSS,299.00,5\n"
    "tent,,,Sand,TENT-SAND,299.00,5\n"
    "lamp,Camp Lamp,,,LAMP-1,25.00,4\n"
)
# The columns of Shopify's orders export, in its order.
HEADER = (
    "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,"
    "Currency,Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,"
    "Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,"
    "Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,"
    "Billing Name,Billing Street,Billing City,Billing Zip,Billing Country,Notes,Cancelled at,"
    "Refunded Amount,Vendor,Id,Tags"
)
COLUMNS = HEADER.split(",")


def row(**cells: str) -> str:
    """Return one export row with these cells (by column name), the rest empty."""
    values = []
    for column in COLUMNS:
        value = cells.get(column, "")
        values.append(f'"{value}"' if ("," in value or "\n" in value) else value)
    return ",".join(values)


def first_row(name: str, email: str, created: str, **cells: str) -> str:
    """Return an order's first row: the order-level columns filled."""
    defaults = {"Financial Status": "paid", "Created at": created, "Currency": "USD"}
    return row(Name=name, Email=email, **{**defaults, **cells})


def item_row(name: str, quantity: str, title: str, price: str, sku: str) -> str:
    """Return a following row of an order: the line item only."""
    return row(
        Name=name,
        **{
            "Lineitem quantity": quantity,
            "Lineitem name": title,
            "Lineitem price": price,
            "Lineitem sku": sku,
        },
    )


def line_cells(quantity: str, title: str, price: str, sku: str) -> dict[str, str]:
    """Return the line-item cells of a row."""
    return {
        "Lineitem quantity": quantity,
        "Lineitem name": title,
        "Lineitem price": price,
        "Lineitem sku": sku,
    }


EXPORT = "\n".join(
    [
        HEADER,
        first_row(
            "#1001",
            "Ana@Example.COM",
            "2026-09-03 10:14:00 -0400",
            Total="623.00",
            Id="5550000001",
            Notes="leave at the door,\nplease",
            **line_cells("2", "Dome Tent - Moss", "299.00", "TENT-MOSS"),
        ),
        item_row("#1001", "1", "Camp Lamp", "25.00", "LAMP-1"),
        first_row(
            "#1002",
            "bo@example.com",
            "2026-09-04 08:00:00 +0000",
            Total="10.00",
            **line_cells("1", "Gift wrap", "10.00", ""),
        ),
    ]
)


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """Return the test settings with the orders hook's secret."""
    return {**config, "ORDERS_WEBHOOK_SECRET": SECRET}


@pytest.fixture
def catalog(db: Database, tmp_path: Path) -> None:
    """Import a two-variant tent and a lamp."""
    path = tmp_path / "catalog.csv"
    path.write_text(CATALOG, encoding="utf-8")
    with db.session() as session:
        assert import_catalog(session, path).ok


def write(tmp_path: Path, text: str, name: str = "orders_export.csv") -> Path:
    """Write an export file (with Shopify's BOM) and return its path."""
    path = tmp_path / name
    path.write_text("\ufeff" + text + "\n", encoding="utf-8")
    return path


def orders(session: Session) -> list[Order]:
    """Return every stored order, by name."""
    session.expire_all()
    return list(session.scalars(select(Order).order_by(Order.name)))


# --- CSV import ------------------------------------------------------------------------------


@pytest.mark.usefixtures("catalog")
def test_a_shopify_export_with_multi_line_orders(db: Database, tmp_path: Path) -> None:
    path = write(tmp_path, EXPORT)
    with db.session() as session:
        report = import_orders(session, path)
    assert (report.orders, report.lines, report.created) == (2, 3, 2)
    with db.sessions() as session:
        first, second = orders(session)
        assert (first.name, first.external_id, first.address) == (
            "#1001",
            "5550000001",
            "ana@example.com",
        )
        assert first.ordered_at == dt.datetime(2026, 9, 3, 14, 14, tzinfo=dt.UTC)
        assert (first.total, first.currency, first.financial_status, first.source) == (
            Decimal("623.00"),
            "USD",
            "paid",
            "csv",
        )
        assert [
            (line.position, line.sku, line.product_handle, line.quantity, line.price)
            for line in first.lines
        ] == [
            (1, "TENT-MOSS", "tent", 2, Decimal("299.00")),
            (2, "LAMP-1", "lamp", 1, Decimal("25.00")),
        ]
        assert [(line.sku, line.product_handle, line.title) for line in second.lines] == [
            (None, None, "Gift wrap")
        ]


@pytest.mark.usefixtures("catalog")
def test_importing_again_changes_nothing_and_picks_up_cancellations(
    db: Database, tmp_path: Path
) -> None:
    path = write(tmp_path, EXPORT)
    with db.session() as session:
        import_orders(session, path)
    with db.session() as session:
        again = import_orders(session, path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    cancelled = EXPORT.replace(
        first_row(
            "#1002",
            "bo@example.com",
            "2026-09-04 08:00:00 +0000",
            Total="10.00",
            **line_cells("1", "Gift wrap", "10.00", ""),
        ),
        first_row(
            "#1002",
            "bo@example.com",
            "2026-09-04 08:00:00 +0000",
            Total="10.00",
            **{"Cancelled at": "2026-09-05 09:00:00 +0000", "Financial Status": "voided"},
            **line_cells("1", "Gift wrap", "10.00", ""),
        ),
    )
    with db.session() as session:
        changed = import_orders(session, write(tmp_path, cancelled, "later.csv"))
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 1)
    with db.sessions() as session:
        stored = orders(session)
        assert len(stored) == 2 and stored[1].financial_status == "voided"
        assert stored[1].cancelled_at == dt.datetime(2026, 9, 5, 9, tzinfo=dt.UTC)
        assert session.scalar(select(func.count()).select_from(OrderLine)) == 3


@pytest.mark.usefixtures("catalog")
def test_bad_rows_are_reported_by_physical_line_and_nothing_is_stored(
    db: Database, tmp_path: Path
) -> None:
    text = "\n".join(
        [
            HEADER,
            # Lines 2-3: a good order whose Notes cell spans two physical lines.
            first_row(
                "#2001",
                "ana@example.com",
                "2026-09-03 10:14:00 -0400",
                Notes="two\nlines",
                **line_cells("1", "Tent", "299.00", "TENT-MOSS"),
            ),
            item_row("#2001", "many", "Lamp", "25.00", "LAMP-1"),  # line 4
            first_row(  # line 5
                "#2002",
                "bo@example.com",
                "yesterday",
                **line_cells("1", "Lamp", "cheap", "LAMP-1"),
            ),
            item_row("", "1", "Lamp", "25.00", "LAMP-1"),  # line 6
            first_row(  # line 7
                "#2003",
                "cy@example.com",
                "2026-09-03 10:14:00",
                **line_cells("0", "Lamp", "25.00", "LAMP-1"),
            ),
        ]
    )
    with db.session() as session, pytest.raises(OrderImportError) as caught:
        import_orders(session, write(tmp_path, text))
    assert caught.value.errors == [
        "orders_export.csv:4: Lineitem quantity: 'many' is not a whole number",
        "orders_export.csv:5: Created at: 'yesterday' is not a date and time",
        "orders_export.csv:5: Lineitem price: 'cheap' is not an amount",
        "orders_export.csv:6: Name: is empty (every row names its order)",
        "orders_export.csv:7: Created at: '2026-09-03 10:14:00' has no UTC offset",
        "orders_export.csv:7: Lineitem quantity: '0' must be 1 or more",
    ]
    with db.sessions() as session:
        assert orders(session) == []


def test_a_file_that_is_not_an_orders_export(db: Database, tmp_path: Path) -> None:
    with db.session() as session, pytest.raises(OrderImportError) as caught:
        import_orders(session, write(tmp_path, "Handle,Title\ntent,Tent"))
    assert caught.value.errors == [
        "orders_export.csv:1: not a Shopify orders export: missing column(s) Name, Email, "
        "Created at, Lineitem quantity, Lineitem price, Lineitem sku"
    ]
    with db.session() as session, pytest.raises(OrderImportError, match="cannot read"):
        import_orders(session, tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes((HEADER + "\n#1,caf\xe9@x.com").encode("latin-1"))
    with db.session() as session, pytest.raises(OrderImportError, match="not UTF-8"):
        import_orders(session, tmp_path / "latin1.csv")


def test_order_times() -> None:
    assert parse_order_time("2026-09-03 10:14:00 -0400") == dt.datetime(
        2026, 9, 3, 14, 14, tzinfo=dt.UTC
    )
    assert parse_order_time("2026-09-03T10:14:00Z").hour == 10
    assert parse_order_time("2026-09-03T10:14:00-02:00").hour == 12


@pytest.mark.usefixtures("catalog")
def test_engine_orders_import_command(runner: FlaskCliRunner, tmp_path: Path) -> None:
    result = runner.invoke(args=["orders", "import", str(write(tmp_path, EXPORT))])
    assert result.exit_code == 0, result.output
    assert "2 order(s), 3 line item(s): created 2, updated 0, unchanged 0" in result.output
    bad = write(tmp_path, EXPORT.replace("623.00", "lots"), "bad.csv")
    result = runner.invoke(args=["orders", "import", str(bad)])
    assert result.exit_code == 1
    assert "bad.csv:2: Total: 'lots' is not an amount" in result.output
    assert "nothing was imported" in result.output


# --- the orders hook -------------------------------------------------------------------------


def post_order(client: FlaskClient, payload: Any, *, secret: str = SECRET) -> TestResponse:
    """Post a signed order."""
    body = json.dumps(payload).encode()
    header = sign(secret, body, int(utcnow().timestamp()))
    return client.post(
        "/hooks/orders",
        data=body,
        headers={SIGNATURE_HEADER: header, "Content-Type": "application/json"},
    )


def hook_order(**changes: Any) -> dict[str, Any]:
    """Return an order body as a store would post it (extra keys are ignored)."""
    return {
        "id": 820982911946154508,
        "name": "#9999",
        "email": "Ana@example.com",
        "created_at": "2026-09-03T10:14:00-04:00",
        "total_price": "623.00",
        "currency": "USD",
        "financial_status": "paid",
        "line_items": [
            {"sku": "TENT-SAND", "quantity": 2, "price": "299.00", "title": "Dome Tent"},
            {"sku": "LAMP-1", "quantity": 1, "price": 25},
        ],
        "customer": {"first_name": "Ana"},
        **changes,
    }


@pytest.mark.usefixtures("catalog")
def test_the_orders_hook_stores_an_order_once(client: FlaskClient, db: Database) -> None:
    response = post_order(client, hook_order())
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "created"
    assert post_order(client, hook_order()).get_json()["status"] == "unchanged"
    # Known by its id even when the name is missing on a later delivery.
    later = hook_order(name=None, financial_status="refunded")
    assert post_order(client, later).get_json()["status"] == "updated"
    with db.sessions() as session:
        (order,) = orders(session)
        assert (order.name, order.external_id, order.address, order.source) == (
            "#9999",
            "820982911946154508",
            "ana@example.com",
            "hook",
        )
        assert order.financial_status == "refunded"
        assert [(line.sku, line.product_handle, line.price) for line in order.lines] == [
            ("TENT-SAND", "tent", Decimal("299.00")),
            ("LAMP-1", "lamp", Decimal("25.00")),
        ]


@pytest.mark.usefixtures("catalog")
def test_the_orders_hook_refuses_bad_orders_and_signatures(
    client: FlaskClient, db: Database
) -> None:
    response = post_order(
        client,
        hook_order(
            id=None,
            name=None,
            created_at="soon",
            line_items=[{"sku": "LAMP-1", "quantity": 0, "price": "x"}, "lamp"],
        ),
    )
    assert response.status_code == 400
    assert response.get_json()["errors"] == [
        "id or name: one is required",
        "created_at: 'soon' is not a date and time",
        "line_items[0].quantity: 0 must be 1 or more",
        "line_items[1]: must be an object",
    ]
    assert post_order(client, hook_order(line_items=[])).status_code == 400
    assert post_order(client, hook_order(), secret="wrong").status_code == 401
    unsigned = client.post("/hooks/orders", json=hook_order())
    assert unsigned.status_code == 401
    with db.sessions() as session:
        assert orders(session) == []


# --- attribution -----------------------------------------------------------------------------

SENT_AT = dt.datetime(2026, 9, 1, 9, 0, tzinfo=dt.UTC)


def restock_email(
    session: Session,
    address: str,
    handle: str = "tent",
    *,
    sent_at: dt.datetime = SENT_AT,
    clicked_at: dt.datetime | None = None,
    status: str = "sent",
) -> CampaignMessage:
    """Record a campaign for a product and one email of it sent to a person."""
    campaign = session.scalar(select(Campaign).where(Campaign.product_handle == handle))
    if campaign is None:
        campaign = Campaign(product_handle=handle, status="finished", skus=[])
        session.add(campaign)
        session.flush()
    subscriber = session.scalar(select(Subscriber).where(Subscriber.address == address))
    if subscriber is None:
        subscriber = Subscriber(address=address, email=address, token_key="k" * 32)
        session.add(subscriber)
        session.flush()
    message = CampaignMessage(
        campaign_id=campaign.id,
        subscriber_id=subscriber.id,
        signup_ids=[],
        wave=1,
        message_id=f"m-{address}-{handle}",
        status=status,
        sent_at=sent_at,
        clicked_at=clicked_at,
    )
    session.add(message)
    session.flush()
    return message


def store_order(
    client: FlaskClient, name: str, email: str, at: dt.datetime, *lines: tuple[str, int]
) -> dict[str, Any]:
    """Post an order of (sku, quantity) lines at a time; return the hook's answer."""
    items = [{"sku": sku, "quantity": quantity, "price": "100.00"} for sku, quantity in lines]
    body = {"name": name, "email": email, "created_at": at.isoformat(), "line_items": items}
    response = post_order(client, body)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def attribution_of(session: Session, name: str) -> list[tuple[str | None, str, int | None]]:
    """Return each line of an order as (sku, attribution, campaign id)."""
    session.expire_all()
    order = session.scalar(select(Order).where(Order.name == name))
    assert order is not None
    return [(line.sku, line.attribution, line.campaign_id) for line in order.lines]


@pytest.mark.usefixtures("catalog")
def test_attribution_direct_assisted_and_outside_the_window(
    client: FlaskClient, db: Database
) -> None:
    hour = dt.timedelta(hours=1)
    with db.session() as session:
        clicker = restock_email(session, "ana@example.com", clicked_at=SENT_AT + hour)
        visitor = restock_email(session, "bo@example.com")
        restock_email(session, "cy@example.com")
        restock_email(session, "di@example.com")
        restock_email(session, "ed@example.com")
        restock_email(session, "fay@example.com", "lamp")
        restock_email(session, "gus@example.com", status="failed")
        campaign_id = clicker.campaign_id
        # Bo clicked through: the landing page view carries the email's et token.
        session.add(
            PageView(
                day=SENT_AT.date(),
                ts=SENT_AT + 2 * hour,
                path="/products/tent/",
                channel="email",
                engine_token=visitor.message_id,
                visitor="v" * 32,
                entry=True,
            )
        )
    two_days = SENT_AT + dt.timedelta(days=2)
    # Ana clicked, then bought the other variant of the product: direct (the lamp is not it).
    answer = store_order(client, "#1", "ANA@example.com", two_days, ("TENT-SAND", 1), ("LAMP-1", 1))
    assert answer["attributed_lines"] == 1
    store_order(client, "#2", "bo@example.com", two_days, ("TENT-MOSS", 2))
    store_order(client, "#3", "cy@example.com", two_days, ("TENT-MOSS", 1))  # no click
    # Di ordered 8 days after the email: outside the default 7-day window.
    store_order(client, "#4", "di@example.com", SENT_AT + dt.timedelta(days=8), ("TENT-MOSS", 1))
    # Ed ordered before the email went out.
    store_order(client, "#5", "ed@example.com", SENT_AT - hour, ("TENT-MOSS", 1))
    # Fay was told about the lamp, not the tent; Gus's email never left.
    store_order(client, "#6", "fay@example.com", two_days, ("TENT-MOSS", 1))
    store_order(client, "#7", "gus@example.com", two_days, ("TENT-MOSS", 1))
    # Hal was never emailed.
    store_order(client, "#8", "hal@example.com", two_days, ("TENT-MOSS", 1))
    with db.sessions() as session:
        assert attribution_of(session, "#1") == [
            ("TENT-SAND", "direct", campaign_id),
            ("LAMP-1", "", None),
        ]
        assert attribution_of(session, "#2") == [("TENT-MOSS", "direct", campaign_id)]
        assert attribution_of(session, "#3") == [("TENT-MOSS", "assisted", campaign_id)]
        for name in ("#4", "#5", "#6", "#7", "#8"):
            assert attribution_of(session, name)[0][1] == "", name
        assert campaign_conversions(session, campaign_id) == {
            "converted": 3,
            "direct": 2,
            "assisted": 1,
            "revenue": Decimal("400.00"),
        }
    # A wider window takes Di in; re-running changes nothing else.
    with db.session() as session:
        assert attribute_orders(session, window_days=10) == 4
        assert attribution_of(session, "#4") == [("TENT-MOSS", "assisted", campaign_id)]
        assert campaign_conversions(session, campaign_id)["converted"] == 4


@pytest.mark.usefixtures("catalog")
def test_a_click_after_the_order_is_assisted_and_cancelled_orders_are_no_sale(
    client: FlaskClient, db: Database
) -> None:
    ordered = SENT_AT + dt.timedelta(days=1)
    with db.session() as session:
        message = restock_email(session, "ana@example.com", clicked_at=ordered + dt.timedelta(1))
        campaign_id = message.campaign_id
    store_order(client, "#1", "ana@example.com", ordered, ("TENT-MOSS", 1))
    with db.sessions() as session:
        assert attribution_of(session, "#1") == [("TENT-MOSS", "assisted", campaign_id)]
    body = {
        "name": "#1",
        "email": "ana@example.com",
        "created_at": ordered.isoformat(),
        "cancelled_at": (ordered + dt.timedelta(hours=3)).isoformat(),
        "line_items": [{"sku": "TENT-MOSS", "quantity": 1, "price": "100.00"}],
    }
    assert post_order(client, body).get_json()["status"] == "updated"
    with db.sessions() as session:
        assert attribution_of(session, "#1") == [("TENT-MOSS", "", None)]
        assert campaign_conversions(session, campaign_id)["converted"] == 0


@pytest.mark.usefixtures("catalog")
def test_csv_import_attributes_and_erasure_removes_the_address(
    runner: FlaskCliRunner, db: Database, tmp_path: Path
) -> None:
    with db.session() as session:
        campaign_id = restock_email(
            session, "ana@example.com", sent_at=dt.datetime(2026, 9, 2, tzinfo=dt.UTC)
        ).campaign_id
    result = runner.invoke(args=["orders", "import", str(write(tmp_path, EXPORT))])
    assert result.exit_code == 0, result.output
    assert "1 line item(s) attributed" in result.output
    with db.session() as session:
        assert attribution_of(session, "#1001")[0] == ("TENT-MOSS", "assisted", campaign_id)
        erasure = forget(session, "test-secret", "ana@example.com", utcnow())
        assert erasure.orders_anonymized == 1
    with db.sessions() as session:
        first = orders(session)[0]
        assert first.address is None
        # The sale stays counted, anonymously.
        assert campaign_conversions(session, campaign_id)["revenue"] == Decimal("598.00")


@pytest.mark.usefixtures("catalog")
def test_an_order_stored_meanwhile_by_another_process_is_not_duplicated(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.orders

    path = write(tmp_path, EXPORT)
    with db.session() as session:
        import_orders(session, path)
    # As if another process inserted both orders between the lookup and the insert.
    monkeypatch.setattr(engine.orders, "_known_orders", lambda session, records: {})
    with db.session() as session:
        report = import_orders(session, path)
    assert (report.created, report.unchanged, len(report.stored)) == (0, 2, 2)
    with db.sessions() as session:
        assert len(orders(session)) == 2
        assert session.scalar(select(func.count()).select_from(OrderLine)) == 3
