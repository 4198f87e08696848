"""Page views end to end: beacon and pixel, drop rules, visitor ids, salts, roll-ups, purges."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import html as lxml_html
from sqlalchemy import String, Text, func, select
from sqlalchemy.orm import Session

from engine import create_app
from engine.db import Base, Database, get_db
from engine.models import PageView, PageViewDaily, PageViewSourceDaily, PageVisit, VisitorSalt
from engine.pages import make_environment
from engine.pageviews import (
    MAX_PATH_LENGTH,
    DailyPageViews,
    Discard,
    PendingView,
    SaltCache,
    daily_page_views,
    daily_views,
    maintain,
    page_path,
    purge_raw,
    purge_salts,
    read_view,
    rollup,
    store_page_views,
    tracking_site,
    visitor_salts,
)
from engine.web import events
from engine.web.events import PIXEL, event_writer

SITE = "https://shop.test"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.6367.29 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "",
]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(app: Flask) -> Iterator[Flask]:
    """Stop the page-view writer thread (and close its connection) after each test."""
    yield app
    writer = app.extensions.get("engine.events")
    if writer is not None:
        writer.stop()


def beacon(
    client: FlaskClient,
    page: str = "/products/tent/",
    referrer: str = "",
    params: Any = "",
    *,
    agent: str | None = CHROME,
    origin: str | None = SITE,
    ip: str = "198.51.100.7",
    **headers: str,
) -> Any:
    """Send one view as beacon.js does: JSON as text/plain, by POST."""
    if agent is not None:
        headers["User-Agent"] = agent
    if origin is not None:
        headers["Origin"] = origin
    return client.post(
        "/api/events",
        data=json.dumps({"p": page, "r": referrer, "u": params}),
        content_type="text/plain;charset=UTF-8",
        headers=headers,
        environ_base={"REMOTE_ADDR": ip},
    )


def views(db: Database) -> list[PageView]:
    """Return every stored view, oldest first."""
    with db.sessions() as session:
        return list(session.scalars(select(PageView).order_by(PageView.id)))


def count(db: Database, model: type[Any] = PageView) -> int:
    """Return how many rows a table holds."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --- the endpoints ------------------------------------------------------------------------


def test_beacon_stores_a_view_and_answers_202(client: FlaskClient, db: Database) -> None:
    response = beacon(client, "/products/tent/", "https://www.google.com/")
    assert response.status_code == 202
    assert response.data == b""
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    [view] = views(db)
    assert (view.path, view.channel, view.source, view.medium) == (
        "/products/tent/",
        "organic",
        "google",
        "organic",
    )
    assert view.entry is True
    assert len(view.visitor) == 32
    assert view.day == dt.datetime.now(dt.UTC).date()


def test_beacon_reads_a_full_page_url_and_a_params_object(
    client: FlaskClient, db: Database
) -> None:
    assert (
        beacon(client, f"{SITE}/guides/tents/index.html?utm_source=partnerblog").status_code == 202
    )
    assert (
        beacon(client, "/guides/tents/", params={"utm_medium": "email", "et": "T0k"}).status_code
        == 202
    )
    first, second = views(db)
    assert first.path == second.path == "/guides/tents/"
    assert first.channel == "referral" and first.source == "partnerblog"
    assert second.channel == "email" and second.engine_token == "T0k"


@pytest.mark.parametrize("agent", BOTS)
def test_bots_and_missing_user_agents_are_dropped(
    client: FlaskClient, db: Database, agent: str
) -> None:
    assert beacon(client, agent=agent).status_code == 202
    assert (
        client.post(
            "/api/events", data='{"p": "/"}', content_type="text/plain", headers={"Origin": SITE}
        ).status_code
        == 202
    )
    assert count(db) == 0


def test_foreign_hosts_are_dropped(client: FlaskClient, db: Database) -> None:
    assert beacon(client, origin="https://copycat.example").status_code == 202
    assert beacon(client, origin="null").status_code == 202
    assert beacon(client, "https://copycat.example/products/tent/").status_code == 202
    assert beacon(client, origin=None, Referer="https://copycat.example/x/").status_code == 202
    assert count(db) == 0
    # The site's other names count: www, and its own origin without an Origin header.
    assert beacon(client, origin="https://www.shop.test").status_code == 202
    assert beacon(client, origin=None, Referer=f"{SITE}/products/tent/").status_code == 202
    assert beacon(client, origin=None).status_code == 202
    assert count(db) == 3


@pytest.mark.parametrize(
    "page",
    [
        "/api/events",
        "/assets/style.css",
        "/assets",
        "/healthz",
        "/waitlist/confirm/x",
        "/unsubscribe/abc",
        "/admin/",
        "/hooks/orders",
        "//evil.example/x",
        "products/tent/",
        "/" + "a" * MAX_PATH_LENGTH,
        "/bad\x00path/",
        "javascript:alert(1)",
    ],
)
def test_paths_that_are_not_pages_are_dropped(client: FlaskClient, db: Database, page: str) -> None:
    assert beacon(client, page).status_code == 202
    assert count(db) == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("{not json", "text/plain", 400),
        ("[1, 2]", "text/plain", 400),
        ('{"r": "https://www.google.com/"}', "text/plain", 400),
        ('{"p": 5}', "application/json", 400),
        ('{"p": "/", "u": [1]}', "text/plain", 400),
        ('{"p": "/"}', "application/xml", 415),
        ('{"p": "/", "r": "' + "x" * 9000 + '"}', "text/plain", 413),
    ],
)
def test_bodies_that_are_not_page_views_get_4xx(
    client: FlaskClient, db: Database, body: str, content_type: str, status: int
) -> None:
    response = client.post(
        "/api/events",
        data=body,
        content_type=content_type,
        headers={"Origin": SITE, "User-Agent": CHROME},
    )
    assert response.status_code == status
    assert "errors" in response.get_json()
    assert count(db) == 0


def test_pixel_answers_a_transparent_gif_and_reads_the_page_url(
    client: FlaskClient, db: Database
) -> None:
    response = client.get(
        "/api/events.gif?p=%2Fproducts%2Ftent%2F",
        headers={
            "User-Agent": FIREFOX,
            "Referer": f"{SITE}/products/tent/?utm_source=newsletter&utm_medium=email&et=abc",
        },
    )
    assert response.status_code == 202
    assert response.mimetype == "image/gif"
    assert response.data == PIXEL and response.data.startswith(b"GIF89a")
    assert response.headers["Cache-Control"] == "no-store"
    [view] = views(db)
    assert (view.path, view.channel, view.source, view.engine_token) == (
        "/products/tent/",
        "email",
        "newsletter",
        "abc",
    )
    # A bot's pixel is answered the same way and stored nowhere.
    bot = client.get("/api/events.gif?p=/", headers={"User-Agent": BOTS[0]})
    assert bot.status_code == 202 and bot.data == PIXEL
    assert client.get("/api/events.gif", headers={"User-Agent": FIREFOX}).status_code == 400
    assert count(db) == 1
    # A query that is not UTF-8 (browsers percent-encode) is read, not a server error.
    raw_query = {"QUERY_STRING": "p=/caf\xe9/"}  # the byte 0xE9 as a WSGI server passes it
    agent = {"User-Agent": FIREFOX}
    raw = client.get("/api/events.gif", environ_overrides=raw_query, headers=agent)
    assert raw.status_code == 202
    assert count(db) == 2


def test_pixel_by_head_is_answered_like_get(client: FlaskClient, db: Database) -> None:
    response = client.head("/api/events.gif?p=/guides/tents/", headers={"User-Agent": FIREFOX})
    assert response.status_code == 202
    assert response.mimetype == "image/gif"
    assert response.headers["Cache-Control"] == "no-store"
    assert [v.path for v in views(db)] == ["/guides/tents/"]


def test_a_view_the_database_did_not_take_is_answered_503(
    client: FlaskClient, db: Database
) -> None:
    with db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE page_view RENAME TO page_view_away")
    failed = beacon(client, "/products/tent/")
    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "5"
    assert failed.headers["Access-Control-Allow-Origin"] == SITE
    assert "briefly unavailable" in failed.get_json()["errors"]["body"][0]
    with db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE page_view_away RENAME TO page_view")
    # The writer carries on with the next view.
    assert beacon(client, "/guides/tents/").status_code == 202
    assert [v.path for v in views(db)] == ["/guides/tents/"]


def test_preflight_allows_the_site_only(client: FlaskClient) -> None:
    allowed = client.options("/api/events", headers={"Origin": SITE})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == SITE
    other = client.options("/api/events", headers={"Origin": "https://copycat.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_no_ip_address_or_user_agent_is_stored_anywhere(client: FlaskClient, db: Database) -> None:
    ip, agent = "203.0.113.199", CHROME.replace("124.0.0.0", "124.0.6367.991")
    assert beacon(client, ip=ip, agent=agent, referrer="https://duckduckgo.com/").status_code == 202
    assert count(db) == 1
    found = []
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            text_columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            for row in connection.execute(select(*text_columns)) if text_columns else []:
                for value in row:
                    if value and ("203.0.113" in str(value) or "6367.991" in str(value)):
                        found.append((table.name, value))
    assert found == []


def test_classify_source_is_applied(client: FlaskClient, db: Database) -> None:
    beacon(client, "/a/", "https://www.google.com/search?q=tent")
    beacon(client, "/b/", "https://www.google.com/", "?utm_source=newsletter&utm_medium=email")
    beacon(client, "/c/", "", "?gclid=abc123")
    beacon(client, "/d/", "https://www.facebook.com/", ip="198.51.100.8")
    beacon(client, "/e/", "", "?et=restock-token-1", ip="198.51.100.9")
    channels = [(v.path, v.channel, v.source, v.engine_token) for v in views(db)]
    assert channels == [
        ("/a/", "organic", "google", ""),
        ("/b/", "email", "newsletter", ""),
        ("/c/", "paid", "google", ""),
        ("/d/", "social", "facebook", ""),
        ("/e/", "email", "email", "restock-token-1"),
    ]


def test_clicks_within_a_visit_keep_its_source(client: FlaskClient, db: Database) -> None:
    beacon(client, "/guides/tents/", "https://www.bing.com/", "?et=tok")
    beacon(client, "/products/tent/", f"{SITE}/guides/tents/")
    beacon(client, "/products/tent/", f"{SITE}/guides/tents/", ip="198.51.100.50")
    landing, click, stranger = views(db)
    assert (landing.entry, click.entry) == (True, False)
    assert (click.channel, click.source, click.engine_token) == ("organic", "bing", "tok")
    assert click.visitor == landing.visitor
    # Someone else arriving by an internal link with no visit on record is direct.
    assert (stranger.channel, stranger.visitor != landing.visitor) == ("direct", True)


def test_trusted_proxies_are_honoured(config: dict[str, Any]) -> None:
    for hops, expected in ((0, 1), (1, 2)):
        application = create_app({**config, "TRUSTED_PROXIES": hops})
        database = get_db(application)
        database.upgrade()
        try:
            client = application.test_client()
            for forwarded in ("203.0.113.1", "203.0.113.2"):
                assert beacon(client, **{"X-Forwarded-For": forwarded}).status_code == 202
            with database.sessions() as session:
                visitors = session.scalar(select(func.count(func.distinct(PageView.visitor))))
            assert visitors == expected
            with database.sessions() as session:
                session.execute(PageView.__table__.delete())
                session.execute(PageVisit.__table__.delete())
                session.commit()
        finally:
            event_writer(application).stop()
            database.dispose()


def test_group_commit_counts_every_concurrent_view(app: Flask, db: Database) -> None:
    answers: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(40)

    def send(worker: int) -> None:
        client = app.test_client()
        start.wait()
        for i in range(5):
            status = beacon(client, f"/p/{worker}/{i}/", ip=f"10.1.{worker}.{i}").status_code
            with lock:
                answers.append(status)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [202] * 200
    assert count(db) == 200
    assert len({v.path for v in views(db)}) == 200


def test_sqlite_wal_is_checkpointed_beside_the_writer(
    app: Flask, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's WAL only")
    monkeypatch.setattr(events, "CHECKPOINT_ROWS", 10)
    monkeypatch.setattr(events, "WAL_LIMIT_PAGES", 100)
    client = app.test_client()
    for i in range(600):
        assert beacon(client, f"/p/{i}/", ip=f"10.2.{i // 200}.{i % 200}").status_code == 202
    assert count(db) == 600
    # The writer's own connection never checkpoints, yet the WAL file was started over
    # again and again (never checkpointed, 600 views take about 14 MB of WAL here).
    wal = Path(str(db.engine.url.database) + "-wal")
    assert wal.stat().st_size < 6_000_000


# --- visitor ids and salts ----------------------------------------------------------------


def settings(**overrides: Any) -> dict[str, Any]:
    """Return the settings the domain functions read."""
    return {"SITE_URL": SITE, "API_URL": SITE, "ALLOWED_ORIGINS": [SITE], **overrides}


SITE_INFO = tracking_site(settings())
NOON = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def view(
    now: dt.datetime,
    page: str = "/products/tent/",
    referrer: str = "",
    *,
    ip: str = "198.51.100.7",
    agent: str = CHROME,
) -> PendingView:
    """Read one browser view at a given moment."""
    found = read_view(
        SITE_INFO, page=page, referrer=referrer, params=None, ip=ip, user_agent=agent, now=now
    )
    assert isinstance(found, PendingView)
    return found


def store(session: Session, *items: PendingView) -> list[PageView]:
    """Store views one batch each, commit, and return every stored view."""
    for item in items:
        store_page_views(session, SITE_INFO, [item])
    session.commit()
    return list(session.scalars(select(PageView).order_by(PageView.id)))


def test_unique_visitors_per_day(session: Session) -> None:
    stored = store(
        session,
        view(NOON),
        view(NOON + dt.timedelta(minutes=5), "/guides/x/"),
        view(NOON + dt.timedelta(hours=3)),
        view(NOON, agent=FIREFOX),
        view(NOON, ip="198.51.100.8"),
        view(NOON + dt.timedelta(days=1)),
    )
    same_day = {v.visitor for v in stored[:3]}
    assert len(same_day) == 1
    assert len({v.visitor for v in stored[:5]}) == 3
    # Another day, another salt: the same person is a new, unlinkable id.
    assert stored[5].visitor not in {v.visitor for v in stored[:5]}
    [page] = [
        row
        for row in daily_page_views(session, NOON.date(), NOON.date(), NOON.date())
        if row.path == "/products/tent/"
    ]
    assert (page.views, page.visitors) == (4, 3)


def test_salts_are_random_per_day_and_kept_two_days(session: Session) -> None:
    days = [NOON.date() - dt.timedelta(days=n) for n in range(4)]
    for day in reversed(days):
        visitor_salts(session, day)
    today, yesterday = visitor_salts(session, days[0])
    assert yesterday is not None and today != yesterday and len(today) == 32
    assert purge_salts(session, days[0]) == 2
    session.commit()
    assert sorted(session.scalars(select(VisitorSalt.day))) == [days[1], days[0]]
    # A day with no salt before it starts a fresh chain.
    assert visitor_salts(session, NOON.date() + dt.timedelta(days=10))[1] is None


def test_a_visit_across_midnight_keeps_its_visitor_and_source(session: Session) -> None:
    before = dt.datetime(2026, 3, 10, 23, 50, tzinfo=dt.UTC)
    after = before + dt.timedelta(minutes=15)
    later = after + dt.timedelta(hours=2)
    stored = store(
        session,
        view(before, "/guides/tents/", "https://www.google.com/"),
        view(after, "/products/tent/", f"{SITE}/guides/tents/"),
        view(later, "/products/tent/", f"{SITE}/guides/tents/"),
    )
    evening, continued, next_visit = stored
    assert (evening.day, continued.day) == (before.date(), after.date())
    assert continued.visitor == evening.visitor
    assert (continued.channel, continued.source) == ("organic", "google")
    # Once the visit has ended, the day's own salt gives the id, and the source is direct.
    assert next_visit.visitor != evening.visitor
    assert next_visit.channel == "direct"


def test_salt_rotation_follows_the_time_zone(session: Session) -> None:
    site = tracking_site(settings(TIMEZONE="America/New_York"))
    late = dt.datetime(2026, 3, 11, 3, 0, tzinfo=dt.UTC)  # 23:00 on the 10th in New York
    assert site.day(late) == dt.date(2026, 3, 10)
    found = read_view(
        site, page="/", referrer="", params=None, ip="1.2.3.4", user_agent=CHROME, now=late
    )
    assert isinstance(found, PendingView) and found.day == dt.date(2026, 3, 10)
    store_page_views(session, site, [found], SaltCache())
    session.commit()
    assert list(session.scalars(select(VisitorSalt.day))) == [dt.date(2026, 3, 10)]


# --- roll-ups, purges and reports ---------------------------------------------------------


def test_rollup_is_idempotent_and_purge_keeps_rollups(session: Session) -> None:
    day1, day2 = NOON, NOON + dt.timedelta(days=1)
    store(
        session,
        view(day1, "/a/", "https://www.google.com/"),
        view(day1 + dt.timedelta(minutes=1), "/b/", f"{SITE}/a/"),
        view(day1, "/a/", ip="198.51.100.9"),
        view(day1 + dt.timedelta(hours=2), "/a/", "https://www.google.com/"),
        view(day2, "/a/"),
    )
    before = daily_views(session, day1.date(), day2.date(), day2.date())
    assert rollup(session, day1.date()) == 2
    assert rollup(session, day1.date()) == 2
    session.commit()
    assert sorted(
        (r.path, r.views, r.visitors, r.entries) for r in session.scalars(select(PageViewDaily))
    ) == [("/a/", 3, 2, 3), ("/b/", 1, 1, 0)]
    assert sorted(
        (r.path, r.channel, r.source, r.views, r.visitors)
        for r in session.scalars(select(PageViewSourceDaily))
    ) == [
        ("/a/", "direct", "", 1, 1),
        ("/a/", "organic", "google", 2, 1),
        ("/b/", "organic", "google", 1, 1),
    ]
    # Roll-ups for the past, raw for today: the same numbers either way.
    assert daily_views(session, day1.date(), day2.date(), day2.date()) == before

    assert purge_raw(session, day2.date()) == 4
    session.commit()
    assert [v.day for v in session.scalars(select(PageView))] == [day2.date()]
    assert daily_views(session, day1.date(), day2.date(), day2.date()) == before
    assert daily_page_views(session, day1.date(), day2.date(), day2.date()) == [
        DailyPageViews(day1.date(), "/a/", 3, 2, 3),
        DailyPageViews(day1.date(), "/b/", 1, 1, 0),
        DailyPageViews(day2.date(), "/a/", 1, 1, 1),
    ]


def test_purge_rolls_up_a_day_first_and_today_is_always_raw(session: Session) -> None:
    day1, day2 = NOON, NOON + dt.timedelta(days=1)
    store(session, view(day1, "/a/"), view(day2, "/a/"))
    rollup(session, day2.date())  # a roll-up of today must not hide views still arriving
    store(session, view(day2 + dt.timedelta(minutes=1), "/a/", ip="198.51.100.99"))
    totals = daily_page_views(session, day2.date(), day2.date(), day2.date())
    assert [(t.views, t.visitors) for t in totals] == [(2, 2)]
    # day1 was never rolled up: purging its raw views rolls it up first.
    assert purge_raw(session, day2.date()) == 1
    assert sorted((r.day, r.views) for r in session.scalars(select(PageViewDaily))) == [
        (day1.date(), 1),
        (day2.date(), 1),
    ]


def test_maintenance_rolls_up_purges_raw_salts_and_visits(session: Session) -> None:
    old = NOON - dt.timedelta(days=100)
    store(session, view(old, "/a/"), view(NOON - dt.timedelta(days=1), "/b/"), view(NOON, "/c/"))
    report = maintain(session, settings(TRACKING_RAW_RETENTION_DAYS=90), NOON)
    session.commit()
    assert report.rolled_up == [old.date(), (NOON - dt.timedelta(days=1)).date()]
    assert report.raw_purged == 1
    assert report.salts_purged == 1  # the old day's; yesterday's and today's stay
    assert report.visits_purged == 2  # the visits that ended; today's may continue
    assert sorted(session.scalars(select(PageView.path))) == ["/b/", "/c/"]
    assert count_rows(session, PageViewDaily) == 2
    assert count_rows(session, PageVisit) == 1


def count_rows(session: Session, model: type[Any]) -> int:
    """Return how many rows a table holds, in this session."""
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --- path rules and the theme -------------------------------------------------------------


def test_page_path_rules() -> None:
    assert page_path("/products/tent/index.html?x=1#top", SITE_INFO) == ("/products/tent/", "x=1")
    assert page_path("https://www.shop.test/", SITE_INFO) == ("/", "")
    assert page_path("https://other.test/", SITE_INFO) is Discard.FOREIGN_HOST
    assert page_path("/api/events", SITE_INFO) is Discard.NOT_A_PAGE
    assert page_path("/healthz", SITE_INFO) is Discard.NOT_A_PAGE
    assert page_path("/assets/x.svg", SITE_INFO) is Discard.NOT_A_PAGE
    assert page_path("/apiary/", SITE_INFO) == ("/apiary/", "")


def test_beacon_script_is_small_and_keeps_no_state() -> None:
    script = (REPO / "templates" / "assets" / "beacon.js").read_text(encoding="utf-8")
    assert len(script.encode()) < 1024
    for forbidden in ("cookie", "localStorage", "sessionStorage", "http://", "https://"):
        assert forbidden not in script
    assert "sendBeacon" in script and "keepalive" in script and "text/plain" in script


def test_partial_renders_the_script_and_the_noscript_pixel(config: dict[str, Any]) -> None:
    env = make_environment({**config, "API_URL": "https://api.shop.test"})
    template = env.get_template("partials/beacon.html.j2")
    page = type("Page", (), {"path": "/products/tent & co/"})()
    rendered = template.render(page=page)
    tree = lxml_html.fromstring(f"<div>{rendered}</div>")
    [script] = tree.findall(".//script")
    assert script.get("data-api") == "https://api.shop.test/api/events"
    assert script.get("src") == "https://shop.test/assets/beacon.js"
    assert script.get("defer") is not None
    assert 'src="https://api.shop.test/api/events.gif?p=/products/tent%20%26%20co/"' in rendered
    assert "<noscript><img " in rendered and 'alt=""' in rendered
    with pytest.raises(jinja2.UndefinedError):
        template.render()
