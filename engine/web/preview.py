"""Live preview of every page, byte-identical to what ``engine build`` writes.

A catch-all ``GET`` route with the lowest priority: every other blueprint's routes
(``/api/``, ``/hooks/``, ``/waitlist/``, ``/unsubscribe/``, ``/admin/``, ``/healthz``) match
first, and paths under those prefixes never become pages here.

Each request reads the catalog rows and checks the content and theme files, so the preview
always shows things as they are now, and renders only the page asked for. The site plan
is kept between requests and made again only when the rows' digest, the content files'
digest, a template, or a setting differs.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from flask import Blueprint, Response, abort, current_app, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import MethodNotAllowed

from engine.content import Content, ContentErrors, load_content
from engine.db import get_db
from engine.pages import (
    GONE_PATH,
    NOT_FOUND_PATH,
    Site,
    make_environment,
    plan_site,
    read_catalog,
    render_page,
    site_info,
    template_digest,
)
from engine.urls import is_reserved

bp = Blueprint("preview", __name__)

HTML = "text/html; charset=utf-8"
_SAFE_PATH = "/:@!$&'()*+,;=~"

_environments: dict[tuple[str, str], jinja2.Environment] = {}
_environments_lock = threading.Lock()


def environment(settings: Mapping[str, Any]) -> jinja2.Environment:
    """Return the page environment, made anew only when a template or setting changed."""
    key = (template_digest(settings), site_info(settings).digest)
    with _environments_lock:
        env = _environments.get(key)
        if env is None:
            _environments.clear()  # an older theme's compiled templates and fragments
            env = _environments[key] = make_environment(settings)
    return env


def content_stamp(folder: Path) -> str:
    """Return a digest of every file under the content folder (names and bytes).

    Bytes, not modification times: two saves within one filesystem clock tick must not
    leave the preview showing the first.
    """
    digest = hashlib.blake2b(digest_size=16)
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(path.encode() + b"\x00")
            with open(path, "rb") as handle:
                digest.update(handle.read())
            digest.update(b"\x00")
    return digest.hexdigest()


@dataclass
class _PlanCache:
    """The last plan made for an app, and what it was made from."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    key: tuple[Any, ...] | None = None
    site: Site | None = None
    stamp: str | None = None
    content: Content | None = None


def current_site() -> Site:
    """Return the site plan for the catalog, content, theme and settings as they are now."""
    settings = current_app.config
    cache: _PlanCache = current_app.extensions.setdefault("engine.preview", _PlanCache())
    folder = Path(str(settings["CONTENT_DIR"]))
    stamp = content_stamp(folder)
    with get_db().sessions() as session:
        rows = read_catalog(session)
    key = (stamp, rows.digest(), template_digest(settings), site_info(settings).digest)
    with cache.lock:
        if cache.key == key and cache.site is not None:
            return cache.site
        content = cache.content if cache.stamp == stamp and cache.content else None
        if content is None:
            cache.stamp, cache.content = None, None
            content = load_content(folder)
            cache.stamp, cache.content = stamp, content
        with get_db().sessions() as session:
            site = plan_site(session, settings, content, rows=rows)
        cache.key, cache.site = key, site
        return site


@bp.get("/", defaults={"path": ""})
@bp.get("/<path:path>")
def page(path: str) -> ResponseReturnValue:
    """Answer a page, a redirect, a gone page, an asset or the 404 page."""
    url_path = quote(request.path, safe=_SAFE_PATH)
    if is_reserved(request.path):
        _refuse_reserved()
    started = time.perf_counter()
    try:
        site = current_site()
    except ContentErrors as exc:
        return _content_errors(exc)
    env = environment(current_app.config)

    asset = site.assets.get(url_path)
    if asset is not None:
        # Whole bytes, not a stream: theme and content files are small, and no file
        # handle outlives the request.
        response = Response(asset.read_bytes(), mimetype=_mimetype(asset))
        response.headers["Cache-Control"] = "no-store"
        return response

    found = site.page(url_path)
    if found is None and url_path.endswith("/index.html"):
        found = site.page(url_path.removesuffix("index.html"))
    if found is not None and found.path not in (NOT_FOUND_PATH, GONE_PATH):
        return _html(render_page(env, found), 200, started)

    rule = site.redirect(url_path) or site.redirect(url_path.removesuffix("index.html"))
    if rule is not None:
        if rule.target is not None:
            return _redirect(rule.target)
        gone = site.page(GONE_PATH) or site.page(NOT_FOUND_PATH)
        return _html(render_page(env, gone) if gone else b"Gone", 410, started)

    if not url_path.endswith("/") and site.page(url_path + "/") is not None:
        return _redirect(url_path + "/")  # what static hosts do for a folder
    missing = site.page(NOT_FOUND_PATH)
    return _html(render_page(env, missing) if missing else b"Not found", 404, started)


def _refuse_reserved() -> None:
    """Answer a reserved path the way the service would: 405 if routed there, else 404."""
    adapter = current_app.create_url_adapter(request)
    methods: set[str] = set()
    if adapter is not None:
        methods = set(adapter.allowed_methods(request.path)) - {"GET", "HEAD", "OPTIONS"}
    if methods:
        raise MethodNotAllowed(valid_methods=sorted(methods | {"OPTIONS"}))
    abort(404)


def _html(body: bytes, status: int, started: float) -> Response:
    response = Response(body, status=status, content_type=HTML)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Server-Timing"] = f"page;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


def _redirect(target: str) -> Response:
    response = Response(status=301)
    response.headers["Location"] = target
    response.headers["Cache-Control"] = "no-store"
    return response


def _mimetype(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    if path.suffix == ".svg":
        return "image/svg+xml"
    return guessed or "application/octet-stream"


def _content_errors(exc: ContentErrors) -> Response:
    """Show the marketer what to fix, file by file, instead of a server error."""
    items = "\n".join(f"<li><code>{html.escape(str(error))}</code></li>" for error in exc.errors)
    body = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n<title>Content needs fixing</title>\n'
        "<style>body{font:1rem/1.6 system-ui,sans-serif;margin:2rem auto;max-width:50rem;"
        "padding:0 1rem;color:#1c2321}code{background:#f8e3e5;padding:.1rem .3rem;"
        "border-radius:4px}li{margin:.4rem 0}</style>\n</head>\n<body>\n<main>\n"
        "<h1>Content needs fixing</h1>\n"
        f"<p>The site cannot be previewed until {len(exc.errors)} problem"
        f"{'' if len(exc.errors) == 1 else 's'} in the content folder "
        f"{'is' if len(exc.errors) == 1 else 'are'} fixed (file:line: what is wrong):</p>\n"
        f"<ul>\n{items}\n</ul>\n<p>Save the files and reload this page.</p>\n</main>\n"
        "</body>\n</html>\n"
    )
    response = Response(body, status=503, content_type=HTML)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Retry-After"] = "5"
    return response
