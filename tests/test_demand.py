"""Demand report: estimate, priority and reorder with known answers; report from the database."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import insert
from sqlalchemy.orm import Session

from engine.db import Database, utcnow
from engine.demand import DemandSettings, demand_report, estimate, format_table, scores, write_csv
from engine.models import (
    PageView,
    PageViewDaily,
    PageViewSourceDaily,
    Product,
    SearchDataset,
    SearchRow,
    Signup,
    Variant,
)
from engine.settings import DEFAULTS

S = DemandSettings()  # conversion 0.12, view rate 0.01, cover 60, 14 / 30 / 180 days
NOW = dt.datetime(2026, 11, 25, 15, 0, tzinfo=dt.UTC)
TODAY = NOW.date()


@pytest.mark.parametrize(
    ("inputs", "demand", "priority", "reorder"),
    [
        # 50 units wanted x 0.12 / 60 days = 0.1/day; no stock: cover 0 -> restock now, 6 units.
        ({"stock": 0, "waiting_units": 50}, 0.1, "restock_now", 6),
        # 2 units cover 20 days at 0.1/day: watch; 6 - 2 = 4 to order.
        ({"stock": 2, "waiting_units": 50}, 0.1, "watch", 4),
        # Traffic only: 280 views / 28 days x 0.01 = 0.1/day; 10 units = 100 days: healthy.
        ({"stock": 10, "views": 280}, 0.1, "healthy", 0),
        # 28 units ordered in 28 days = 1/day; 10 units = 10 days: restock now; 60 - 10 = 50.
        ({"stock": 10, "ordered_units": 28, "views": 5000}, 1.0, "restock_now", 50),
        # 1/day with 200 units: 200 days of cover: overstocked.
        ({"stock": 200, "ordered_units": 28}, 1.0, "overstocked", 0),
        # No demand at all: 0 stock is not restock_now; stock on hand is overstocked.
        ({"stock": 0}, 0.0, "healthy", 0),
        ({"stock": 5}, 0.0, "overstocked", 0),
        # Signups switch the traffic term off: only the waitlist counts.
        ({"stock": 0, "waiting_units": 0, "new_signups": 3, "views": 1000}, 0.0, "healthy", 0),
        # Untracked inventory never needs a reorder.
        ({"stock": None, "views": 280}, 0.1, "healthy", 0),
    ],
)
def test_estimate_known_answers(
    inputs: dict[str, int | None], demand: float, priority: str, reorder: int
) -> None:
    args: dict[str, int | None] = {
        "stock": 0,
        "waiting_units": 0,
        "new_signups": 0,
        "ordered_units": 0,
        "views": 0,
    }
    args.update(inputs)
    result = estimate(days=28, settings=S, **args)  # type: ignore[arg-type]
    assert result.demand_per_day == pytest.approx(demand)
    assert result.priority == priority
    assert result.suggested_reorder == reorder


def test_settings_change_the_estimate() -> None:
    settings = DemandSettings.from_settings({**DEFAULTS, "DEMAND_WAITLIST_CONVERSION": 0.24})
    result = estimate(
        stock=0, waiting_units=50, new_signups=0, ordered_units=0, views=0, days=28,
        settings=settings,
    )  # fmt: skip
    assert result.demand_per_day == pytest.approx(0.2)
    assert result.suggested_reorder == 12


def test_scores_are_weighted_log_normalized() -> None:
    rows = [
        {"views": 99, "search_impressions": 0, "signups": 0, "waitlist": 0, "ordered": 0},
        {"views": 9, "search_impressions": 0, "signups": 0, "waitlist": 0, "ordered": 0},
        {"views": 0, "search_impressions": 0, "signups": 0, "waitlist": 0, "ordered": 0},
    ]
    weights = {"views": 1.0, "search_impressions": 1.0, "signups": 0, "waitlist": 0, "ordered": 0}
    # log(10) / log(100) = 0.5 of the views weight, half of the total weight.
    assert scores(rows, weights) == [50.0, 25.0, 0.0]


def add_product(session: Session, handle: str, stock: int, tracked: bool = True) -> None:
    product = Product(handle=handle, title=handle.replace("-", " ").title(), vendor="Acme")
    product.variants.append(
        Variant(
            option_key="",
            price=Decimal("10"),
            stock=stock,
            inventory_tracked=tracked,
            sku=f"{handle}-sku",
        )
    )
    session.add(product)


def add_signup(
    session: Session,
    handle: str,
    when: dt.datetime,
    *,
    status: str = "confirmed",
    quantity: int = 1,
    page: str = "",
    channel: str = "organic",
    source: str = "google",
) -> None:
    session.add(
        Signup(
            product_handle=handle,
            status=status,
            quantity=quantity,
            signed_up_at=when,
            pending_since=when,
            consent_version="v1",
            consent_at=when,
            page=page,
            channel=channel,
            source=source,
        )
    )


def seed(session: Session, today: dt.date, now: dt.datetime) -> None:
    """Two products, roll-ups for past days, raw views today, signups and search data."""
    add_product(session, "tent", stock=0)
    add_product(session, "bag", stock=10)
    add_product(session, "socks", stock=500)
    daily, by_source = [], []
    for back in range(1, 56):  # this window (27 past days) and the previous 28 days
        day = today - dt.timedelta(days=back)
        views = 10 if back < 28 else 5
        for path in ("/products/tent/", "/products/bag/", "/guides/tents/"):
            daily.append({"day": day, "path": path, "views": views, "visitors": 4, "entries": 3})
            by_source.append(
                {"day": day, "path": path, "channel": "organic", "source": "google",
                 "views": views - 2, "visitors": 3}
            )  # fmt: skip
            by_source.append(
                {"day": day, "path": path, "channel": "social", "source": "pinterest",
                 "views": 2, "visitors": 1}
            )  # fmt: skip
    session.execute(insert(PageViewDaily), daily)
    session.execute(insert(PageViewSourceDaily), by_source)
    raw = [
        {"day": today, "ts": now, "path": "/products/tent/", "channel": "email",
         "source": "newsletter", "medium": "email", "campaign": "", "engine_token": "",
         "visitor": f"v{i % 3}", "entry": True}
        for i in range(6)
    ]  # fmt: skip
    session.execute(insert(PageView), raw)
    for i in range(5):  # five people waiting for the tent, 2 units each; 3 signed up this window
        when = now - dt.timedelta(days=2 if i < 3 else 40)
        add_signup(session, "tent", when, quantity=2, page="/guides/tents/")
    add_signup(
        session, "tent", now - dt.timedelta(days=1), status="pending", page="/products/tent/"
    )
    dataset = SearchDataset(
        kind="pages", date_from=today - dt.timedelta(days=29), date_to=today - dt.timedelta(days=2)
    )
    session.add(dataset)
    session.flush()
    session.add(SearchRow(dataset_id=dataset.id, key="/products/tent/", product_handle="tent",
                          clicks=40, impressions=900))  # fmt: skip
    session.commit()


def test_report_by_product(session: Session) -> None:
    seed(session, TODAY, NOW)
    report = demand_report(session, DEFAULTS, days=28, by="product", now=NOW)
    rows = {row["handle"]: row for row in report.rows}
    tent = rows["tent"]
    # 27 past days x 10 from roll-ups + 6 raw views today.
    assert tent["views"] == 276
    assert tent["visitors"] == 27 * 4 + 3
    assert tent["views_by_source"] == {
        "organic": 27 * 8, "social": 27 * 2, "email": 6, "referral": 0, "direct": 0, "paid": 0
    }  # fmt: skip
    assert tent["views_previous"] == 28 * 5
    assert tent["views_trend"] == pytest.approx((276 - 140) / 140, abs=1e-3)
    assert tent["signups"] == 4  # three confirmed and one pending, all in the window
    assert tent["waitlist"] == 5 and tent["waitlist_units"] == 10
    assert tent["signup_rate"] == pytest.approx(4 / 111, abs=1e-4)
    assert (tent["search_impressions"], tent["search_clicks"]) == (900, 40)
    assert tent["stock"] == 0
    # 10 units x 0.12 / 60 = 0.02/day; 0 stock -> restock now, ceil(1.2) = 2.
    assert tent["demand_per_day"] == pytest.approx(0.02)
    assert (tent["priority"], tent["suggested_reorder"]) == ("restock_now", 2)
    bag = rows["bag"]
    # No signups: 270 views / 28 days x 0.01 = 0.0964/day; 10 units = 104 days: healthy.
    assert bag["priority"] == "healthy" and bag["suggested_reorder"] == 0
    assert rows["socks"]["priority"] == "overstocked"
    assert report.rows[0]["handle"] == "tent"
    assert set(tent) >= {
        "handle", "views", "visitors", "views_by_source", "signups", "waitlist", "signup_rate",
        "stock", "search_impressions", "search_clicks", "score", "priority", "suggested_reorder",
    }  # fmt: skip
    assert tent["score"] > rows["socks"]["score"]


def test_report_by_page_and_source(session: Session) -> None:
    seed(session, TODAY, NOW)
    pages = demand_report(session, DEFAULTS, days=28, by="page", now=NOW).rows
    assert pages[0]["page"] == "/guides/tents/" and pages[0]["signups"] == 3
    tent_page = next(row for row in pages if row["page"] == "/products/tent/")
    assert tent_page["signups"] == 1 and tent_page["product"] == "tent"
    assert tent_page["search_impressions"] == 900
    sources = demand_report(session, DEFAULTS, days=28, by="source", now=NOW).rows
    by_key = {(row["channel"], row["source"]): row for row in sources}
    assert by_key[("organic", "google")]["signups"] == 4
    assert by_key[("organic", "google")]["views"] == 3 * 27 * 8
    assert by_key[("email", "newsletter")]["views"] == 6


def test_coming_soon_products_are_reported(session: Session) -> None:
    add_signup(session, "new-stove", NOW - dt.timedelta(days=3), quantity=1)
    session.commit()
    report = demand_report(
        session, DEFAULTS, days=28, now=NOW, coming_soon={"new-stove": "New Stove"}
    )
    (row,) = report.rows
    assert row["coming_soon"] and row["stock"] == 0 and row["priority"] == "restock_now"


def test_formats(session: Session) -> None:
    seed(session, TODAY, NOW)
    report = demand_report(session, DEFAULTS, days=28, now=NOW)
    table = format_table(report).splitlines()
    assert table[1].split()[:3] == ["handle", "priority", "score"]
    assert len({len(line) for line in table[1:3]}) == 1  # header and rule align
    out = io.StringIO()
    write_csv(report, out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert parsed[0]["handle"] == "tent" and parsed[0]["views_organic"] == str(27 * 8)


def test_cli_report_counts_todays_events(runner: FlaskCliRunner, db: Database) -> None:
    now = utcnow()
    with db.session() as session:
        seed(session, now.date(), now)
    result = runner.invoke(args=["demand", "report", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {row["handle"]: row for row in json.loads(result.output)}
    assert rows["tent"]["views_by_source"]["email"] == 6
    result = runner.invoke(args=["demand", "report", "--by", "source", "--format", "csv"])
    assert result.output.startswith("channel,source,views")
    result = runner.invoke(args=["demand", "report", "--days", "7", "--by", "page"])
    assert result.exit_code == 0 and "/guides/tents/" in result.output


def test_benchmark_script_exists() -> None:
    assert (Path(__file__).resolve().parent.parent / "benchmarks" / "demand_report.py").is_file()
