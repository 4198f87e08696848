"""``POST /api/events`` (the beacon) and ``GET /api/events.gif`` (the no-JavaScript pixel).

Both answer 202 only once the view is committed, or when it is dropped by a documented rule
(:class:`engine.pageviews.Discard`: a bot, a host that is not the site's, a path that is
not a page); the two cases get the same answer. A body that is not a page view at all
(broken JSON, no page) gets 400: nothing was stored, and whoever wrote the sender should
see it in the browser's network panel, though a beacon itself never reads the answer.

Every page of a site sends one, so these two routes see more requests than all others
together. :class:`EventRoutes` answers them in front of Flask, straight from the WSGI
environment (no request context, no routing, no response object); Flask keeps the routes
for everything else about them (the CORS preflight, ``HEAD``, 405 for other methods), and
its views give the same answers through the same :class:`EventIntake`.

Views are written by one thread per process that commits whatever queued up while the
previous commit ran (a group commit): SQLite has one writer at a time, and one commit of
many rows costs about what a commit of one row costs. Each request waits for its own row's
commit before answering.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import Connection
from werkzeug.http import HTTP_STATUS_CODES, parse_options_header
from werkzeug.wsgi import get_content_length

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

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

bp = Blueprint("events", __name__)
log = logging.getLogger(__name__)

#: A page view is under 1 kB; anything far larger is not one.
MAX_BODY_BYTES = 8 * 1024
#: The writer thread stops after this long without views (and starts again on the next).
WRITER_IDLE_SECONDS = 5.0
#: SQLite's own default: the WAL is copied into the database every this many pages.
SQLITE_AUTOCHECKPOINT_PAGES = 1000
#: A checkpoint is started after this many views (about 1,000 pages of WAL).
CHECKPOINT_ROWS = 400
#: Past this many pages (about 40 MB) the writer checkpoints itself, so the WAL starts over.
WAL_LIMIT_PAGES = 10_000
#: At most this many campaign parameters are read from a beacon's ``u`` object.
MAX_PARAMS = 30
MAX_PARAM_LENGTH = 200

#: A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

JSON_TYPES = ("text/plain", "application/json", "")

BEACON_PATH = "/api/events"
PIXEL_PATH = "/api/events.gif"

#: An answer: status line, headers and body, as WSGI takes them.
Answer = tuple[str, list[tuple[str, str]], bytes]


def _status(code: int) -> str:
    # The status lines Flask (werkzeug) would send.
    return f"{code} {HTTP_STATUS_CODES[code].upper()}"


class BadEvent(ValueError):
    """A request that is not a page view at all (broken JSON, no page)."""


class TooLarge(Exception):
    """A body over ``MAX_BODY_BYTES``."""


class _Ticket:
    """One queued view: the request waits on ``done``; ``stored`` says how it went."""

    __slots__ = ("done", "stored", "view")

    def __init__(self, view: PendingView) -> None:
        self.view = view
        self.stored = False
        # A plain lock taken now and released by the writer: the cheapest thing to wait on.
        self.done = threading.Lock()
        self.done.acquire()

    def resolve(self, stored: bool) -> None:
        """Record the outcome and wake the waiting request."""
        self.stored = stored
        self.done.release()


_STOP = object()


class EventWriter:
    """One thread that inserts queued views in batches and wakes each view's request."""

    def __init__(self, database: Database, site: TrackingSite, max_rows: int) -> None:
        self.database = database
        self.site = site
        self.max_rows = max(1, max_rows)
        self.salts = SaltCache()
        self.visits = VisitCache()
        self._queue: queue.SimpleQueue[_Ticket | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def store(self, view: PendingView, timeout: float) -> bool:
        """Queue a view and wait for its commit; False if it failed or took over ``timeout``."""
        ticket = _Ticket(view)
        self._queue.put(ticket)
        # Looked at under the lock: a writer stopping for lack of views decides under it too,
        # so either it sees this view queued or this request sees it gone.
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="engine-events", daemon=True)
                self._thread.start()
        # Not committed in time (or not known to be): the caller answers 503.
        return ticket.done.acquire(timeout=timeout) and ticket.stored

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
                    if isinstance(item, _Ticket):
                        item.resolve(False)

    def _loop(self) -> None:
        # One connection for the thread's life: no pool checkout or reset per batch.
        with self.database.engine.connect() as connection:
            if connection.dialect.name != "sqlite":
                self._serve(connection, None)
                return
            driver = connection.connection.driver_connection
            assert driver is not None
            # SQLite copies its WAL into the database file (a checkpoint, with two fsyncs)
            # inside the COMMIT that crosses 1,000 pages: every ~20 batches a batch's
            # requests would wait for it. The checkpoints run beside the writer instead.
            driver.execute("PRAGMA wal_autocheckpoint=0")
            checkpointer = _Checkpointer(self.database)
            try:
                self._serve(connection, checkpointer)
            finally:
                checkpointer.stop()
                driver.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")

    def _serve(self, connection: Connection, checkpointer: _Checkpointer | None) -> None:
        written = 0
        while True:
            try:
                first = self._queue.get(timeout=WRITER_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    # store() queues before it looks at _thread, so an empty queue
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
            tickets = [item for item in batch if isinstance(item, _Ticket)]
            if tickets:
                self._write(connection, tickets)
                written += len(tickets)
                if checkpointer is not None and written >= CHECKPOINT_ROWS:
                    written = 0
                    checkpointer.after_commits(connection)
            if len(tickets) < len(batch):  # a stop was asked for
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return

    def _write(self, connection: Connection, batch: list[_Ticket]) -> None:
        """Commit a batch; if it fails, commit each view alone so one bad row fails alone."""
        try:
            with connection.begin():
                views = [ticket.view for ticket in batch]
                store_page_views(connection, self.site, views, self.salts, self.visits)
        except Exception:
            if len(batch) == 1:
                log.exception("page view not stored")
                batch[0].resolve(False)
                return
            for ticket in batch:
                self._write(connection, [ticket])
            return
        for ticket in batch:
            ticket.resolve(True)


class _Checkpointer:
    """Copies SQLite's WAL into the database file on its own thread, beside the writer.

    A checkpoint running beside the writer rarely finishes with nothing left to copy (new
    commits keep arriving), and SQLite only starts the WAL file over after one that does:
    once the WAL passes ``WAL_LIMIT_PAGES`` the writer runs one itself between two batches,
    when little is left to copy, and the WAL starts over with its next commit.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.wal_pages = 0
        self._wake = threading.Event()
        self._running = threading.Lock()  # held while this thread checkpoints
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="engine-checkpoint", daemon=True)
        self._thread.start()

    def after_commits(self, connection: Connection) -> None:
        """Ask for a checkpoint; run one on the writer's connection if the WAL grew large."""
        if self.wal_pages > WAL_LIMIT_PAGES or not self._thread.is_alive():
            driver = connection.connection.driver_connection
            assert driver is not None
            # After the one under way (two checkpoints never run at once): this one then
            # has only the last few batches to copy.
            with self._running:
                try:
                    [(_, pages, copied)] = driver.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    ).fetchall()
                except Exception:
                    # Views are committed either way; the next batch tries again.
                    log.exception("SQLite checkpoint after page views failed")
                    return
                self.wal_pages = pages - copied
        self._wake.set()

    def stop(self) -> None:
        """End the thread after any checkpoint under way."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            with self.database.engine.connect() as connection:
                driver = connection.connection.driver_connection
                assert driver is not None
                while True:
                    self._wake.wait()
                    self._wake.clear()
                    if self._stopping:
                        return
                    with self._running:
                        # Read to the end: a statement left open would hold a snapshot,
                        # and SQLite does not start the WAL over under a reader.
                        checkpoint = driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        [(_, self.wal_pages, _)] = checkpoint.fetchall()
        except Exception:
            # The writer runs the checkpoints itself from now on (see after_commits).
            log.exception("SQLite checkpoints beside the page-view writer stopped")


def event_writer(app: Flask) -> EventWriter:
    """Return the app's page-view writer (one per process and app)."""
    return event_intake(app).writer


def event_intake(app: Flask) -> EventIntake:
    """Return the app's page-view intake (one per process and app)."""
    intake: EventIntake | None = app.extensions.get("engine.events")
    if intake is None:
        intake = app.extensions.setdefault("engine.events", EventIntake(app))
    return intake


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


@functools.lru_cache(maxsize=64)
def _mimetype(content_type: str) -> str:
    """Return a Content-Type's media type, lower-cased (as ``request.mimetype``)."""
    return parse_options_header(content_type)[0].lower()


def _read_body(environ: WSGIEnvironment) -> bytes:
    """Return the request body, at most ``MAX_BODY_BYTES`` (as werkzeug would read it)."""
    length = get_content_length(environ)
    if length is not None and length > MAX_BODY_BYTES:
        raise TooLarge
    stream = environ["wsgi.input"]
    if "wsgi.input_terminated" in environ:
        # The server ends the stream at the body's end (waitress does, chunked bodies too).
        data: bytes = stream.read(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            raise TooLarge
        return data
    # Without a length a stream could be endless: read nothing, as werkzeug does.
    return stream.read(length) if length else b""


def _read_beacon(environ: WSGIEnvironment) -> tuple[str, str, Mapping[str, str] | str | None]:
    """Return (page, referrer, params) from a beacon's JSON body."""
    try:
        data = json.loads(_read_body(environ))
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


def _query_arg(environ: WSGIEnvironment, name: str) -> str:
    """Return a query parameter's first value, or "" (as ``request.args.get``)."""
    # Browsers percent-encode; raw bytes that are not UTF-8 become U+FFFD, not an error.
    query = environ.get("QUERY_STRING", "").encode("latin-1").decode(errors="replace")
    for key, value in parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote"):
        if key == name:
            return value
    return ""


def _error_body(message: str) -> bytes:
    return json.dumps({"errors": {"body": [message]}}).encode()


def _json_headers(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]


class EventIntake:
    """Both endpoints, straight from a WSGI environment: read, check, store, answer."""

    def __init__(self, app: Flask) -> None:
        settings = app.config
        self.site = tracking_site(settings)
        self.writer = EventWriter(get_db(app), self.site, int(settings["TRACKING_BATCH_MAX_ROWS"]))
        self.commit_timeout = float(settings["TRACKING_COMMIT_TIMEOUT_SECONDS"])

    def stop(self, timeout: float = 10.0) -> None:
        """Write the views still queued and stop the writer thread."""
        self.writer.stop(timeout)

    def beacon(self, environ: WSGIEnvironment) -> Answer:
        """Take one page view from the beacon script (JSON, usually sent as ``text/plain``)."""
        mimetype = _mimetype(environ.get("CONTENT_TYPE", ""))
        try:
            if mimetype not in JSON_TYPES:
                raise BadEvent("Send the page view as JSON (text/plain or application/json).")
            page, referrer, params = _read_beacon(environ)
        except BadEvent as exc:
            code = 400 if mimetype in JSON_TYPES else 415
            return self._cors(environ, self._error(code, str(exc)))
        except TooLarge:
            message = "The request is too large to be a page view."
            return self._cors(environ, self._error(413, message))
        problem = self._accept(environ, page, referrer, params)
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "0")]
        return self._cors(environ, problem or (_ACCEPTED, headers, b""))

    def pixel(self, environ: WSGIEnvironment) -> Answer:
        """Take one page view from the ``<noscript>`` image and answer a transparent GIF."""
        page = _query_arg(environ, "p")
        referrer = _query_arg(environ, "r")
        params: str | None = None
        if not page.strip():
            return self._cors(environ, self._error(400, "p: the page's path is required."))
        # The page's own URL arrives as the Referer (the partial asks for the full URL), and
        # its query carries the campaign parameters a page without JavaScript cannot send.
        page_url = environ.get("HTTP_REFERER", "")
        if "?" in page_url and page_url.partition("?")[0].endswith(page.partition("?")[0]):
            params = page_url.partition("?")[2].partition("#")[0]
        problem = self._accept(environ, page, referrer, params)
        if problem is not None:
            return problem
        return _ACCEPTED, list(_PIXEL_HEADERS), PIXEL

    def _foreign_sender(self, environ: WSGIEnvironment) -> bool:
        """Return True when the browser says the request came from a page not on the site."""
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None:
            return origin.strip() == "null" or not self.site.owns(origin)
        referer = environ.get("HTTP_REFERER", "")
        # No Origin and no Referer (a no-referrer policy): nothing says it is foreign.
        return bool(referer) and not self.site.owns(referer)

    def _accept(
        self,
        environ: WSGIEnvironment,
        page: str,
        referrer: str,
        params: Mapping[str, str] | str | None,
    ) -> Answer | None:
        """Store the view or drop it by rule; return an error answer, or None for 202."""
        if self._foreign_sender(environ):
            return None  # Discard.FOREIGN_HOST
        view = read_view(
            self.site,
            page=page,
            referrer=referrer,
            params=params,
            ip=environ.get("REMOTE_ADDR") or "",
            user_agent=environ.get("HTTP_USER_AGENT"),
            now=utcnow(),
        )
        if isinstance(view, Discard):
            return None
        if self.writer.store(view, self.commit_timeout):
            return None
        # Not committed (or not known to be): the only answer that is not a 2xx.
        status, headers, body = self._error(503, "Page views are briefly unavailable; try again.")
        headers.append(("Retry-After", "5"))
        return status, headers, body

    def _cors(self, environ: WSGIEnvironment, answer: Answer) -> Answer:
        status, headers, body = answer
        origin = environ.get("HTTP_ORIGIN")
        if origin and self.site.owns(origin):
            headers.append(("Access-Control-Allow-Origin", origin))
        headers.append(("Vary", "Origin"))
        headers.append(("Cache-Control", "no-store"))
        return status, headers, body

    @staticmethod
    def _error(code: int, message: str) -> Answer:
        body = _error_body(message)
        return _status(code), _json_headers(body), body


_ACCEPTED = _status(202)
_PIXEL_HEADERS = (
    ("Content-Type", "image/gif"),
    ("Content-Length", str(len(PIXEL))),
    ("Cache-Control", "no-store"),
)


class EventRoutes:
    """WSGI middleware that answers the beacon's POST and the pixel's GET before Flask."""

    def __init__(self, app: Flask, wsgi_app: WSGIApplication) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer an event request here; pass any other request on to Flask."""
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        take: Callable[[WSGIEnvironment], Answer]
        if path == BEACON_PATH and method == "POST":
            take = event_intake(self.app).beacon
        elif path == PIXEL_PATH and method == "GET":
            take = event_intake(self.app).pixel
        else:
            return self.wsgi_app(environ, start_response)
        status, headers, body = take(environ)
        start_response(status, headers)
        return [body]


def init_app(app: Flask) -> None:
    """Register the routes and answer the two hot ones in front of Flask."""
    app.register_blueprint(bp)
    app.wsgi_app = EventRoutes(app, app.wsgi_app)  # type: ignore[method-assign]


def _response(answer: Answer) -> Response:
    status, headers, body = answer
    return Response(body, status=status, headers=headers)


@bp.route(BEACON_PATH, methods=["OPTIONS"])
def beacon_preflight() -> Response:
    """Answer a CORS preflight (only senders using ``application/json`` need one)."""
    origin = request.headers.get("Origin", "")
    response = Response(status=204)
    if origin and event_intake(current_app._get_current_object()).site.owns(origin):  # type: ignore[attr-defined]
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "86400"
    response.vary.add("Origin")
    return response


@bp.post(BEACON_PATH)
def beacon() -> Response:
    """Take one page view from the beacon (reached only without :class:`EventRoutes`)."""
    intake = event_intake(current_app._get_current_object())  # type: ignore[attr-defined]
    return _response(intake.beacon(request.environ))


@bp.get(PIXEL_PATH)
def pixel() -> Response:
    """Take one page view from the pixel (``HEAD`` comes here; ``GET`` goes to EventRoutes)."""
    intake = event_intake(current_app._get_current_object())  # type: ignore[attr-defined]
    return _response(intake.pixel(request.environ))
