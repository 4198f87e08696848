"""Demo traffic: page views from every channel, search data, orders and content-test signups.

So that ``engine demand report`` and ``engine experiments list`` have something to show
on the demo store, seeding adds, only to the demo instance:

* **Daily roll-ups** of page views for the 56 days before today (the report's 28-day
  window and the 28 days its trend compares against) and for the days of every content
  test's window (``demand_test`` in the demo content), on the home page, the category
  pages, the guides and every product page (catalog and coming soon). Views come from
  organic search, social, email, referral, direct and paid visits, in mixes that differ
  for the home page, guides and product pages; each product has its own popularity and
  growth, so priorities range from ``restock_now`` to ``overstocked``.
* **Raw page views for today** (about 40 % of a day), which the report reads raw.
* A **Search Console export** (``search-console.zip`` beside this module: Pages, Queries
  and Filters tables for the last 28 days), imported with the engine's own importer.
* A few **orders** for in-stock products (the report's ``ordered`` column).
* **Signups inside a content test's window** for the coming-soon Talus Fastpack 25, so
  its test reaches a verdict whenever the demo is started.

Everything is deterministic (numbers come from a random generator seeded by day and
page) and idempotent: a day that already has roll-ups or raw views (the demo's, or
views you made while exploring it) is left alone, today's raw views are added once, the
export is imported once per date range, orders and signups once each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from engine.content import Content, ContentErrors, load_content
from engine.demo.signups import DemoSignup, seed_signups
from engine.experiments import DemandTest, declared_tests
from engine.models import (
    Order,
    PageView,
    PageViewDaily,
    PageViewSourceDaily,
    Product,
    SearchDataset,
    Variant,
)

#: The bundled Search Console export (Pages, Queries and Filters tables of a zip).
DEMO_SEARCH_EXPORT = Path(__file__).resolve().parent / "search-console.zip"
#: The address the demo store's Search Console property is for (its pages are read by path).
DEMO_SEARCH_SITE = "https://outdoor-demo.example"
#: Days of roll-ups before today: a 28-day report window and the 28 days before it.
HISTORY_DAYS = 56
#: Today's raw views, as a share of a whole day's.
TODAY_SHARE = 0.4

#: Average product-page views per day in the last 28 days. With DEMAND_VIEW_TO_ORDER_RATE
#: (0.01) and the demo's stock this puts products in every priority; products not listed
#: (a store's own content) get DEFAULT_PRODUCT_VIEWS.
PRODUCT_VIEWS: dict[str, float] = {
    # sold out, nobody on a waitlist: restock_now
    "cairnwood-alpine-mid": 14, "northfork-junior-40": 6, "northfork-rolltop-30": 9,
    "talus-snowline-boot": 11, "talus-summit-2": 16,
    # little stock for their traffic: restock_now and watch
    "ember-down-0": 25, "ridgeline-ul3-tent": 15, "ridgeline-duo-35": 20,
    "northfork-basecamp-4": 22, "cairnwood-expedition-65": 30,
    # healthy
    "ridgeline-ul1-tent": 34, "ridgeline-ul2-tent": 24, "ember-down-20": 22,
    "talus-fastpack-40": 25, "ridgeline-zero-trail": 18, "ridgeline-hydro-mid": 12,
    "cairnwood-heritage-hiker": 9, "ember-granite-approach": 10, "cairnwood-trek-55-womens": 8,
    "cairnwood-backcountry-quilt": 7, "talus-ridge-runner-womens": 9, "ember-silk-liner": 5,
    # plenty of stock for the traffic: overstocked
    "cairnwood-merino-socks": 14, "ember-trail-gaiters": 8, "northfork-camp-moc": 9,
    "northfork-canopy-tarp": 6, "northfork-drift-30": 12, "northfork-river-sandal": 5,
    "northfork-trail-vest-12": 7, "northfork-trailhead-20": 10, "talus-summit-28": 6,
    "talus-ultra-cushion": 11, "cairnwood-alpine-bivy": 6,
    # on a waitlist (their demand comes from the waitlist)
    "cairnwood-trekker-2": 28, "ridgeline-frameless-35": 19, "talus-ridge-runner": 26,
    # coming soon
    "ridgeline-ul1-carbon": 21, "talus-fastpack-25": 9, "cairnwood-scree-runner": 12,
}  # fmt: skip
DEFAULT_PRODUCT_VIEWS = 6.0
HOME_VIEWS = 70.0
CATEGORY_VIEWS = 18.0
GUIDE_VIEWS = 30.0
#: Growth of a page's daily views across the 56 days (last 28 days against the 28 before
#: is about half of it); pages not listed grow by DEFAULT_GROWTH.
GROWTH: dict[str, float] = {
    "/products/ridgeline-ul1-carbon/": 0.9, "/products/cairnwood-trekker-2/": 0.5,
    "/products/talus-fastpack-25/": 0.4, "/products/northfork-drift-30/": -0.3,
    "/products/ember-trail-gaiters/": -0.4, "/products/northfork-river-sandal/": -0.5,
    "/guides/choosing-a-backpacking-tent/": 0.6,
}  # fmt: skip
DEFAULT_GROWTH = 0.2

#: (channel, source, share) of a page kind's views, as the engine classifies them.
ChannelMix = tuple[tuple[str, str, float], ...]
CHANNEL_MIX: dict[str, ChannelMix] = {
    "home": (
        ("direct", "", 0.42), ("organic", "google", 0.24), ("organic", "bing", 0.04),
        ("organic", "duckduckgo", 0.02), ("social", "instagram", 0.06),
        ("social", "facebook", 0.03), ("email", "newsletter", 0.08),
        ("referral", "trailrunnerblog.example.net", 0.03), ("paid", "google", 0.06),
        ("paid", "facebook", 0.02),
    ),
    "guide": (
        ("organic", "google", 0.46), ("organic", "bing", 0.06), ("organic", "duckduckgo", 0.04),
        ("social", "pinterest", 0.08), ("social", "reddit", 0.05),
        ("email", "newsletter", 0.06), ("referral", "ultralight-forum.example.org", 0.07),
        ("referral", "trailrunnerblog.example.net", 0.03), ("direct", "", 0.12),
        ("paid", "google", 0.03),
    ),
    "product": (
        ("organic", "google", 0.30), ("organic", "bing", 0.05), ("organic", "duckduckgo", 0.03),
        ("social", "instagram", 0.06), ("social", "pinterest", 0.04), ("social", "reddit", 0.03),
        ("email", "newsletter", 0.09), ("referral", "trailrunnerblog.example.net", 0.03),
        ("referral", "ultralight-forum.example.org", 0.02), ("direct", "", 0.21),
        ("paid", "google", 0.10), ("paid", "facebook", 0.04),
    ),
}  # fmt: skip
#: Share of a page's views that are daily unique visitors, and that land from outside.
VISITOR_SHARE = 0.82
ENTRY_SHARE = 0.68


@dataclass(frozen=True)
class DemoOrder:
    """A demo order: its name, how many days ago, and (SKU, quantity, price) lines."""

    name: str
    days_ago: int
    lines: tuple[tuple[str, int, str], ...]


DEMO_ORDERS: tuple[DemoOrder, ...] = (
    DemoOrder("#DEMO-1001", 25, (("RL-UL1-SG", 1, "329.00"), ("CW-SOCK3-M", 2, "42.00"))),
    DemoOrder("#DEMO-1002", 22, (("EP-D20-R", 1, "349.00"),)),
    DemoOrder("#DEMO-1003", 19, (("RL-ZT-09", 1, "129.00"), ("CW-SOCK3-L", 3, "42.00"))),
    DemoOrder("#DEMO-1004", 16, (("RL-UL1-SG", 2, "329.00"),)),
    DemoOrder("#DEMO-1005", 13, (("TL-FP40-SL-SM", 1, "229.00"), ("RL-ZT-08", 2, "129.00"))),
    DemoOrder("#DEMO-1006", 10, (("EP-D20-R", 1, "349.00"), ("CW-SOCK3-S", 2, "42.00"))),
    DemoOrder("#DEMO-1007", 8, (("RL-ZT-10", 1, "129.00"),)),
    DemoOrder("#DEMO-1008", 6, (("RL-UL1-SG", 1, "329.00"), ("TL-FP40-EM-SM", 1, "229.00"))),
    DemoOrder("#DEMO-1009", 4, (("CW-SOCK3-M", 2, "42.00"), ("RL-ZT-09", 2, "129.00"))),
    DemoOrder("#DEMO-1010", 2, (("EP-D20-R", 1, "349.00"), ("RL-UL1-SG", 1, "329.00"))),
)

#: The coming-soon product whose content test gets signups inside its window, and on which
#: days of the window (counted from its first day) people sign up, with how they came.
TEST_SIGNUP_PRODUCT = "talus-fastpack-25"
TEST_SIGNUPS: tuple[tuple[str, int, str, tuple[tuple[str, str], ...]], ...] = (
    ("ola.vest@example.com", 1, "https://www.google.com/", ()),
    ("per.ridge@example.com", 2, "", (("utm_source", "newsletter"), ("utm_medium", "email"))),
    ("quinn.fkt@example.com", 3, "https://www.instagram.com/", ()),
    ("rosa.trail@example.com", 5, "https://www.reddit.com/r/trailrunning/", ()),
    ("sam.loop@example.com", 6, "https://www.google.com/", ()),
    ("tove.peak@example.com", 8, "", (("utm_source", "newsletter"), ("utm_medium", "email"))),
    ("uma.scree@example.com", 9, "https://trailrunnerblog.example.net/fastpacking", ()),
    ("vic.dawn@example.com", 11, "https://www.bing.com/", ()),
    ("wes.ultra@example.com", 13, "", (("utm_source", "google"), ("utm_medium", "cpc"))),
    ("xia.miles@example.com", 15, "https://www.google.com/", ()),
    ("yann.hut@example.com", 17, "https://www.pinterest.com/", ()),
    ("zoe.skyline@example.com", 19, "https://www.google.com/", ()),
    ("abe.switchback@example.com", 22, "", (("utm_source", "newsletter"), ("utm_medium", "email"))),
    ("bea.cirque@example.com", 25, "https://duckduckgo.com/", ()),
)  # fmt: skip


@dataclass
class TrafficSetup:
    """What seeding the demo traffic added."""

    days: list[dt.date] = field(default_factory=list)  # days given roll-ups
    raw_views: int = 0  # raw views added for today
    search_datasets: int = 0
    orders: int = 0
    signups: int = 0


# --- pages and numbers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A page that gets demo traffic: its path, kind, views per day now and growth."""

    path: str
    kind: str
    views: float
    growth: float


def demo_pages(session: Session, content: Content | None) -> list[Page]:
    """Return the home page, categories, guides and product pages (catalog and coming soon)."""
    handles = set(session.scalars(select(Product.handle).where(Product.status != "archived")))
    categories: Iterable[str] = ()
    guides: Iterable[str] = ()
    if content is not None:
        handles |= content.coming_soon()
        categories, guides = content.categories, content.guides
    pages = [Page("/", "home", HOME_VIEWS, GROWTH.get("/", DEFAULT_GROWTH))]
    for slug in sorted(categories):
        path = f"/categories/{slug}/"
        pages.append(Page(path, "home", CATEGORY_VIEWS, GROWTH.get(path, DEFAULT_GROWTH)))
    for slug in sorted(guides):
        path = f"/guides/{slug}/"
        pages.append(Page(path, "guide", GUIDE_VIEWS, GROWTH.get(path, DEFAULT_GROWTH)))
    for handle in sorted(handles):
        path = f"/products/{handle}/"
        views = PRODUCT_VIEWS.get(handle, DEFAULT_PRODUCT_VIEWS)
        pages.append(Page(path, "product", views, GROWTH.get(path, DEFAULT_GROWTH)))
    return pages


def _rng(day: dt.date, path: str) -> random.Random:
    return random.Random(f"engine-demo:{day.isoformat()}:{path}")


def day_views(page: Page, day: dt.date, today: dt.date) -> int:
    """Return a page's views on a day: its level then (growth), weekends busier, some noise."""
    # The last 28 days average ``page.views``; earlier days are lower (or higher) by growth,
    # and days before the 56 (a content test's window long ago) stay at the level of the first.
    back = min((today - day).days, HISTORY_DAYS)
    level = page.views * max(0.2, 1 + page.growth * (13.5 - back) / HISTORY_DAYS)
    if day.weekday() >= 5:
        level *= 1.25
    return max(0, round(level * _rng(day, page.path).uniform(0.75, 1.25)))


def split_views(page: Page, day: dt.date, views: int) -> list[tuple[str, str]]:
    """Return each of a day's views as (channel, source), drawn from the page kind's mix."""
    mix = CHANNEL_MIX[page.kind]
    rng = _rng(day, f"{page.path}#sources")
    return rng.choices([(c, s) for c, s, _w in mix], [w for _c, _s, w in mix], k=views)


def rollup_rows(
    pages: Sequence[Page], day: dt.date, today: dt.date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return a day's page_view_daily and page_view_source_daily rows."""
    daily: list[dict[str, Any]] = []
    by_source: list[dict[str, Any]] = []
    for page in pages:
        views = day_views(page, day, today)
        if not views:
            continue
        counts: dict[tuple[str, str], int] = {}
        for key in split_views(page, day, views):
            counts[key] = counts.get(key, 0) + 1
        visitors = 0
        for (channel, source), count in sorted(counts.items()):
            unique = max(1, round(count * VISITOR_SHARE))
            visitors += unique
            by_source.append(
                {"day": day, "path": page.path, "channel": channel, "source": source,
                 "views": count, "visitors": unique}
            )  # fmt: skip
        daily.append(
            {"day": day, "path": page.path, "views": views, "visitors": visitors,
             "entries": round(views * ENTRY_SHARE)}
        )  # fmt: skip
    return daily, by_source


def demo_visitor(day: dt.date, path: str, number: int) -> str:
    """Return a demo visitor id (the shape of a real one; no person behind it)."""
    return hashlib.sha256(f"engine-demo:{day}:{path}:{number}".encode()).hexdigest()[:32]


def raw_rows(
    pages: Sequence[Page], today: dt.date, now: dt.datetime, zone: ZoneInfo
) -> list[dict[str, Any]]:
    """Return today's raw views, spread between midnight and now."""
    midnight = dt.datetime.combine(today, dt.time(), zone)
    elapsed = max(now - midnight, dt.timedelta(minutes=1))
    rows: list[dict[str, Any]] = []
    for page in pages:
        views = round(day_views(page, today, today) * TODAY_SHARE)
        for number, (channel, source) in enumerate(split_views(page, today, views)):
            # Every fifth view is the previous visitor's second page view.
            visitor = demo_visitor(today, page.path, number - (1 if number % 5 == 4 else 0))
            rows.append(
                {"day": today, "ts": (midnight + elapsed * (number + 1) / (views + 1)),
                 "path": page.path, "channel": channel, "source": source,
                 "medium": _medium(channel), "visitor": visitor, "entry": number % 3 != 2}
            )  # fmt: skip
    return rows


def _medium(channel: str) -> str:
    return {"organic": "organic", "social": "referral", "email": "email",
            "referral": "referral", "paid": "cpc"}.get(channel, "")  # fmt: skip


# --- seeding --------------------------------------------------------------------------------


def seed_traffic(session: Session, settings: Mapping[str, Any], now: dt.datetime) -> TrafficSetup:
    """Add the demo's page views, search data, orders and test signups (see the module)."""
    zone = ZoneInfo(str(settings.get("TIMEZONE") or "UTC"))
    today = now.astimezone(zone).date()
    try:
        content: Content | None = load_content(Path(str(settings["CONTENT_DIR"])))
    except ContentErrors:
        content = None
    tests = declared_tests(content) if content is not None else []
    pages = demo_pages(session, content)
    setup = TrafficSetup()
    setup.days = seed_rollups(session, pages, history_days(today, tests), today)
    setup.raw_views = seed_raw_views(session, pages, today, now, zone)
    setup.search_datasets = seed_search_data(session, settings, today, content)
    setup.orders = seed_orders(session, now, str(settings.get("CURRENCY") or "USD"))
    setup.signups = seed_test_signups(session, settings, now, today, tests)
    session.flush()
    return setup


def history_days(today: dt.date, tests: Sequence[DemandTest]) -> list[dt.date]:
    """Return the past days to give roll-ups: the last 56, and each test's window so far."""
    days = {today - dt.timedelta(days=back) for back in range(1, HISTORY_DAYS + 1)}
    for test in tests:
        day = test.start
        while day <= min(test.end, today - dt.timedelta(days=1)):
            days.add(day)
            day += dt.timedelta(days=1)
    return sorted(days)


def seed_rollups(
    session: Session, pages: Sequence[Page], days: Sequence[dt.date], today: dt.date
) -> list[dt.date]:
    """Add roll-ups for the days that have neither roll-ups nor raw views; return them."""
    if not days:
        return []
    d, t = PageViewDaily.__table__.c, PageView.__table__.c
    taken = set(
        session.scalars(select(d.day).where(d.day >= days[0], d.day <= days[-1]).distinct())
    )
    taken |= set(
        session.scalars(select(t.day).where(t.day >= days[0], t.day <= days[-1]).distinct())
    )
    added = []
    for day in days:
        if day in taken:
            continue
        daily, by_source = rollup_rows(pages, day, today)
        if daily:
            session.execute(insert(PageViewDaily), daily)
            session.execute(insert(PageViewSourceDaily), by_source)
        added.append(day)
    return added


def seed_raw_views(
    session: Session, pages: Sequence[Page], today: dt.date, now: dt.datetime, zone: ZoneInfo
) -> int:
    """Add today's raw views unless today's demo views are already there; return how many."""
    rows = raw_rows(pages, today, now, zone)
    if not rows:
        return 0
    t = PageView.__table__.c
    first = rows[0]
    present = session.scalar(
        select(t.id).where(t.day == today, t.path == first["path"], t.visitor == first["visitor"])
    )
    if present is not None:
        return 0
    session.execute(insert(PageView), rows)
    return len(rows)


def seed_search_data(
    session: Session, settings: Mapping[str, Any], today: dt.date, content: Content | None
) -> int:
    """Import the bundled Search Console export unless it is stored for this range already."""
    from engine.searchdata import ProductName, import_search_data, product_names, relative_range

    # The export's Filters table says "Last 28 days": the 28 days ending yesterday.
    start, end = relative_range("Last 28 days", today) or (today, today)
    present = session.scalar(
        select(SearchDataset.id).where(
            SearchDataset.filename == DEMO_SEARCH_EXPORT.name,
            SearchDataset.date_from == start,
            SearchDataset.date_to == end,
        )
    )
    if present is not None:
        return 0
    coming: dict[str, ProductName] = {}
    if content is not None:
        for handle in content.coming_soon():
            meta = content.products[handle].meta
            coming[handle] = ProductName(handle, str(meta.get("title") or handle),
                                         str(meta.get("brand") or ""))  # fmt: skip
    report = import_search_data(
        session,
        DEMO_SEARCH_EXPORT,
        site_url=DEMO_SEARCH_SITE,
        today=today,
        products=product_names(session, coming),
    )
    return len(report.datasets)


def seed_orders(session: Session, now: dt.datetime, currency: str) -> int:
    """Store the demo orders not stored yet (through the order import); return how many."""
    from engine.orders import LineRecord, OrderRecord, store_orders

    names = [order.name for order in DEMO_ORDERS]
    known = set(session.scalars(select(Order.name).where(Order.name.in_(names))))
    skus = set(session.scalars(select(Variant.sku).where(Variant.sku.is_not(None))))
    records = []
    for order in DEMO_ORDERS:
        if order.name in known or not all(sku in skus for sku, _q, _p in order.lines):
            continue
        lines = [
            LineRecord(sku=sku, title=sku, quantity=quantity, price=Decimal(price))
            for sku, quantity, price in order.lines
        ]
        records.append(
            OrderRecord(
                name=order.name,
                external_id=None,
                address=None,
                ordered_at=now - dt.timedelta(days=order.days_ago, hours=order.days_ago % 9),
                currency=currency,
                total=sum((line.price * line.quantity for line in lines), Decimal(0)),
                financial_status="paid",
                lines=lines,
            )
        )
    if not records:
        return 0
    return store_orders(session, records, "csv").created


def seed_test_signups(
    session: Session,
    settings: Mapping[str, Any],
    now: dt.datetime,
    today: dt.date,
    tests: Sequence[DemandTest],
) -> int:
    """Add signups for the tested coming-soon product on the days of its window so far."""
    test = next((t for t in tests if TEST_SIGNUP_PRODUCT in t.products), None)
    if test is None:
        return 0
    signups = []
    for email, offset, referrer, utm in TEST_SIGNUPS:
        day = test.start + dt.timedelta(days=offset)
        if day > min(today, test.end):
            continue
        days_ago = (today - day).days
        signups.append(DemoSignup(email, TEST_SIGNUP_PRODUCT, "", True, days_ago, 1, referrer, utm))
    return seed_signups(session, settings, now, tuple(signups)) if signups else 0
