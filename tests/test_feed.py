"""The catalog-feed job: CATALOG_FEED (a file or a local HTTP URL) catches a missed restock."""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from engine.catalog import import_catalog
from engine.db import Database, utcnow
from engine.feed import FeedError, is_url, refresh_catalog_feed
from engine.models import JobLock, StockTransition, Variant
from engine.scheduler import JOBS, run_job

SOLD_OUT = "handle,title,sku,price,stock\ntent,Dome Tent,TENT-1,299.00,0\n"
RESTOCKED = "handle,title,sku,price,stock\ntent,Dome Tent,TENT-1,299.00,7\n"
BROKEN = "handle,title,sku,price,stock\ntent,Dome Tent,TENT-1,cheap,7\n"


class QuietHandler(SimpleHTTPRequestHandler):
    """Serve files without logging each request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


@pytest.fixture
def feed_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serve a folder on 127.0.0.1; yield its base URL and the folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def sold_out_catalog(db: Database, tmp_path: Path) -> None:
    """Import a sold-out tent, as the last webhook left it."""
    path = tmp_path / "catalog.csv"
    path.write_text(SOLD_OUT, encoding="utf-8")
    with db.session() as session:
        assert import_catalog(session, path).ok


def settings_with(app: Flask, **overrides: Any) -> dict[str, Any]:
    """Return the app's settings with some replaced."""
    return {**app.config, **overrides}


def tent_state(db: Database) -> tuple[int, bool, list[tuple[bool, str]]]:
    """Return the tent's stock, sellability and recorded transitions (restock, source)."""
    with db.sessions() as session:
        tent = session.scalar(select(Variant).where(Variant.sku == "TENT-1"))
        assert tent is not None
        moves = session.execute(
            select(StockTransition.restock, StockTransition.source)
            .where(StockTransition.sku == "TENT-1")
            .order_by(StockTransition.id)
        )
        return tent.stock, tent.sellable, list(moves)


@pytest.mark.usefixtures("sold_out_catalog")
def test_a_feed_file_catches_a_missed_restock(app: Flask, db: Database, tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text(RESTOCKED, encoding="utf-8")
    result = refresh_catalog_feed(db, settings_with(app, CATALOG_FEED=str(feed)), utcnow())
    assert result is not None and result.ok and result.report is not None
    assert result.report.restocked == 1
    assert tent_state(db) == (7, True, [(True, "feed")])
    # Read again unchanged: nothing new is recorded.
    refresh_catalog_feed(db, settings_with(app, CATALOG_FEED=str(feed)), utcnow())
    assert tent_state(db) == (7, True, [(True, "feed")])


@pytest.mark.usefixtures("sold_out_catalog")
def test_a_feed_url_is_fetched_from_a_local_server(
    app: Flask, db: Database, feed_server: tuple[str, Path]
) -> None:
    base, folder = feed_server
    (folder / "products.csv").write_text(RESTOCKED, encoding="utf-8")
    url = f"{base}/products.csv"
    assert is_url(url) and not is_url("/srv/feed.csv")
    job = next(job for job in JOBS if job.name == "catalog-feed")
    run = run_job(db, settings_with(app, CATALOG_FEED=url), job, "test-owner", force=True)
    assert run.outcome == "done", run.error
    assert tent_state(db) == (7, True, [(True, "feed")])


@pytest.mark.usefixtures("sold_out_catalog")
@pytest.mark.parametrize("problem", ["missing file", "bad rows", "404", "refused", "timeout"])
def test_feed_errors_are_recorded_and_change_nothing(
    app: Flask,
    db: Database,
    tmp_path: Path,
    feed_server: tuple[str, Path],
    problem: str,
) -> None:
    base, folder = feed_server
    listener: socket.socket | None = None
    if problem == "missing file":
        feed, expected = str(tmp_path / "nowhere.csv"), "no such file"
    elif problem == "bad rows":
        (folder / "broken.csv").write_text(BROKEN, encoding="utf-8")
        feed, expected = f"{base}/broken.csv", ":2:"
    elif problem == "404":
        feed, expected = f"{base}/gone.csv", "HTTP 404"
    elif problem == "refused":
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        feed, expected = f"http://127.0.0.1:{port}/feed.csv", "refused"
    else:
        # Accepts connections (the kernel's backlog) but never answers.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        feed, expected = f"http://127.0.0.1:{listener.getsockname()[1]}/feed.csv", "timed out"
    settings = settings_with(app, CATALOG_FEED=feed, CATALOG_FEED_TIMEOUT_SECONDS=0.5)
    try:
        with pytest.raises(FeedError, match=expected):
            refresh_catalog_feed(db, settings, utcnow())
        job = next(job for job in JOBS if job.name == "catalog-feed")
        run = run_job(db, settings, job, "test-owner", force=True)
    finally:
        if listener is not None:
            listener.close()
    assert run.outcome == "failed" and expected in run.error
    with db.sessions() as session:
        lock = session.get(JobLock, "catalog-feed")
        assert lock is not None and expected in lock.last_error and lock.lease_until is None
    assert tent_state(db) == (0, False, [])


def test_no_feed_configured_does_nothing(app: Flask, db: Database) -> None:
    assert refresh_catalog_feed(db, settings_with(app, CATALOG_FEED=""), utcnow()) is None
