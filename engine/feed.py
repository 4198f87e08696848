"""The catalog feed: ``CATALOG_FEED`` (a file or an http(s) URL) re-read on a schedule.

A webhook can be lost (the store's retries ran out, the service was down); the feed is the
full truth read again, so a restock the webhook missed is still caught. The feed goes
through ``import_catalog`` (all or nothing, any supported format) with the stock source
"feed", so its restocks are recorded like any other.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from engine.catalog import ImportReport, import_catalog
from engine.db import Database

log = logging.getLogger(__name__)

#: Problems quoted in the recorded error (the rest are counted).
PROBLEMS_SHOWN = 5
#: File name suffixes the importer detects formats by.
KNOWN_SUFFIXES = (".csv", ".json")
USER_AGENT = "engine-catalog-feed/1"


class FeedError(RuntimeError):
    """The feed could not be read or was refused; nothing was changed."""


@dataclass
class FeedResult:
    """One re-read of the feed: the import report, or the error that stopped it."""

    source: str
    report: ImportReport | None = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return True when the feed was read and imported."""
        return not self.error


def is_url(feed: str) -> bool:
    """Return True when the feed is an http(s) URL rather than a file path."""
    return urlsplit(feed).scheme.lower() in ("http", "https")


def fetch(url: str, folder: Path, timeout: float) -> Path:
    """Download a feed URL into ``folder``, named so the importer can tell its format."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
            content_type = response.headers.get_content_type()
            if suffix not in KNOWN_SUFFIXES:
                suffix = ".json" if content_type.endswith("json") else ".csv"
            target = folder / f"feed{suffix}"
            with target.open("wb") as out:
                shutil.copyfileobj(response, out)
    except urllib.error.HTTPError as exc:
        raise FeedError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FeedError(f"{url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise FeedError(f"{url}: {exc}") from None
    return target


def read_feed(session: Session, feed: str, *, timeout: float) -> FeedResult:
    """Import the feed once into the caller's session (all or nothing); never raise for bad input.

    Returns the import report, or the error text (unreachable URL, missing file, rejected
    rows) with nothing changed.
    """
    result = FeedResult(source=feed)
    with tempfile.TemporaryDirectory(prefix="engine-feed-") as folder:
        try:
            path = fetch(feed, Path(folder), timeout) if is_url(feed) else Path(feed)
        except FeedError as exc:
            result.error = str(exc)
            return result
        report = import_catalog(session, path, source="feed")
    result.report = report
    result.warnings = list(report.warnings)
    if report.problems:
        shown = "; ".join(
            str(problem.located(feed)) for problem in report.problems[:PROBLEMS_SHOWN]
        )
        more = len(report.problems) - PROBLEMS_SHOWN
        extra = f" (and {more} more)" if more > 0 else ""
        result.error = (
            f"{feed}: {len(report.problems)} problem(s), nothing imported: {shown}{extra}"
        )
    return result


def refresh_catalog_feed(
    db: Database, settings: Mapping[str, Any], now: dt.datetime
) -> FeedResult | None:
    """The catalog-feed job: re-read ``CATALOG_FEED`` when it is set; errors are logged.

    A failed re-read raises FeedError after logging, so the scheduler records it in the
    job's ``last_error`` (shown by ``/healthz``) and carries on; the next run tries again.
    """
    feed = str(settings.get("CATALOG_FEED") or "").strip()
    if not feed:
        return None
    timeout = float(settings["CATALOG_FEED_TIMEOUT_SECONDS"])
    with db.session() as session:
        result = read_feed(session, feed, timeout=timeout)
    if not result.ok:
        log.warning("catalog feed not imported: %s", result.error)
        raise FeedError(result.error)
    report = result.report
    assert report is not None
    log.info("catalog feed %s: %s", feed, report.summary())
    return result
