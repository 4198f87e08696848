"""``POST /api/events`` (the beacon) and ``GET /api/events.gif`` (the no-JavaScript pixel).

Both answer 202 only once the view is committed, or when it is dropped by a documented rule
(:class:`engine.pageviews.Discard`: a bot, a host that is not the site's, a path that is
not a page); the two cases get the same answer. A body that is not a page view at all
(broken JSON, no page) gets 400: nothing was stored, and whoever wrote the sender should
see it in the browser's network panel, though a beacon itself never reads the answer.

Views are written by one thread per process that commits whatever queued up while the
previous commit ran (a group commit): SQLite has one writer at a time, and one commit of
many rows costs about what a commit of one row costs. Each request waits for its own row's
commit before answering.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import Connection
from werkzeug.exceptions import RequestEntityTooLarge

from engine.db import Database, get_db, utcnow
from engine.pageviews import (
    Discard,
    PendingView,
    SaltCache,
    TrackingSite,
    VisitCache,
    read_view,
    store_page_views,
    tracking_site,
)

bp = Blueprint("events", __name__)
log = logging.getLogger(__name__)

#: A page view is under 1 kB; anything far larger is not one.
MAX_BODY_BYTES = 8 * 1024
#: The writer thread stops after this long without views (and starts again on the next).
WRITER_IDLE_SECONDS = 5.0
#: At most this many campaign parameters are read from a beacon's ``u`` object.
MAX_PARAMS = 30
MAX_PARAM_LENGTH = 200

#: A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

JSON_TYPES = ("text/plain", "application/json", "")


class BadEvent(ValueError):
    """A request that is not a page view at all (broken JSON, no page)."""


_STOP = object()


class EventWriter:
    """One thread that inserts queued views in batches and resolves each view's future."""

    def __init__(self, database: Database, site: TrackingSite, max_rows: int) -> None:
        self.database = database
        self.site = site
        self.max_rows = max(1, max_rows)
        self.salts = SaltCache()
        self.visits = VisitCache()
        self._queue: queue.SimpleQueue[tuple[PendingView, Future[None]] | object] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, view: PendingView) -> Future[None]:
        """Queue a view; the future resolves once it is committed (or fails with the error)."""
        future: Future[None] = Future()
        self._queue.put((view, future))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="engine-events", daemon=True)
                self._thread.start()
        return future

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread and close its connection."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            # The database is out of reach: fail what waits (503), let the next view retry.
            log.exception("page-view writer stopped")
            with self._lock:
                self._thread = None
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(item, tuple):
                        item[1].set_exception(_Unavailable())

    def _loop(self) -> None:
        # One connection for the thread's life: no pool checkout or reset per batch.
        with self.database.engine.connect() as connection:
            while True:
                try:
                    first = self._queue.get(timeout=WRITER_IDLE_SECONDS)
                except queue.Empty:
                    with self._lock:
                        # submit() queues before it looks at _thread, so an empty queue
                        # seen under the lock means every queued view has been handled.
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                batch = [first]
                while len(batch) < self.max_rows:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stopping = any(item is _STOP for item in batch)
                views = [item for item in batch if item is not _STOP]
                if views:
                    self._write(connection, views)  # type: ignore[arg-type]
                if stopping:
                    with self._lock:
                        if self._queue.empty():
                            self._thread = None
                            return

    def _write(self, connection: Connection, batch: list[tuple[PendingView, Future[None]]]) -> None:
        """Commit a batch; if it fails, commit each view alone so one bad row fails alone."""
        try:
            with connection.begin():
                views = [view for view, _ in batch]
                store_page_views(connection, self.site, views, self.salts, self.visits)
        except Exception:
            if len(batch) == 1:
                log.exception("page view not stored")
                batch[0][1].set_exception(_Unavailable())
                return
            for item in batch:
                self._write(connection, [item])
            return
        for _, future in batch:
            future.set_result(None)


class _Unavailable(RuntimeError):
    """The database did not take the view; nothing was stored."""


def event_writer(app: Flask) -> EventWriter:
    """Return the app's page-view writer (one per process and app)."""
    writer: EventWriter | None = app.extensions.get("engine.events")
    if writer is None:
        settings = app.config
        writer = EventWriter(
            get_db(app), tracking_site(settings), int(settings["TRACKING_BATCH_MAX_ROWS"])
        )
        writer = app.extensions.setdefault("engine.events", writer)
    return writer


def _params(value: Any) -> Mapping[str, str] | str | None:
    """Return the campaign parameters sent as ``u``: an object, or a query string."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise BadEvent("u: send an object of parameters or the page's query string.")
    params: dict[str, str] = {}
    for key, item in list(value.items())[:MAX_PARAMS]:
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            params[str(key)[:MAX_PARAM_LENGTH]] = str(item)[:MAX_PARAM_LENGTH]
    return params


def _read_beacon() -> tuple[str, str, Mapping[str, str] | str | None]:
    """Return (page, referrer, params) from a beacon's JSON body."""
    if request.mimetype not in JSON_TYPES:
        raise BadEvent("Send the page view as JSON (text/plain or application/json).")
    request.max_content_length = MAX_BODY_BYTES
    try:
        data = json.loads(request.get_data(cache=False))
    except (ValueError, UnicodeDecodeError):
        raise BadEvent("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadEvent('Send one JSON object: {"p": page, "r": referrer, "u": parameters}.')
    page, referrer = data.get("p"), data.get("r") or ""
    if not isinstance(page, str) or not page.strip():
        raise BadEvent("p: the page's path or URL is required.")
    if not isinstance(referrer, str):
        raise BadEvent("r: the referrer must be a string.")
    return page, referrer, _params(data.get("u"))


def _foreign_sender(site: TrackingSite) -> bool:
    """Return True when the browser says the request came from a page not on the site."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.strip() == "null" or not site.owns(origin)
    referer = request.headers.get("Referer", "")
    # No Origin and no Referer (a no-referrer policy): nothing says it is foreign.
    return bool(referer) and not site.owns(referer)


def _accept(page: str, referrer: str, params: Mapping[str, str] | str | None) -> Response | None:
    """Store the view or drop it by rule; return an error answer, or None for 202."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    writer = event_writer(app)
    site = writer.site
    if _foreign_sender(site):
        return None  # Discard.FOREIGN_HOST
    view = read_view(
        site,
        page=page,
        referrer=referrer,
        params=params,
        ip=request.remote_addr or "",
        user_agent=request.headers.get("User-Agent"),
        now=utcnow(),
    )
    if isinstance(view, Discard):
        return None
    try:
        writer.submit(view).result(timeout=float(app.config["TRACKING_COMMIT_TIMEOUT_SECONDS"]))
    except (_Unavailable, FutureTimeout):
        # Not committed (or not known to be): the only answer that is not a 2xx.
        response = _error(503, "Page views are briefly unavailable; try again.")
        response.headers["Retry-After"] = "5"
        return response
    return None


def _cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin and event_writer(current_app._get_current_object()).site.owns(origin):  # type: ignore[attr-defined]
        response.headers["Access-Control-Allow-Origin"] = origin
    response.vary.add("Origin")
    response.headers["Cache-Control"] = "no-store"
    return response


def _error(status: int, message: str) -> Response:
    body = json.dumps({"errors": {"body": [message]}})
    return Response(body, status=status, mimetype="application/json")


@bp.route("/api/events", methods=["OPTIONS"])
def beacon_preflight() -> Response:
    """Answer a CORS preflight (only senders using ``application/json`` need one)."""
    origin = request.headers.get("Origin", "")
    response = Response(status=204)
    if origin and event_writer(current_app._get_current_object()).site.owns(origin):  # type: ignore[attr-defined]
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "86400"
    response.vary.add("Origin")
    return response


@bp.post("/api/events")
def beacon() -> Response:
    """Take one page view from the beacon script (JSON, usually sent as ``text/plain``)."""
    try:
        page, referrer, params = _read_beacon()
    except BadEvent as exc:
        return _cors(_error(400 if request.mimetype in JSON_TYPES else 415, str(exc)))
    except RequestEntityTooLarge:
        return _cors(_error(413, "The request is too large to be a page view."))
    problem = _accept(page, referrer, params)
    return _cors(problem or Response(status=202, mimetype="text/plain"))


@bp.get("/api/events.gif")
def pixel() -> Response:
    """Take one page view from the ``<noscript>`` image and answer a transparent GIF."""
    page = request.args.get("p", "")
    referrer = request.args.get("r", "")
    params: str | None = None
    if not page.strip():
        return _cors(_error(400, "p: the page's path is required."))
    # The page's own URL arrives as the Referer (the partial asks for the full URL), and
    # its query carries the campaign parameters a page without JavaScript cannot send.
    page_url = request.headers.get("Referer", "")
    if "?" in page_url and page_url.partition("?")[0].endswith(page.partition("?")[0]):
        params = page_url.partition("?")[2].partition("#")[0]
    problem = _accept(page, referrer, params)
    if problem is not None:
        return problem
    response = Response(PIXEL, status=202, mimetype="image/gif")
    response.headers["Cache-Control"] = "no-store"
    return response
