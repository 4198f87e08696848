"""Demand per product: traffic, search data and signups; restock priority and reorder quantity.

Inputs of a report over the ``days`` ending today (in ``TIMEZONE``), all read with
aggregate queries: page-view roll-ups for past days and raw views only for today (and for
any past day not rolled up yet), waitlist signups, Search Console datasets overlapping
the window (:func:`engine.searchdata.datasets_for_window`), stock, and order lines when an
order table exists.

**Demand in units per day** (every factor a setting)::

    waitlist term = units wanted by confirmed people waiting now
                    x DEMAND_WAITLIST_CONVERSION / DEMAND_COVER_DAYS
    orders term   = units ordered in the window / days          (0 until orders are imported)
    traffic term  = views in the window / days x DEMAND_VIEW_TO_ORDER_RATE
                    (only for a product with no signups - nobody waiting, none new - and no
                    orders in the window)
    demand/day    = waitlist term + orders term + traffic term

The waiting list is a one-off lump expected to buy when the product is back; spread over
the reorder horizon it adds exactly ``waiting units x conversion`` to the suggested reorder.

**Priority** by days of cover = stock / demand per day: ``restock_now`` below
``DEMAND_RESTOCK_NOW_DAYS``, ``watch`` below ``DEMAND_WATCH_DAYS``, ``overstocked`` above
``DEMAND_OVERSTOCK_DAYS``, else ``healthy``. No demand: stock above 0 is ``overstocked``,
no stock is ``healthy`` (nothing to restock and nothing tied up). Untracked inventory is
``healthy``.

**Suggested reorder** = ceil(demand/day x DEMAND_COVER_DAYS - stock), at least 0.

**Score** (0-100, relative to the products in the report): the weighted mean of
log(1 + x) / log(1 + max x) over views, search impressions, new signups, people waiting
and units ordered, weights ``DEMAND_SCORE_WEIGHT_*``.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, distinct, func, inspect, literal, select
from sqlalchemy.orm import Session

import engine.models as models
from engine.models import (
    PageView,
    PageViewDaily,
    PageViewSourceDaily,
    Product,
    SearchRow,
    Signup,
    Variant,
)
from engine.searchdata import datasets_for_window, product_of_path
from engine.tracking import CHANNELS

PRIORITIES = ("restock_now", "watch", "healthy", "overstocked")
GROUPINGS = ("product", "page", "source")
#: Score components: report field -> weight setting.
SCORE_WEIGHTS = {
    "views": "DEMAND_SCORE_WEIGHT_VIEWS",
    "search_impressions": "DEMAND_SCORE_WEIGHT_SEARCH",
    "signups": "DEMAND_SCORE_WEIGHT_SIGNUPS",
    "waitlist": "DEMAND_SCORE_WEIGHT_WAITLIST",
    "ordered": "DEMAND_SCORE_WEIGHT_ORDERS",
}
#: Payment states whose orders are no sale (besides a cancelled order).
NOT_SALES = ("voided", "refunded")


@dataclass(frozen=True)
class DemandSettings:
    """The documented inputs of the demand estimate, from the settings."""

    waitlist_conversion: float = 0.12
    view_to_order_rate: float = 0.01
    cover_days: int = 60
    restock_now_days: float = 14
    watch_days: float = 30
    overstock_days: float = 180
    weights: Mapping[str, float] = field(
        default_factory=lambda: {
            "views": 0.25, "search_impressions": 0.15, "signups": 0.25, "waitlist": 0.25,
            "ordered": 0.10,
        }
    )  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> DemandSettings:
        """Read the ``DEMAND_*`` settings."""
        return cls(
            waitlist_conversion=float(settings["DEMAND_WAITLIST_CONVERSION"]),
            view_to_order_rate=float(settings["DEMAND_VIEW_TO_ORDER_RATE"]),
            cover_days=int(settings["DEMAND_COVER_DAYS"]),
            restock_now_days=float(settings["DEMAND_RESTOCK_NOW_DAYS"]),
            watch_days=float(settings["DEMAND_WATCH_DAYS"]),
            overstock_days=float(settings["DEMAND_OVERSTOCK_DAYS"]),
            weights={name: float(settings[key]) for name, key in SCORE_WEIGHTS.items()},
        )


@dataclass(frozen=True)
class Window:
    """The days a report covers (inclusive), today and the previous period."""

    start: dt.date
    end: dt.date
    today: dt.date
    timezone: ZoneInfo

    @property
    def days(self) -> int:
        """Return the number of days in the window."""
        return (self.end - self.start).days + 1

    def previous(self) -> Window:
        """Return the period of the same length just before."""
        end = self.start - dt.timedelta(days=1)
        return Window(end - dt.timedelta(days=self.days - 1), end, self.today, self.timezone)

    def utc_bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """Return the window as [start, end) instants."""
        first = dt.datetime.combine(self.start, dt.time(), self.timezone)
        after = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(), self.timezone)
        return first.astimezone(dt.UTC), after.astimezone(dt.UTC)


def window_for(days: int, now: dt.datetime, timezone: str) -> Window:
    """Return the ``days`` ending today in ``timezone``."""
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    return Window(today - dt.timedelta(days=max(days, 1) - 1), today, today, zone)


# --- traffic ------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Views and daily-unique visitors of one page (or channel) over a window."""

    views: int = 0
    visitors: int = 0
    by_source: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))


def _split(session: Session, window: Window) -> tuple[list[dt.date], list[dt.date]]:
    """Return (rolled-up days, days read raw) of a window; today is always read raw."""
    days = [window.start + dt.timedelta(days=i) for i in range(window.days)]
    past = [day for day in days if day < window.today]
    rolled: set[dt.date] = set()
    if past:
        d = PageViewDaily.__table__.c
        rolled = set(
            session.execute(
                select(d.day).where(d.day >= past[0], d.day <= past[-1]).group_by(d.day)
            ).scalars()
        )
    return sorted(rolled), [day for day in days if day not in rolled]


def traffic_by_page(session: Session, window: Window) -> dict[str, Traffic]:
    """Return views, visitors and views by channel per page path over the window."""
    rolled, raw = _split(session, window)
    out: dict[str, Traffic] = defaultdict(Traffic)
    d, s, t = PageViewDaily.__table__.c, PageViewSourceDaily.__table__.c, PageView.__table__.c
    if rolled:
        in_rolled = (d.day >= rolled[0]) & (d.day <= rolled[-1]) & d.day.in_(rolled)
        for path, views, visitors in session.execute(
            select(d.path, func.sum(d.views), func.sum(d.visitors))
            .where(in_rolled)
            .group_by(d.path)
        ):
            out[path].views += int(views or 0)
            out[path].visitors += int(visitors or 0)
        in_rolled = (s.day >= rolled[0]) & (s.day <= rolled[-1]) & s.day.in_(rolled)
        for path, channel, views in session.execute(
            select(s.path, s.channel, func.sum(s.views))
            .where(in_rolled)
            .group_by(s.path, s.channel)
        ):
            by_source = out[path].by_source
            by_source[channel] = by_source.get(channel, 0) + int(views or 0)
    if raw:
        # Visitors are unique per day: counted per (day, path), then added up. Both
        # statements read only the (day, path, channel, source, visitor) index.
        in_raw = (t.day >= raw[0]) & (t.day <= raw[-1]) & t.day.in_(raw)
        for path, views, visitors in session.execute(
            select(t.path, func.count(), func.count(distinct(t.visitor)))
            .where(in_raw)
            .group_by(t.day, t.path)
        ):
            out[path].views += int(views)
            out[path].visitors += int(visitors)
        for path, channel, views in session.execute(
            select(t.path, t.channel, func.count()).where(in_raw).group_by(t.path, t.channel)
        ):
            by_source = out[path].by_source
            by_source[channel] = by_source.get(channel, 0) + int(views)
    return dict(out)


def views_by_page(session: Session, window: Window) -> dict[str, int]:
    """Return views per page path over the window (what a trend compares against)."""
    rolled, raw = _split(session, window)
    out: dict[str, int] = defaultdict(int)
    d, t = PageViewDaily.__table__.c, PageView.__table__.c
    queries = []
    if rolled:
        queries.append(
            select(d.path, func.sum(d.views))
            .where(d.day >= rolled[0], d.day <= rolled[-1], d.day.in_(rolled))
            .group_by(d.path)
        )
    if raw:
        queries.append(
            select(t.path, func.count())
            .where(t.day >= raw[0], t.day <= raw[-1], t.day.in_(raw))
            .group_by(t.path)
        )
    for query in queries:
        for path, views in session.execute(query):
            out[path] += int(views or 0)
    return dict(out)


def traffic_by_source(
    session: Session, window: Window, *, visitors: bool = True
) -> dict[tuple[str, str], Traffic]:
    """Return views and visitors per (channel, source) over the window.

    ``visitors=False`` leaves visitors at 0 (a trend needs views only), which spares
    counting distinct visitors in raw views.
    """
    rolled, raw = _split(session, window)
    out: dict[tuple[str, str], Traffic] = defaultdict(Traffic)
    s, t = PageViewSourceDaily.__table__.c, PageView.__table__.c
    rows: list[Any] = []
    if rolled:
        rows += session.execute(
            select(s.channel, s.source, func.sum(s.views), func.sum(s.visitors))
            .where(s.day >= rolled[0], s.day <= rolled[-1], s.day.in_(rolled))
            .group_by(s.channel, s.source)
        ).all()
    if raw:
        # Visitors are unique per day: counted per (day, channel, source), then added up.
        unique = func.count(distinct(t.visitor)) if visitors else literal(0)
        rows += session.execute(
            select(t.channel, t.source, func.count(), unique)
            .where(t.day >= raw[0], t.day <= raw[-1], t.day.in_(raw))
            .group_by(t.day, t.channel, t.source)
        ).all()
    for channel, source, views, unique_visitors in rows:
        item = out[(channel, source)]
        item.views += int(views or 0)
        item.visitors += int(unique_visitors or 0) if visitors else 0
        item.by_source[channel] = item.by_source.get(channel, 0) + int(views or 0)
    return dict(out)


# --- signups, stock, search, orders -------------------------------------------------------


def new_signups(session: Session, window: Window, *group: Any) -> dict[tuple[Any, ...], int]:
    """Return signups made in the window, counted by the given Signup columns."""
    first, after = window.utc_bounds()
    query = (
        select(*group, func.count())
        .where(Signup.signed_up_at >= first, Signup.signed_up_at < after)
        .group_by(*group)
    )
    return {tuple(row[:-1]): int(row[-1]) for row in session.execute(query)}


def waiting(session: Session) -> dict[str, tuple[int, int]]:
    """Return (confirmed people waiting, units they want) per product handle."""
    query = (
        select(Signup.product_handle, func.count(), func.sum(Signup.quantity))
        .where(Signup.status == "confirmed")
        .group_by(Signup.product_handle)
    )
    return {
        handle: (int(people), int(units or 0)) for handle, people, units in session.execute(query)
    }


@dataclass(frozen=True)
class Stock:
    """A product's stock: units in tracked variants (None when no variant is tracked)."""

    title: str
    units: int | None


def catalog_stock(session: Session) -> dict[str, Stock]:
    """Return the stock of every active or draft catalog product (archived ones are gone)."""
    tracked = func.sum(case((Variant.inventory_tracked, 1), else_=0))
    units = func.sum(
        case(((Variant.inventory_tracked) & (Variant.stock > 0), Variant.stock), else_=0)
    )
    query = (
        select(Product.handle, Product.title, tracked, units)
        .join(Variant, Variant.product_id == Product.id, isouter=True)
        .where(Product.status != "archived")
        .group_by(Product.id, Product.handle, Product.title)
    )
    return {
        handle: Stock(title, int(units or 0) if tracked else None)
        for handle, title, tracked, units in session.execute(query)
    }


def search_by_product(session: Session, window: Window) -> dict[str, tuple[int, int]]:
    """Return (impressions, clicks) per product from Pages data overlapping the window."""
    ids = datasets_for_window(session, window.start, window.end, kind="pages")
    if not ids:
        return {}
    query = (
        select(
            SearchRow.product_handle, func.sum(SearchRow.impressions), func.sum(SearchRow.clicks)
        )
        .where(SearchRow.dataset_id.in_(ids), SearchRow.product_handle.is_not(None))
        .group_by(SearchRow.product_handle)
    )
    return {str(h): (int(i or 0), int(c or 0)) for h, i, c in session.execute(query)}


def search_by_page(session: Session, window: Window) -> dict[str, tuple[int, int]]:
    """Return (impressions, clicks) per page path from Pages data overlapping the window."""
    ids = datasets_for_window(session, window.start, window.end, kind="pages")
    if not ids:
        return {}
    query = (
        select(SearchRow.key, func.sum(SearchRow.impressions), func.sum(SearchRow.clicks))
        .where(SearchRow.dataset_id.in_(ids))
        .group_by(SearchRow.key)
    )
    return {key: (int(i or 0), int(c or 0)) for key, i, c in session.execute(query)}


def units_ordered(session: Session, window: Window) -> dict[str, int]:
    """Return units ordered per product in the window, from whatever order table exists.

    Orders come from ``engine.models.OrderLine`` (with its ``Order``) when that model and its
    table exist; otherwise, before any order import is possible, the term is empty (0).
    Cancelled, voided and refunded orders are no sales.
    """
    line = getattr(models, "OrderLine", None)
    order = getattr(models, "Order", None)
    if line is None or order is None:
        return {}
    # On the session's own connection: a second connection would wait for its lock.
    if not inspect(session.connection()).has_table(line.__tablename__):
        return {}
    first, after = window.utc_bounds()
    query = (
        select(line.product_handle, func.sum(line.quantity))
        .join(order, order.id == line.order_id)
        .where(
            order.ordered_at >= first,
            order.ordered_at < after,
            order.cancelled_at.is_(None),
            order.financial_status.not_in(NOT_SALES),
            line.product_handle.is_not(None),
        )
        .group_by(line.product_handle)
    )
    return {handle: int(units or 0) for handle, units in session.execute(query)}


# --- the estimate -------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Demand per day, days of cover, priority and suggested reorder of one product."""

    demand_per_day: float
    waitlist_term: float
    orders_term: float
    traffic_term: float
    days_of_cover: float | None  # None: no demand
    priority: str
    suggested_reorder: int


def estimate(
    *,
    stock: int | None,
    waiting_units: int,
    new_signups: int,
    ordered_units: int,
    views: int,
    days: int,
    settings: DemandSettings,
) -> Estimate:
    """Return the demand estimate of one product (see the module docstring for the rule)."""
    days = max(days, 1)
    waitlist_term = waiting_units * settings.waitlist_conversion / max(settings.cover_days, 1)
    orders_term = ordered_units / days
    has_signups = waiting_units > 0 or new_signups > 0
    traffic_term = (
        views / days * settings.view_to_order_rate if not has_signups and not ordered_units else 0.0
    )
    demand = waitlist_term + orders_term + traffic_term
    if stock is None:
        return Estimate(demand, waitlist_term, orders_term, traffic_term, None, "healthy", 0)
    if demand <= 0:
        priority = "overstocked" if stock > 0 else "healthy"
        return Estimate(0.0, 0.0, 0.0, 0.0, None, priority, 0)
    cover = stock / demand
    if cover < settings.restock_now_days:
        priority = "restock_now"
    elif cover < settings.watch_days:
        priority = "watch"
    elif cover > settings.overstock_days:
        priority = "overstocked"
    else:
        priority = "healthy"
    # A hair below a whole number is that number (float sums), never one unit more.
    reorder = max(0, math.ceil(demand * settings.cover_days - stock - 1e-9))
    return Estimate(demand, waitlist_term, orders_term, traffic_term, cover, priority, reorder)


def scores(rows: Sequence[Mapping[str, Any]], weights: Mapping[str, float]) -> list[float]:
    """Return each row's score: the weighted mean of log-scaled, max-normalized components."""
    total = sum(weights.values()) or 1.0
    tops = {name: max((float(row[name] or 0) for row in rows), default=0.0) for name in weights}
    out = []
    for row in rows:
        value = 0.0
        for name, weight in weights.items():
            top = tops[name]
            if top > 0:
                value += weight * math.log1p(float(row[name] or 0)) / math.log1p(top)
        out.append(round(100 * value / total, 1))
    return out


def _trend(current: int, previous: int) -> float | None:
    """Return the change against the previous period as a fraction (None: nothing before)."""
    if previous == 0:
        return None
    return round((current - previous) / previous, 3)


def _rate(signups: int, visitors: int) -> float | None:
    return round(signups / visitors, 4) if visitors else None


def product_path(handle: str) -> str:
    """Return a product page's path."""
    return f"/products/{handle}/"


def report_by_product(
    session: Session,
    window: Window,
    settings: DemandSettings,
    coming_soon: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Return one row per product (catalog and coming-soon), highest priority first."""
    previous = window.previous()
    traffic = traffic_by_page(session, window)
    before = views_by_page(session, previous)
    signups = new_signups(session, window, Signup.product_handle)
    signups_before = new_signups(session, previous, Signup.product_handle)
    waiting_now = waiting(session)
    stock = catalog_stock(session)
    in_catalog = set(stock)
    for handle, title in (coming_soon or {}).items():
        stock.setdefault(handle, Stock(title, 0))
    search = search_by_product(session, window)
    ordered = units_ordered(session, window)
    rows: list[dict[str, Any]] = []
    for handle in sorted(stock):
        page = traffic.get(product_path(handle), Traffic())
        views_before = before.get(product_path(handle), 0)
        people, units = waiting_now.get(handle, (0, 0))
        new = signups.get((handle,), 0)
        result = estimate(
            stock=stock[handle].units,
            waiting_units=units,
            new_signups=new,
            ordered_units=ordered.get(handle, 0),
            views=page.views,
            days=window.days,
            settings=settings,
        )
        impressions, clicks = search.get(handle, (0, 0))
        rows.append(
            {
                "handle": handle,
                "title": stock[handle].title,
                "coming_soon": handle not in in_catalog,
                "views": page.views,
                "visitors": page.visitors,
                "views_by_source": {
                    channel: page.by_source.get(channel, 0) for channel in CHANNELS
                },
                "views_previous": views_before,
                "views_trend": _trend(page.views, views_before),
                "signups": new,
                "signups_previous": signups_before.get((handle,), 0),
                "signups_trend": _trend(new, signups_before.get((handle,), 0)),
                "waitlist": people,
                "waitlist_units": units,
                "signup_rate": _rate(new, page.visitors),
                "stock": stock[handle].units,
                "search_impressions": impressions,
                "search_clicks": clicks,
                "ordered": ordered.get(handle, 0),
                "demand_per_day": round(result.demand_per_day, 4),
                "days_of_cover": (
                    round(result.days_of_cover, 1) if result.days_of_cover is not None else None
                ),
                "score": 0.0,
                "priority": result.priority,
                "suggested_reorder": result.suggested_reorder,
            }
        )
    for row, score in zip(rows, scores(rows, settings.weights), strict=True):
        row["score"] = score
    rank = {name: index for index, name in enumerate(PRIORITIES)}
    rows.sort(key=lambda r: (rank[r["priority"]], -r["score"], r["handle"]))
    return rows


def report_by_page(session: Session, window: Window) -> list[dict[str, Any]]:
    """Return one row per page path: its views, visitors, sources, signups and search data."""
    traffic = traffic_by_page(session, window)
    before = views_by_page(session, window.previous())
    signups = new_signups(session, window, Signup.page)
    search = search_by_page(session, window)
    paths = set(traffic) | {page for (page,) in signups if page} | set(search)
    rows: list[dict[str, Any]] = []
    for path in sorted(paths):
        page = traffic.get(path, Traffic())
        new = signups.get((path,), 0)
        impressions, clicks = search.get(path, (0, 0))
        rows.append(
            {
                "page": path,
                "product": product_of_path(path),
                "views": page.views,
                "visitors": page.visitors,
                "views_by_source": {
                    channel: page.by_source.get(channel, 0) for channel in CHANNELS
                },
                "views_previous": before.get(path, 0),
                "views_trend": _trend(page.views, before.get(path, 0)),
                "signups": new,
                "signup_rate": _rate(new, page.visitors),
                "search_impressions": impressions,
                "search_clicks": clicks,
            }
        )
    unknown = signups.get(("",), 0)
    if unknown:
        rows.append(
            {
                "page": "",
                "product": None,
                "views": 0,
                "visitors": 0,
                "views_by_source": dict.fromkeys(CHANNELS, 0),
                "views_previous": 0,
                "views_trend": None,
                "signups": unknown,
                "signup_rate": None,
                "search_impressions": 0,
                "search_clicks": 0,
            }
        )
    rows.sort(key=lambda r: (-r["signups"], -r["views"], r["page"]))
    return rows


def report_by_source(session: Session, window: Window) -> list[dict[str, Any]]:
    """Return one row per channel and source: views, visitors and the signups it produced."""
    traffic = traffic_by_source(session, window)
    before = traffic_by_source(session, window.previous(), visitors=False)
    signups = new_signups(session, window, Signup.channel, Signup.source)
    keys = set(traffic) | {(channel, source) for channel, source in signups}
    rows: list[dict[str, Any]] = []
    for channel, source in sorted(keys):
        item = traffic.get((channel, source), Traffic())
        previous = before.get((channel, source), Traffic()).views
        new = signups.get((channel, source), 0)
        rows.append(
            {
                "channel": channel,
                "source": source,
                "views": item.views,
                "visitors": item.visitors,
                "views_previous": previous,
                "views_trend": _trend(item.views, previous),
                "signups": new,
                "signup_rate": _rate(new, item.visitors),
            }
        )
    rows.sort(key=lambda r: (-r["signups"], -r["views"], r["channel"], r["source"]))
    return rows


@dataclass
class DemandReport:
    """A report: its window, grouping and rows."""

    by: str
    window: Window
    rows: list[dict[str, Any]]

    def meta(self) -> dict[str, Any]:
        """Return the report's window as plain values."""
        return {
            "by": self.by,
            "from": self.window.start.isoformat(),
            "to": self.window.end.isoformat(),
            "days": self.window.days,
            "previous_from": self.window.previous().start.isoformat(),
            "previous_to": self.window.previous().end.isoformat(),
        }


def demand_report(
    session: Session,
    settings: Mapping[str, Any],
    *,
    days: int,
    by: str = "product",
    now: dt.datetime,
    coming_soon: Mapping[str, str] | None = None,
) -> DemandReport:
    """Return the demand report over the ``days`` ending today, grouped ``by``."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping '{by}'; choose one of {', '.join(GROUPINGS)}")
    window = window_for(days, now, str(settings.get("TIMEZONE") or "UTC"))
    if by == "page":
        rows = report_by_page(session, window)
    elif by == "source":
        rows = report_by_source(session, window)
    else:
        rows = report_by_product(
            session, window, DemandSettings.from_settings(settings), coming_soon
        )
    return DemandReport(by, window, rows)


# --- output -------------------------------------------------------------------------------

#: Table columns per grouping: (header, field).
TABLE_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "product": (
        ("handle", "handle"), ("priority", "priority"), ("score", "score"),
        ("views", "views"), ("trend", "views_trend"), ("visitors", "visitors"),
        *((channel, f"views_by_source.{channel}") for channel in CHANNELS),
        ("signups", "signups"), ("rate", "signup_rate"), ("waiting", "waitlist"),
        ("impr", "search_impressions"), ("clicks", "search_clicks"), ("ordered", "ordered"),
        ("stock", "stock"), ("demand/day", "demand_per_day"), ("cover", "days_of_cover"),
        ("reorder", "suggested_reorder"),
    ),
    "page": (
        ("page", "page"), ("product", "product"), ("views", "views"), ("trend", "views_trend"),
        ("visitors", "visitors"),
        *((channel, f"views_by_source.{channel}") for channel in CHANNELS),
        ("signups", "signups"), ("rate", "signup_rate"), ("impr", "search_impressions"),
        ("clicks", "search_clicks"),
    ),
    "source": (
        ("channel", "channel"), ("source", "source"), ("views", "views"),
        ("trend", "views_trend"), ("visitors", "visitors"), ("signups", "signups"),
        ("rate", "signup_rate"),
    ),
}  # fmt: skip


def _field(row: Mapping[str, Any], name: str) -> Any:
    value: Any = row
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _cell(value: Any, name: str) -> str:
    if value is None:
        return "-"
    if name.endswith("trend") and isinstance(value, float):
        return f"{value:+.0%}"
    if name == "signup_rate" and isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


def format_table(report: DemandReport) -> str:
    """Return the report as an aligned text table (numbers right-aligned)."""
    columns = TABLE_COLUMNS[report.by]
    body = [[_cell(_field(row, name), name) for _header, name in columns] for row in report.rows]
    headers = [header for header, _name in columns]
    widths = [max([len(h)] + [len(line[i]) for line in body]) for i, h in enumerate(headers)]
    text_columns = {"handle", "page", "product", "channel", "source", "priority"}

    def line(cells: Iterable[str]) -> str:
        parts = []
        for (header, _name), cell, width in zip(columns, cells, widths, strict=True):
            parts.append(cell.ljust(width) if header in text_columns else cell.rjust(width))
        return "  ".join(parts).rstrip()

    meta = report.meta()
    title = (
        f"demand by {report.by}, {meta['from']} to {meta['to']} ({meta['days']} days; "
        f"trend against {meta['previous_from']} to {meta['previous_to']})"
    )
    out = [title, line(headers), line("-" * w for w in widths)]
    out += [line(cells) for cells in body]
    if not report.rows:
        out.append("(nothing to report)")
    return "\n".join(out)


def csv_rows(report: DemandReport) -> tuple[list[str], list[list[Any]]]:
    """Return a header and rows for CSV: nested source counts become ``views_<channel>``."""
    if not report.rows:
        return [name for _h, name in TABLE_COLUMNS[report.by]], []
    header: list[str] = []
    for key, value in report.rows[0].items():
        if isinstance(value, Mapping):
            header += [f"views_{channel}" for channel in value]
        else:
            header.append(key)
    rows = []
    for row in report.rows:
        cells: list[Any] = []
        for value in row.values():
            if isinstance(value, Mapping):
                cells += list(value.values())
            else:
                cells.append("" if value is None else value)
        rows.append(cells)
    return header, rows


def write_csv(report: DemandReport, out: IO[str]) -> None:
    """Write the report as CSV (one header row, then one row per line of the report)."""
    header, rows = csv_rows(report)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
