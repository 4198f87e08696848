"""Where each planned page, asset and redirect goes: checked before anything is written."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from engine.publish.errors import PublishError, UnsafePathError

#: First path segments the web service owns; no page may live under them.
SERVICE_PREFIXES = ("api", "hooks", "waitlist", "unsubscribe", "admin", "healthz")

_GENERATED = re.compile(r"^/(sitemap(-\d+)?\.xml|robots\.txt|_redirects|redirects\.nginx\.conf)$")
# Whitespace, control characters, backslashes, quotes and the characters that end or
# nest an nginx directive or a URL path: none belongs in a published path, and each one
# could turn a redirect rule file into something else.
UNSAFE = re.compile(r"[\x00-\x20\x7f\\\"'`<>{};#?|^]")


class PlannedPage(Protocol):
    """What publish needs of a page plan (``engine.pages.PagePlan``)."""

    @property
    def path(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def indexable(self) -> bool: ...


class PlannedRedirect(Protocol):
    """What publish needs of a redirect (``engine.pages.Redirect``)."""

    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str | None: ...
    @property
    def status(self) -> int: ...


class PlannedSite(Protocol):
    """What publish needs of a site plan (``engine.pages.Site``)."""

    @property
    def pages(self) -> Sequence[Any]: ...
    @property
    def redirects(self) -> Sequence[Any]: ...
    @property
    def assets(self) -> Mapping[str, Path]: ...


def file_for_path(url_path: str) -> str:
    """Return the output file (relative POSIX path) for a URL path; refuse unsafe ones.

    ``/products/x/`` is written as ``products/x/index.html``; ``/404.html`` as itself.
    """
    if not isinstance(url_path, str) or not url_path.startswith("/"):
        raise UnsafePathError(f"{url_path!r}: a published path must start with '/'")
    decoded = unquote(url_path)
    for candidate in (url_path, decoded):
        if UNSAFE.search(candidate):
            raise UnsafePathError(
                f"{url_path!r}: whitespace, control characters, backslashes, quotes and "
                "'<>{};#?|^`' are not allowed in a published path"
            )
        segments = candidate[1:].split("/")
        if candidate.endswith("/"):
            segments = segments[:-1]
        for segment in segments:
            if segment in ("", ".", ".."):
                raise UnsafePathError(
                    f"{url_path!r}: empty, '.' and '..' path segments are not allowed"
                )
    return url_path[1:] + ("index.html" if url_path.endswith("/") else "")


def safe_join(root: Path | str, relative: str) -> str:
    """Join a checked relative path to a root, refusing anything that lands outside it."""
    base = os.path.normpath(os.fspath(root))
    target = os.path.normpath(os.path.join(base, relative))
    if os.path.isabs(relative) or not target.startswith(base + os.sep):
        raise UnsafePathError(f"{relative!r} would be written outside {base}")
    return target


def check_base_url(base_url: str) -> str:
    """Return the site's base URL without a trailing slash, or refuse a relative one."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise PublishError(
            f"base URL {base_url!r}: use an absolute http(s) URL such as https://shop.example.com"
        )
    return base_url.rstrip("/")


def _check_site_path(url_path: str, what: str) -> str:
    """Return the output file for a page or asset path, refusing service and generated paths."""
    relative = file_for_path(url_path)
    first = url_path[1:].split("/", 1)[0]
    if first in SERVICE_PREFIXES:
        raise UnsafePathError(
            f"{what} {url_path!r}: /{first} is reserved for the web service; choose another path"
        )
    if _GENERATED.match(url_path):
        raise UnsafePathError(f"{what} {url_path!r}: this file name is written by engine build")
    return relative


def _check_redirect_target(target: str) -> str:
    """Return a redirect target (a site path or an absolute http(s) URL) once checked."""
    if target.startswith("/"):
        file_for_path(target)
        return target
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc or UNSAFE.search(target):
        raise UnsafePathError(
            f"redirect target {target!r}: use a site path or an absolute http(s) URL"
        )
    return target


@dataclass
class OutputPlan:
    """Checked output files of a site plan, before anything is rendered."""

    page_files: list[str]
    redirects: list[PlannedRedirect]
    assets: list[tuple[str, str, Path]]  # (URL path, file, source)


def plan_output(site: PlannedSite) -> OutputPlan:
    """Check every output path of a site plan: inside the folder, each written once."""
    owners: dict[str, str] = {}

    def claim(url_path: str, relative: str, what: str) -> None:
        if relative in owners:
            raise PublishError(
                f"{relative} would be written twice: by {owners[relative]} and by {what} {url_path}"
            )
        owners[relative] = f"{what} {url_path}"

    page_files: list[str] = []
    for page in site.pages:
        if not page.template:
            # Carried over unchanged from the live site, whose paths were checked together
            # when it was planned (a partial plan has exactly the live site's pages).
            relative = page.path[1:] + ("index.html" if page.path.endswith("/") else "")
            page_files.append(relative)
            continue
        relative = _check_site_path(page.path, "page")
        claim(page.path, relative, "page")
        page_files.append(relative)
    assets: list[tuple[str, str, Path]] = []
    for url_path, source in sorted(site.assets.items()):
        relative = _check_site_path(url_path, "asset")
        claim(url_path, relative, "asset")
        assets.append((url_path, relative, Path(source)))
    parents: set[str] = set()
    for relative in owners:
        folder = os.path.dirname(relative)
        while folder and folder not in parents:
            parents.add(folder)
            folder = os.path.dirname(folder)
    for relative, owner in owners.items():
        if relative in parents:
            raise PublishError(
                f"{owner} is written as {relative}, which other pages need as a folder"
            )
    redirects: list[PlannedRedirect] = []
    sources: set[str] = set()
    page_paths = {page.path for page in site.pages}
    for redirect in sorted(site.redirects, key=lambda r: r.source):
        file_for_path(redirect.source)
        if redirect.status not in (301, 302, 307, 308, 410):
            raise PublishError(f"redirect {redirect.source}: unsupported status {redirect.status}")
        if (redirect.status == 410) != (redirect.target is None):
            raise PublishError(f"redirect {redirect.source}: a 410 has no target; others need one")
        if redirect.target is not None:
            _check_redirect_target(redirect.target)
        if redirect.source in sources:
            raise PublishError(f"redirect {redirect.source} is planned twice")
        if redirect.source in page_paths:
            raise PublishError(f"redirect {redirect.source} would hide the page at the same path")
        sources.add(redirect.source)
        redirects.append(redirect)
    return OutputPlan(page_files=page_files, redirects=redirects, assets=assets)
