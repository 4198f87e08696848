"""Page-view ingestion: what counts as a view, daily salts, visitor ids, roll-ups and purges.

A view arrives as a :class:`PendingView` (built by :func:`read_view` from what the beacon or
the pixel sent) and is stored by :func:`store_page_views`, many at a time. No IP address or
user agent is ever written: they only key the day's visitor hash, whose salt is random,
changes every day (in ``TIMEZONE``) and is deleted two days later, after which nobody, the
operator included, can link a hash back to a person.

Raw views are rolled up per day (:func:`rollup`) into tables kept forever; raw rows are
purged after ``TRACKING_RAW_RETENTION_DAYS`` (:func:`purge_raw`), never before their day is
rolled up. Reports read roll-ups for past days and raw rows for today
(:func:`daily_views`, :func:`daily_page_views`).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    CursorResult,
    Dialect,
    Table,
    case,
    delete,
    distinct,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Session

from engine.db import dialect_insert
from engine.models import PageView, PageViewDaily, PageViewSourceDaily, PageVisit, VisitorSalt
from engine.tracking import MAX_USER_AGENT_LENGTH, Source, classify_source, is_bot, visitor_hash
from engine.urls import is_reserved

#: Longer paths are not pages of the site (the engine's own are far shorter).
MAX_PATH_LENGTH = 512
#: Referrers are cut to this many characters before they are classified.
MAX_REFERRER_LENGTH = 2048
#: A landing query longer than this is not read for campaign parameters.
MAX_QUERY_LENGTH = 2048
#: Views of one visitor less than this far apart belong to one visit (source and id carry on).
VISIT_TIMEOUT = dt.timedelta(minutes=30)
#: Salts are kept for today and yesterday; older ones are deleted.
SALT_DAYS_KEPT = 2
SALT_BYTES = 32

#: How many distinct (referrer, landing query) pairs keep their classification in memory.
SOURCE_CACHE_SIZE = 4096
#: How many distinct URLs keep their host in memory (origins, referrers).
HOST_CACHE_SIZE = 4096

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

PAGE_VIEW = cast(Table, PageView.__table__)
DAILY = cast(Table, PageViewDaily.__table__)
SOURCE_DAILY = cast(Table, PageViewSourceDaily.__table__)
SALTS = cast(Table, VisitorSalt.__table__)
VISITS = cast(Table, PageVisit.__table__)


class Discard(StrEnum):
    """Why a request was answered but not stored (each is a documented rule)."""

    BOT = "bot"  # crawler, automation, headless browser or no user agent
    FOREIGN_HOST = "foreign-host"  # sent from, or about, a host that is not the site's
    NOT_A_PAGE = "not-a-page"  # a service route, an asset, or not a path at all


@dataclass(frozen=True, slots=True)
class TrackingSite:
    """The settings page views are read against, prepared once."""

    host: str  # SITE_URL's host, the ``site`` of visitor hashes
    hosts: frozenset[str]  # every host that is the site's (SITE_URL, API_URL, ALLOWED_ORIGINS)
    timezone: ZoneInfo

    def owns(self, url: str) -> bool:
        """Return True when an absolute URL (or origin) is on one of the site's hosts."""
        return _host(url) in self.hosts

    def day(self, moment: dt.datetime) -> dt.date:
        """Return the day a moment falls on in the site's time zone."""
        return moment.astimezone(self.timezone).date()


@functools.lru_cache(maxsize=HOST_CACHE_SIZE)
def _host(url: str) -> str:
    """Return the lower-case host of an absolute URL without ``www.``, or ""."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".")
    return host[4:] if host.startswith("www.") else host


def tracking_site(settings: Mapping[str, Any]) -> TrackingSite:
    """Return the site's hosts and time zone from the settings."""
    origins = settings.get("ALLOWED_ORIGINS") or []
    if isinstance(origins, str):
        origins = origins.split(",")
    return _tracking_site(
        str(settings["SITE_URL"]),
        str(settings.get("API_URL") or settings["SITE_URL"]),
        tuple(str(origin) for origin in origins),
        str(settings.get("TIMEZONE") or "UTC"),
    )


@functools.lru_cache(maxsize=16)
def _tracking_site(
    site_url: str, api_url: str, origins: tuple[str, ...], timezone: str
) -> TrackingSite:
    hosts = {_host(url) for url in (site_url, api_url, *origins)}
    hosts.discard("")
    return TrackingSite(
        host=urlsplit(site_url).hostname or "", hosts=frozenset(hosts), timezone=ZoneInfo(timezone)
    )


@dataclass(frozen=True, slots=True)
class PendingView:
    """A view accepted for storage; ``ip`` and ``user_agent`` only ever key the hash."""

    ts: dt.datetime
    day: dt.date
    path: str
    source: Source
    entry: bool
    ip: str
    user_agent: str


def page_path(value: str, site: TrackingSite) -> tuple[str, str] | Discard:
    """Return (path, query) of a page of the site from a path or URL, or why it is not one."""
    value = value.strip()
    if "://" in value[:12]:
        if not site.owns(value):
            return Discard.FOREIGN_HOST
        try:
            parts = urlsplit(value)
        except ValueError:
            return Discard.NOT_A_PAGE
        path, query = parts.path or "/", parts.query
    else:
        path, _, query = value.partition("?")
        path = path.partition("#")[0]
        query = query.partition("#")[0]
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return Discard.NOT_A_PAGE
    if len(path) > MAX_PATH_LENGTH or _CONTROL_RE.search(path):
        return Discard.NOT_A_PAGE
    # A static host serves /x/ and /x/index.html alike: count them as one page.
    if path.endswith("/index.html"):
        path = path[: -len("index.html")]
    if is_reserved(path) or path == "/assets" or path.startswith("/assets/"):
        return Discard.NOT_A_PAGE
    return path, query[:MAX_QUERY_LENGTH]


def read_view(
    site: TrackingSite,
    *,
    page: str,
    referrer: str,
    params: Mapping[str, str] | str | None,
    ip: str,
    user_agent: str | None,
    now: dt.datetime,
) -> PendingView | Discard:
    """Turn what a beacon or pixel sent into a view to store, or the rule that drops it."""
    if is_bot(user_agent):
        return Discard.BOT
    found = page_path(page, site)
    if isinstance(found, Discard):
        return found
    path, query = found
    referrer = referrer.strip()[:MAX_REFERRER_LENGTH]
    # A click within the site (any of its hosts) continues a visit; anything else lands one.
    entry = not (referrer and "://" in referrer and site.owns(referrer))
    if isinstance(params, str):
        query = params.lstrip("?")[:MAX_QUERY_LENGTH]
        params = None
    source = _landing_source(referrer if entry else "", query, params, site.host)
    return PendingView(
        ts=now,
        day=site.day(now),
        path=path,
        source=source,
        entry=entry,
        ip=ip,
        user_agent=(user_agent or "").strip()[:MAX_USER_AGENT_LENGTH],
    )


def _landing_source(
    referrer: str, query: str, params: Mapping[str, str] | None, site_host: str
) -> Source:
    """Classify a view's source; the page's path plays no part, only its query."""
    if params:
        return classify_source(referrer, f"/?{query}" if query else "/", params, site_host)
    return _landing_source_of(referrer, query, site_host)


@functools.lru_cache(maxsize=SOURCE_CACHE_SIZE)
def _landing_source_of(referrer: str, query: str, site_host: str) -> Source:
    # Most views repeat a few referrers and landing queries: classify each pair once.
    return classify_source(referrer, f"/?{query}" if query else "/", None, site_host)


# --- salts -------------------------------------------------------------------------------


def _dialect(session: Session | Connection) -> str:
    if isinstance(session, Connection):
        return session.dialect.name
    return session.get_bind().dialect.name


def _day_salt(session: Session | Connection, day: dt.date, *, create: bool) -> bytes | None:
    """Return a day's salt, creating it when asked (racing creators agree on one row)."""
    found = session.execute(select(SALTS.c.salt).where(SALTS.c.day == day)).scalar()
    if found is None and create:
        insert_ = dialect_insert(_dialect(session))
        session.execute(
            insert_(SALTS)
            .values(day=day, salt=secrets.token_hex(SALT_BYTES), created_at=dt.datetime.now(dt.UTC))
            .on_conflict_do_nothing(index_elements=["day"])
        )
        found = session.execute(select(SALTS.c.salt).where(SALTS.c.day == day)).scalar_one()
    return bytes.fromhex(found) if found is not None else None


class SaltCache:
    """Salts already read, per day: a salt never changes once stored, so caching is safe.

    A missing previous-day salt is remembered as missing too: once a day has begun, nothing
    creates the day before's salt any more.
    """

    def __init__(self) -> None:
        self._pairs: dict[dt.date, tuple[bytes, bytes | None]] = {}
        self._lock = threading.Lock()

    def salts(self, session: Session | Connection, day: dt.date) -> tuple[bytes, bytes | None]:
        """Return the day's salt (created if needed) and the previous day's, if still kept."""
        with self._lock:
            pair = self._pairs.get(day)
        if pair is None:
            current = _day_salt(session, day, create=True)
            assert current is not None
            pair = (current, _day_salt(session, day - dt.timedelta(days=1), create=False))
            with self._lock:
                # Only the newest days are ever asked for: forget the rest.
                self._pairs = {d: p for d, p in self._pairs.items() if d >= day}
                self._pairs[day] = pair
        return pair


def visitor_salts(session: Session, day: dt.date) -> tuple[bytes, bytes | None]:
    """Return the day's salt (created if needed) and the previous day's, if still kept."""
    return SaltCache().salts(session, day)


def purge_salts(session: Session, today: dt.date) -> int:
    """Delete salts older than two days (today's and yesterday's stay); return how many."""
    cutoff = today - dt.timedelta(days=SALT_DAYS_KEPT - 1)
    result = session.execute(delete(SALTS).where(SALTS.c.day < cutoff))
    return int(cast(CursorResult[Any], result).rowcount or 0)


# --- storing -----------------------------------------------------------------------------


_VIEW_COLUMNS = (
    "day",
    "ts",
    "path",
    "channel",
    "source",
    "medium",
    "campaign",
    "engine_token",
    "visitor",
    "entry",
)
_SOURCE_FIELDS = ("channel", "source", "medium", "campaign", "engine_token")
_VISIT_COLUMNS = ("visitor", "last_ts", *_SOURCE_FIELDS)


class _Statements:
    """The ingestion statements as driver SQL for one dialect, with its value converters.

    Views arrive thousands per second, so their statements skip SQLAlchemy's compiler: one
    single-row INSERT run for the whole batch with ``executemany`` (SQLite prepares it once;
    psycopg pipelines it into one round trip), values converted by the same type
    processors SQLAlchemy would use.
    """

    def __init__(self, dialect: Dialect) -> None:
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        updates = ", ".join(f"{name} = excluded.{name}" for name in _VISIT_COLUMNS[1:])
        self.insert_views = _insert_sql(self.mark, PAGE_VIEW.name, _VIEW_COLUMNS)
        self.upsert_visits = (
            _insert_sql(self.mark, VISITS.name, _VISIT_COLUMNS)
            + f" ON CONFLICT (visitor) DO UPDATE SET {updates}"
        )
        self.view_row = _row_converter(PAGE_VIEW, _VIEW_COLUMNS, dialect)
        self.visit_row = _row_converter(VISITS, _VISIT_COLUMNS, dialect)
        processor = VISITS.c.last_ts.type.dialect_impl(dialect).result_processor(dialect, None)
        self.read_ts: Callable[[Any], Any] = processor or (lambda value: value)

    def select_visits(self, visitors: int) -> str:
        """Return the SELECT of ``visitors`` visitors' running visits."""
        return _select_visits_sql(self.mark, visitors)


def _insert_sql(mark: str, table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"


@functools.lru_cache(maxsize=1024)
def _select_visits_sql(mark: str, visitors: int) -> str:
    return (
        f"SELECT {', '.join(_VISIT_COLUMNS)} FROM {VISITS.name} "
        f"WHERE visitor IN ({', '.join([mark] * visitors)})"
    )


def _row_converter(
    table: Table, columns: tuple[str, ...], dialect: Dialect
) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Return a function converting a row's values for the driver, column by column."""
    steps: list[tuple[int, Callable[[Any], Any]]] = []
    for index, name in enumerate(columns):
        processor = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:  # most columns go to the driver as they are
            steps.append((index, processor))

    def convert(values: tuple[Any, ...]) -> tuple[Any, ...]:
        row = list(values)
        for index, processor in steps:
            row[index] = processor(row[index])
        return tuple(row)

    return convert


@functools.cache
def _statements(dialect: Dialect) -> _Statements:
    return _Statements(dialect)


class VisitCache:
    """Recent visits this process wrote or read, so most views need no visit look-up.

    A cache in front of the ``page_visit`` table, which stays the truth: a visitor not
    here (or here with an ended visit) is looked up in the table, where another process
    may have recorded it.
    """

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._visits: OrderedDict[str, tuple[dt.datetime, Source]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, visitor: str) -> tuple[dt.datetime, Source] | None:
        """Return a visitor's last view time and visit source, if known here."""
        with self._lock:
            return self._visits.get(visitor)

    def update(self, visits: Mapping[str, tuple[dt.datetime, Source]]) -> None:
        """Remember visits just written or read, forgetting the oldest beyond the size."""
        with self._lock:
            for visitor, visit in visits.items():
                self._visits[visitor] = visit
                self._visits.move_to_end(visitor)
            while len(self._visits) > self.size:
                self._visits.popitem(last=False)


def store_page_views(
    session: Session | Connection,
    site: TrackingSite,
    views: Sequence[PendingView],
    salts: SaltCache | None = None,
    cache: VisitCache | None = None,
) -> None:
    """Insert views with their visitor ids; clicks within a visit keep the visit's source.

    A view's visitor id is the hash under its day's salt, unless the same person's visit
    under yesterday's salt is still running (a visit across midnight), whose id it keeps.
    """
    if not views:
        return
    connection = session if isinstance(session, Connection) else session.connection()
    sql = _statements(connection.dialect)
    salts = salts or SaltCache()
    keyed: list[tuple[PendingView, str, str | None]] = []
    day_salts: dict[dt.date, tuple[bytes, bytes | None]] = {}
    visits: dict[str, tuple[dt.datetime, Source]] = {}
    wanted: set[str] = set()
    for view in views:
        if view.day not in day_salts:
            day_salts[view.day] = salts.salts(connection, view.day)
        salt, previous_salt = day_salts[view.day]
        hashed = visitor_hash(salt, site.host, view.ip, view.user_agent)
        earlier = None
        if previous_salt is not None and view.ts - _midnight(site, view.day) <= VISIT_TIMEOUT:
            earlier = visitor_hash(previous_salt, site.host, view.ip, view.user_agent)
        keyed.append((view, hashed, earlier))
        # A landing needs no look-up (its source is its own) unless a visit under
        # yesterday's salt may still be running.
        if view.entry and earlier is None:
            continue
        for visitor in (hashed, earlier):
            if visitor is None or visitor in visits:
                continue
            known = cache.get(visitor) if cache is not None else None
            if known is not None and view.ts - known[0] <= VISIT_TIMEOUT:
                visits[visitor] = known
            else:
                wanted.add(visitor)
    if wanted:
        visits.update(_running_visits(connection, sql, sorted(wanted)))

    view_rows: list[tuple[Any, ...]] = []
    touched: dict[str, tuple[dt.datetime, Source]] = {}
    view_row = sql.view_row
    for view, current, previous in keyed:
        visitor = current
        if previous is not None and current not in visits:
            running = visits.get(previous)
            if running is not None and view.ts - running[0] <= VISIT_TIMEOUT:
                visitor = previous
        source = view.source
        if not view.entry:
            visit = visits.get(visitor)
            if visit is not None and view.ts - visit[0] <= VISIT_TIMEOUT:
                source = visit[1]
        visits[visitor] = touched[visitor] = (view.ts, source)
        view_rows.append(
            view_row(
                (
                    view.day,
                    view.ts,
                    view.path,
                    source.channel,
                    source.source,
                    source.medium,
                    source.campaign,
                    source.engine_token,
                    visitor,
                    view.entry,
                )
            )
        )
    connection.exec_driver_sql(sql.insert_views, view_rows)
    visit_row = sql.visit_row
    visit_rows = [
        visit_row(
            (
                visitor,
                ts,
                source.channel,
                source.source,
                source.medium,
                source.campaign,
                source.engine_token,
            )
        )
        # In one order: writers in several processes then lock visits without deadlocking.
        for visitor, (ts, source) in sorted(touched.items(), key=lambda item: item[0])
    ]
    connection.exec_driver_sql(sql.upsert_visits, visit_rows)
    if cache is not None:
        cache.update(touched)


def _midnight(site: TrackingSite, day: dt.date) -> dt.datetime:
    """Return the moment a day begins in the site's time zone."""
    return dt.datetime.combine(day, dt.time(), tzinfo=site.timezone)


def _running_visits(
    connection: Connection, sql: _Statements, visitors: list[str]
) -> dict[str, tuple[dt.datetime, Source]]:
    """Return the last view time and the source of each visitor's latest visit."""
    if not visitors:
        return {}
    rows = connection.exec_driver_sql(sql.select_visits(len(visitors)), tuple(visitors))
    return {
        visitor: (
            sql.read_ts(ts),
            Source(channel, source, medium, campaign, engine_token=token),
        )
        for visitor, ts, channel, source, medium, campaign, token in rows
    }


def purge_visits(session: Session, now: dt.datetime) -> int:
    """Delete visits that ended (no view for longer than the visit timeout); return how many."""
    result = session.execute(delete(VISITS).where(VISITS.c.last_ts < now - VISIT_TIMEOUT))
    return int(cast(CursorResult[Any], result).rowcount or 0)


# --- roll-ups, purges and reports --------------------------------------------------------


def rollup(session: Session, day: dt.date) -> int:
    """Recompute one day's roll-ups from its raw views (idempotent); return the pages seen."""
    session.execute(delete(DAILY).where(DAILY.c.day == day))
    session.execute(delete(SOURCE_DAILY).where(SOURCE_DAILY.c.day == day))
    t = PAGE_VIEW.c
    views = func.count()
    visitors = func.count(distinct(t.visitor))
    entries = func.sum(case((t.entry, 1), else_=0))
    session.execute(
        insert(DAILY).from_select(
            ["day", "path", "views", "visitors", "entries"],
            select(t.day, t.path, views, visitors, entries)
            .where(t.day == day)
            .group_by(t.day, t.path),
        )
    )
    session.execute(
        insert(SOURCE_DAILY).from_select(
            ["day", "path", "channel", "source", "views", "visitors"],
            select(t.day, t.path, t.channel, t.source, views, visitors)
            .where(t.day == day)
            .group_by(t.day, t.path, t.channel, t.source),
        )
    )
    return int(
        session.execute(select(func.count()).select_from(DAILY).where(DAILY.c.day == day)).scalar()
        or 0
    )


def _rolled_up(session: Session, days: Iterable[dt.date]) -> set[dt.date]:
    wanted = sorted(set(days))
    if not wanted:
        return set()
    return set(
        session.execute(select(DAILY.c.day).distinct().where(DAILY.c.day.in_(wanted))).scalars()
    )


def raw_days(session: Session, before: dt.date) -> list[dt.date]:
    """Return the days before a day that still have raw views."""
    query = select(PAGE_VIEW.c.day).distinct().where(PAGE_VIEW.c.day < before)
    return sorted(session.execute(query).scalars())


def purge_raw(session: Session, before: dt.date) -> int:
    """Delete raw views of days before ``before``, rolling up any day not yet rolled up."""
    days = raw_days(session, before)
    done = _rolled_up(session, days)
    for day in days:
        if day not in done:
            rollup(session, day)
    result = session.execute(delete(PAGE_VIEW).where(PAGE_VIEW.c.day < before))
    return int(cast(CursorResult[Any], result).rowcount or 0)


@dataclass(frozen=True)
class Maintenance:
    """What one maintenance run did."""

    rolled_up: list[dt.date]
    raw_purged: int
    salts_purged: int
    visits_purged: int


def maintain(session: Session, settings: Mapping[str, Any], now: dt.datetime) -> Maintenance:
    """Roll up finished days, purge raw views past retention and salts past two days."""
    site = tracking_site(settings)
    today = site.day(now)
    days = raw_days(session, today)
    done = _rolled_up(session, days)
    # Yesterday is recomputed on every run: views committed around midnight may land late.
    todo = [day for day in days if day not in done or day == today - dt.timedelta(days=1)]
    for day in todo:
        rollup(session, day)
    keep = int(settings.get("TRACKING_RAW_RETENTION_DAYS", 90))
    purged = purge_raw(session, today - dt.timedelta(days=max(keep, 1)))
    return Maintenance(todo, purged, purge_salts(session, today), purge_visits(session, now))


@dataclass(frozen=True, slots=True)
class DailyViews:
    """Views of one page on one day from one channel and source."""

    day: dt.date
    path: str
    channel: str
    source: str
    views: int
    visitors: int


@dataclass(frozen=True, slots=True)
class DailyPageViews:
    """Views and unique visitors of one page on one day (all sources)."""

    day: dt.date
    path: str
    views: int
    visitors: int
    entries: int


def _split_days(
    session: Session, start: dt.date, end: dt.date, today: dt.date
) -> tuple[list[dt.date], list[dt.date]]:
    """Split a window into rolled-up days and days to read raw (today always raw)."""
    rolled = {
        day
        for day in _rolled_up(
            session, (start + dt.timedelta(days=i) for i in range((end - start).days + 1))
        )
        if day < today
    }
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    return sorted(rolled), [day for day in days if day not in rolled]


def daily_views(session: Session, start: dt.date, end: dt.date, today: dt.date) -> list[DailyViews]:
    """Return views per day, page, channel and source from ``start`` to ``end`` inclusive."""
    if end < start:
        return []
    rolled, raw = _split_days(session, start, end, today)
    out: list[DailyViews] = []
    s = SOURCE_DAILY.c
    if rolled:
        query = select(s.day, s.path, s.channel, s.source, s.views, s.visitors).where(
            s.day >= start, s.day <= end, s.day.in_(rolled)
        )
        out.extend(DailyViews(*row) for row in session.execute(query))
    if raw:
        t = PAGE_VIEW.c
        query = (
            select(
                t.day, t.path, t.channel, t.source, func.count(), func.count(distinct(t.visitor))
            )
            .where(t.day >= start, t.day <= end, t.day.in_(raw))
            .group_by(t.day, t.path, t.channel, t.source)
        )
        out.extend(DailyViews(*row) for row in session.execute(query))
    return sorted(out, key=lambda v: (v.day, v.path, v.channel, v.source))


def daily_page_views(
    session: Session, start: dt.date, end: dt.date, today: dt.date
) -> list[DailyPageViews]:
    """Return views and unique visitors per day and page from ``start`` to ``end`` inclusive."""
    if end < start:
        return []
    rolled, raw = _split_days(session, start, end, today)
    out: list[DailyPageViews] = []
    d = DAILY.c
    if rolled:
        query = select(d.day, d.path, d.views, d.visitors, d.entries).where(
            d.day >= start, d.day <= end, d.day.in_(rolled)
        )
        out.extend(DailyPageViews(*row) for row in session.execute(query))
    if raw:
        t = PAGE_VIEW.c
        query = (
            select(
                t.day,
                t.path,
                func.count(),
                func.count(distinct(t.visitor)),
                func.sum(case((t.entry, 1), else_=0)),
            )
            .where(t.day >= start, t.day <= end, t.day.in_(raw))
            .group_by(t.day, t.path)
        )
        out.extend(DailyPageViews(*row) for row in session.execute(query))
    return sorted(out, key=lambda v: (v.day, v.path))
