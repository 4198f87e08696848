"""Demo traffic: the demand report and the content tests have something to show on the demo."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select

from engine.content import load_content
from engine.db import Database, utcnow
from engine.demand import demand_report
from engine.demo import DemoError, build_demo, demo_config, seed_demo
from engine.demo.campaign import ORDERS as CAMPAIGN_ORDERS
from engine.demo.signups import seed_signups
from engine.demo.traffic import DEMO_ORDERS, DEMO_SEARCH_EXPORT, seed_traffic
from engine.experiments import list_experiments
from engine.models import (
    Order,
    PageView,
    PageViewDaily,
    PageViewSourceDaily,
    Product,
    SearchDataset,
    SearchRow,
    Signup,
)
from engine.tracking import CHANNELS

NUMBER_COLUMNS = (
    "views", "visitors", "views_previous", "signups", "waitlist", "waitlist_units",
    "search_impressions", "search_clicks", "ordered", "stock", "demand_per_day",
    "days_of_cover", "suggested_reorder", "score",
)  # fmt: skip


@pytest.fixture
def demo_settings(app: Flask) -> dict[str, Any]:
    """Return the app's settings as ``engine demo`` completes them for a fresh instance."""
    settings = dict(app.config)
    settings.update(demo_config(settings, explicit=set()))
    return settings


def run_json(runner: FlaskCliRunner, *args: str) -> Any:
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


SEEDED = (PageView, PageViewDaily, PageViewSourceDaily, SearchDataset, Order, Signup)


def counts(db: Database) -> dict[str, int]:
    """Return the row counts seeding writes to."""
    with db.session() as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in SEEDED
        }


def test_demo_report_shows_every_column_and_priority(
    app: Flask, runner: FlaskCliRunner, db: Database
) -> None:
    result = runner.invoke(args=["demo", "--no-serve"])
    assert result.exit_code == 0, result.output
    rows = run_json(runner, "demand", "report", "--format", "json")
    by_handle = {row["handle"]: row for row in rows}
    assert len(rows) == 39  # 36 catalog products that are not archived, 3 coming soon

    # A mix of priorities, each for a reason the README gives.
    assert {row["priority"] for row in rows} == {"restock_now", "watch", "healthy", "overstocked"}
    assert by_handle["cairnwood-trekker-2"]["priority"] == "restock_now"  # waitlist, no stock
    assert by_handle["talus-summit-2"]["priority"] == "restock_now"  # traffic, no stock
    assert by_handle["cairnwood-merino-socks"]["priority"] == "overstocked"
    # Every column has plausible numbers: some product above 0 in each, none negative.
    for column in NUMBER_COLUMNS:
        values = [row[column] for row in rows if row[column] is not None]
        assert max(values) > 0, column
        assert min(values) >= 0, column
    for channel in CHANNELS:
        assert sum(row["views_by_source"][channel] for row in rows) > 0, channel
    for row in rows:
        assert row["views"] == sum(row["views_by_source"].values()) > 0, row["handle"]
        assert 0 < row["visitors"] <= row["views"], row["handle"]
        assert row["views_trend"] is not None, row["handle"]
    assert any(row["views_trend"] < 0 for row in rows)
    assert any(row["views_trend"] > 0.5 for row in rows)
    # Orders come through the order import, search data through the Search Console importer.
    # The tent's units: the traffic seed's orders plus the demo campaign's (1 + 2 + 1 + 1 and
    # 1 + 1 + 2 + 1 + 1).
    assert by_handle["ridgeline-ul1-tent"]["ordered"] == 5 + 6
    assert by_handle["ridgeline-ul1-tent"]["search_clicks"] > 0
    assert by_handle["talus-fastpack-25"]["coming_soon"] is True

    # Today's raw views count: the window's views are its roll-ups plus today's raw views.
    with db.session() as session:
        today = utcnow().date()
        rolled = session.scalar(
            select(func.sum(PageViewDaily.views)).where(
                PageViewDaily.day > today - dt.timedelta(days=28),
                PageViewDaily.path.like("/products/%"),
            )
        )
        raw = session.scalar(
            select(func.count())
            .select_from(PageView)
            .where(PageView.day == today, PageView.path.like("/products/%"))
        )
    assert raw and rolled
    assert sum(row["views"] for row in rows) == rolled + raw

    pages = run_json(runner, "demand", "report", "--by", "page", "--format", "json")
    paths = {row["page"] for row in pages}
    assert {"/", "/guides/choosing-a-backpacking-tent/", "/categories/tents/"} <= paths
    sources = run_json(runner, "demand", "report", "--by", "source", "--format", "json")
    assert {row["channel"] for row in sources if row["views"]} == set(CHANNELS)
    assert any(row["signups"] for row in sources if row["channel"] == "email")


def test_demo_content_tests_reach_verdicts(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["demo", "--no-serve"])
    assert result.exit_code == 0, result.output
    tests = {t["source"]: t for t in run_json(runner, "experiments", "list", "--json")}
    fastpack = tests["products/talus-fastpack-25.md"]
    assert fastpack["verdict"] == "invest"
    assert fastpack["signups"] >= 10 and fastpack["visitors"] >= fastpack["min_visitors"]
    guide = tests["guides/trail-runners-or-hiking-boots.md"]
    assert guide["verdict"] == "pivot"
    assert guide["signups"] == 0 and guide["visitors"] >= guide["min_visitors"]
    listed = runner.invoke(args=["experiments", "list"])
    assert "INVEST" in listed.output and "PIVOT" in listed.output


@pytest.mark.parametrize(
    ("now", "fastpack", "guide", "status"),
    [
        # Two days in: too few visitors for either test.
        (dt.datetime(2026, 11, 4, 15, tzinfo=dt.UTC), "keep testing", "keep testing", "running"),
        # A demo first started months after the tests ended still shows their verdicts.
        (dt.datetime(2027, 6, 1, 9, tzinfo=dt.UTC), "invest", "pivot", "ended"),
    ],
)
def test_verdicts_follow_the_test_window_whenever_the_demo_starts(
    db: Database,
    demo_settings: dict[str, Any],
    now: dt.datetime,
    fastpack: str,
    guide: str,
    status: str,
) -> None:
    with db.session() as session:
        seed_demo(session)
        seed_signups(session, demo_settings, now)
        seed_traffic(session, demo_settings, now)
    content = load_content(Path(demo_settings["CONTENT_DIR"]))
    with db.session() as session:
        results = {r.test.source: r for r in list_experiments(session, content, now.date(), {})}
    assert results["products/talus-fastpack-25.md"].verdict == fastpack
    assert results["guides/trail-runners-or-hiking-boots.md"].verdict == guide
    assert {r.status for r in results.values()} == {status}


def test_seeding_twice_adds_nothing_and_the_report_stays_the_same(
    db: Database, demo_settings: dict[str, Any]
) -> None:
    now = utcnow()
    with db.session() as session:
        build_demo(session, demo_settings)
    before = counts(db)
    with db.session() as session:
        first = demand_report(session, demo_settings, days=28, now=now).rows
    with db.session() as session:
        build_demo(session, demo_settings)
        again = seed_traffic(session, demo_settings, now)
    assert (again.days, again.raw_views, again.search_datasets, again.orders, again.signups) == (
        [], 0, 0, 0, 0,
    )  # fmt: skip
    assert counts(db) == before
    assert before["Order"] == len(DEMO_ORDERS) + len(CAMPAIGN_ORDERS)
    with db.session() as session:
        assert demand_report(session, demo_settings, days=28, now=now).rows == first


def test_days_with_views_of_their_own_are_left_alone(
    db: Database, demo_settings: dict[str, Any]
) -> None:
    now = utcnow()
    yesterday = now.date() - dt.timedelta(days=1)
    with db.session() as session:
        seed_demo(session)
        session.add(
            PageView(day=yesterday, ts=now - dt.timedelta(days=1), path="/", channel="direct",
                     source="", visitor="a" * 32, entry=True)
        )  # fmt: skip
    with db.session() as session:
        setup = seed_traffic(session, demo_settings, now)
        assert yesterday not in setup.days
        assert now.date() - dt.timedelta(days=2) in setup.days
        assert session.scalar(select(func.count()).where(PageViewDaily.day == yesterday)) == 0


def test_search_data_goes_through_the_importer(db: Database, demo_settings: dict[str, Any]) -> None:
    with db.session() as session:
        build_demo(session, demo_settings)
        datasets = {d.kind: d for d in session.scalars(select(SearchDataset))}
        assert set(datasets) == {"pages", "queries"}
        today = utcnow().date()
        assert datasets["pages"].date_to == today - dt.timedelta(days=1)
        assert datasets["pages"].filename == DEMO_SEARCH_EXPORT.name
        rows = {
            r.key: r
            for r in session.scalars(select(SearchRow).where(SearchRow.dataset_id.in_(
                [d.id for d in datasets.values()])))
        }  # fmt: skip
    # The URL with a text fragment is counted with its page; queries map to products.
    assert rows["/products/ridgeline-ul1-tent/"].product_handle == "ridgeline-ul1-tent"
    assert "/products/ridgeline-ul1-tent/#:~:text=trail%20weight" not in rows
    assert rows["ridgeline ul1 tent"].product_handle == "ridgeline-ul1-tent"
    assert rows["fastpack 25 running pack"].product_handle == "talus-fastpack-25"
    assert rows["trail runners vs hiking boots"].product_handle is None


def test_a_foreign_catalog_gets_no_demo_traffic(
    db: Database, demo_settings: dict[str, Any]
) -> None:
    with db.session() as session:
        session.add(Product(handle="my-own-tent", title="My Own Tent"))
    with db.session() as session, pytest.raises(DemoError):
        build_demo(session, demo_settings)
    assert counts(db) == dict.fromkeys(counts(db), 0)
