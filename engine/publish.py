"""Static build: incremental, atomic generations, sitemaps, robots.txt and redirect rules.

The published folder (``OUTPUT_DIR``) is a symlink to the site folder of the live
*generation*. A build that changes anything writes a new generation beside it, in
``.<name>.generations/<n>/``: changed files are written fresh, unchanged ones are
hard-linked from the live generation, and one ``os.replace`` of a symlink switches the
site. A build that fails half-way leaves the live site exactly as it was.

::

    instance/site -> .site.generations/7/site
    instance/.site.generations/7/site/…          the published files
    instance/.site.generations/7/manifest.json   path -> key, sha256, lastmod
    instance/.site.generations/6/…               older generations (BUILD_GENERATIONS_KEPT)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: First path segments the web service owns; no page may live under them.
SERVICE_PREFIXES = ("api", "hooks", "waitlist", "unsubscribe", "admin", "healthz")
#: sitemaps.org: at most 50,000 URLs and 50 MB (52,428,800 bytes) uncompressed per file.
SITEMAP_MAX_BYTES = 50 * 1024 * 1024
#: Below this many stale pages, forking workers costs more than it saves.
PARALLEL_MIN_PAGES = 400
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
ROBOTS_PATH = "/robots.txt"
SITEMAP_PATH = "/sitemap.xml"
NETLIFY_REDIRECTS_PATH = "/_redirects"
NGINX_REDIRECTS_PATH = "/redirects.nginx.conf"
NOT_FOUND_PATH = "/404.html"

_GENERATED = re.compile(r"^/(sitemap(-\d+)?\.xml|robots\.txt|_redirects|redirects\.nginx\.conf)$")
# Whitespace, control characters, backslashes, quotes and the characters that end or
# nest an nginx directive or a URL path: none belongs in a published path, and each one
# could turn a redirect rule file into something else.
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\\"'`<>{};#?|^]")
_GENERATION_NAME = re.compile(r"^\d+$")


class PublishError(Exception):
    """The site cannot be published as planned (unsafe path, foreign output folder, …)."""


class UnsafePathError(PublishError):
    """A path would escape the output folder or cannot be served as a plain file."""


class PageRenderError(PublishError):
    """A page failed to render; nothing was published."""


class PublishCommandError(PublishError):
    """``PUBLISH_COMMAND`` failed; the site is built and live, but was not deployed."""

    def __init__(self, message: str, report: BuildReport) -> None:
        super().__init__(message)
        self.report = report


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


@dataclass
class BuildReport:
    """What one build did; counts are output files (pages, assets, sitemaps, rules)."""

    written: int
    unchanged: int
    removed: int
    seconds: float
    output: Path
    rendered: int = 0
    changed: bool = False
    generation: Path | None = None
    publish: str = "not configured"
    phases: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- paths


def file_for_path(url_path: str) -> str:
    """Return the output file (relative POSIX path) for a URL path; refuse unsafe ones.

    ``/products/x/`` is written as ``products/x/index.html``; ``/404.html`` as itself.
    """
    if not isinstance(url_path, str) or not url_path.startswith("/"):
        raise UnsafePathError(f"{url_path!r}: a published path must start with '/'")
    decoded = unquote(url_path)
    for candidate in (url_path, decoded):
        if _UNSAFE.search(candidate):
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
    if parts.scheme not in ("http", "https") or not parts.netloc or _UNSAFE.search(target):
        raise UnsafePathError(
            f"redirect target {target!r}: use a site path or an absolute http(s) URL"
        )
    return target


def check_base_url(base_url: str) -> str:
    """Return the site's base URL without a trailing slash, or refuse a relative one."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise PublishError(
            f"base URL {base_url!r}: use an absolute http(s) URL such as https://shop.example.com"
        )
    return base_url.rstrip("/")


# ------------------------------------------------------------------ generated files


def absolute_url(base_url: str, url_path: str) -> str:
    """Return the absolute, percent-encoded URL of a site path."""
    return base_url + quote(url_path, safe="/:@!$&'()*+,;=-._~%")


def sitemap_files(
    entries: Sequence[tuple[str, str]],
    base_url: str,
    *,
    max_urls: int = 50_000,
    max_bytes: int = SITEMAP_MAX_BYTES,
) -> dict[str, bytes]:
    """Return ``{path: bytes}``: one ``/sitemap.xml``, or an index plus numbered sitemaps.

    ``entries`` are ``(path, lastmod)`` pairs in the order they should appear.
    """
    head = f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{SITEMAP_NS}">\n'
    tail = "</urlset>\n"
    overhead = len(head.encode()) + len(tail.encode())
    chunks: list[list[str]] = [[]]
    lastmods: list[str] = [""]
    size = overhead
    for url_path, lastmod in entries:
        loc = escape(absolute_url(base_url, url_path), {'"': "&quot;", "'": "&apos;"})
        item = f"<url><loc>{loc}</loc><lastmod>{lastmod}</lastmod></url>\n"
        item_size = len(item.encode())
        if chunks[-1] and (len(chunks[-1]) >= max_urls or size + item_size > max_bytes):
            chunks.append([])
            lastmods.append("")
            size = overhead
        chunks[-1].append(item)
        lastmods[-1] = max(lastmods[-1], lastmod)
        size += item_size
    if len(chunks) == 1:
        return {SITEMAP_PATH: (head + "".join(chunks[0]) + tail).encode()}
    files: dict[str, bytes] = {}
    index = [f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="{SITEMAP_NS}">\n']
    for number, (chunk, lastmod) in enumerate(zip(chunks, lastmods, strict=True), start=1):
        path = f"/sitemap-{number}.xml"
        files[path] = (head + "".join(chunk) + tail).encode()
        loc = escape(absolute_url(base_url, path))
        index.append(f"<sitemap><loc>{loc}</loc><lastmod>{lastmod}</lastmod></sitemap>\n")
    index.append("</sitemapindex>\n")
    files[SITEMAP_PATH] = "".join(index).encode()
    return files


def robots_txt(base_url: str) -> bytes:
    """Return robots.txt: everything allowed but the service's routes, and the sitemap."""
    lines = ["User-agent: *", "Allow: /"]
    for prefix in SERVICE_PREFIXES:
        lines.append(f"Disallow: /{prefix}" + ("" if prefix == "healthz" else "/"))
    lines += ["", f"Sitemap: {absolute_url(base_url, SITEMAP_PATH)}", ""]
    return "\n".join(lines).encode()


def netlify_redirects(redirects: Sequence[PlannedRedirect]) -> bytes:
    """Return a ``_redirects`` file (Netlify and Cloudflare Pages format).

    A 410 is written as a rewrite to ``/404.html`` with status 410: Netlify serves the 404
    page with that status; Cloudflare Pages supports only 301/302/303/307/308 (and 200
    proxies), ignores the line, and the removed page answers 404 with the same 404 page.
    """
    lines = [
        "# Redirect rules for Netlify and Cloudflare Pages, written by `engine build`.",
        "# 410 lines: Netlify answers 410 Gone; Cloudflare Pages ignores them (404).",
    ]
    for redirect in redirects:
        if redirect.status == 410:
            lines.append(f"{redirect.source} {NOT_FOUND_PATH} 410")
        else:
            lines.append(f"{redirect.source} {redirect.target} {redirect.status}")
    return ("\n".join(lines) + "\n").encode()


def nginx_redirects(redirects: Sequence[PlannedRedirect], base_url: str) -> bytes:
    """Return an nginx snippet of exact-match locations to include in the site's server block."""
    lines = [
        "# Redirect rules written by `engine build`; include inside the site's server { } block:",
        "#     include /path/to/site/redirects.nginx.conf;",
        "#     error_page 404 /404.html;",
    ]
    for redirect in redirects:
        sources = [redirect.source]
        if redirect.source.endswith("/") and redirect.source != "/":
            sources.append(redirect.source.rstrip("/"))
        if redirect.status == 410:
            action = "return 410;"
        else:
            target = redirect.target or "/"
            target = target if not target.startswith("/") else absolute_url(base_url, target)
            action = f"return {redirect.status} {target};"
        lines += [f"location = {source} {{ {action} }}" for source in sources]
    return ("\n".join(lines) + "\n").encode()


# ----------------------------------------------------------------- the output folder


class OutputFolder:
    """The published symlink, its generations folder and the live generation."""

    def __init__(self, out: Path) -> None:
        self.out = Path(os.path.abspath(out))
        if self.out.name in ("", ".", ".."):
            raise PublishError(f"{out}: choose a named folder for the site")
        self.generations = self.out.parent / f".{self.out.name}.generations"

    def live(self) -> Path | None:
        """Return the live generation folder, or None before the first build.

        Refuses an output path that exists and was not made by ``engine build``.
        """
        out = self.out
        if out.is_symlink():
            link = os.readlink(out)
            target = Path(os.path.normpath(os.path.join(out.parent, link)))
            if target.parent.parent != self.generations or target.name != "site":
                raise PublishError(
                    f"{out} is a symlink to {link}, not to a site built by engine build; "
                    "remove it or choose another --out"
                )
            return target.parent if target.is_dir() else None
        if out.is_dir():
            if any(out.iterdir()):
                raise PublishError(
                    f"{out} is a folder of files not written by engine build; refusing to "
                    "replace it. Move it away or choose another --out / OUTPUT_DIR"
                )
            return None
        if out.exists():
            raise PublishError(f"{out} exists and is not a folder; choose another --out")
        return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the build lock so two builds of one site never interleave."""
        self.generations.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.generations / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def numbers(self) -> list[int]:
        """Return the numbers of the finished generations, oldest first."""
        if not self.generations.is_dir():
            return []
        return sorted(
            int(entry.name)
            for entry in os.scandir(self.generations)
            if _GENERATION_NAME.match(entry.name) and entry.is_dir(follow_symlinks=False)
        )

    def remove_partial(self) -> None:
        """Delete generations a killed build left half-written (never live)."""
        for entry in os.scandir(self.generations):
            if entry.name.startswith(".building-"):
                shutil.rmtree(entry.path, ignore_errors=True)

    def switch(self, generation: Path) -> None:
        """Point the output symlink at a generation with one atomic rename."""
        target = os.path.relpath(generation / "site", self.out.parent)
        temp = self.out.parent / f".{self.out.name}.switch-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        os.symlink(target, temp)
        if self.out.is_dir() and not self.out.is_symlink():
            self.out.rmdir()  # empty: checked by live(); os.replace cannot replace a folder
        os.replace(temp, self.out)

    def prune(self, keep: int, live: Path) -> None:
        """Delete generations older than the live one and the ``keep`` before it."""
        numbers = [n for n in self.numbers() if n != int(live.name)]
        older = [n for n in numbers if n < int(live.name)]
        doomed = older[: max(0, len(older) - keep)]
        for number in doomed:
            shutil.rmtree(self.generations / str(number), ignore_errors=True)


def read_manifest(generation: Path | None) -> dict[str, Any]:
    """Return a generation's manifest; an unreadable one means "render everything"."""
    empty: dict[str, Any] = {"version": MANIFEST_VERSION, "base_url": "", "files": {}}
    if generation is None:
        return empty
    try:
        data = json.loads((generation / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError):
        return empty
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        return empty
    return data


def _write_manifest(generation: Path, manifest: Mapping[str, Any]) -> None:
    """Replace a generation's manifest atomically (it is not part of the served site)."""
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    temp = generation / f".{MANIFEST_NAME}.{os.getpid()}"
    temp.write_bytes(data)
    os.replace(temp, generation / MANIFEST_NAME)


def _write_new(root: str, relative: str, data: bytes) -> None:
    """Write a file that must not exist yet into a generation that is not live."""
    path = safe_join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # O_EXCL: a second write of one path is a planning bug and fails loudly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _link_or_copy(source: str, destination: str) -> None:
    """Hard-link an unchanged file into the new generation (copy where links are refused)."""
    try:
        os.link(source, destination)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV, errno.ENOTSUP):
            raise
        shutil.copy2(source, destination)


# ------------------------------------------------------------------------ rendering


@dataclass
class _RenderJob:
    """Everything a render worker needs; inherited by forked workers, never pickled."""

    pages: Sequence[Any]
    files: list[str]
    old_sha: list[str | None]
    live_root: str | None
    new_root: str
    render: Callable[[Any], bytes]


_JOB: _RenderJob | None = None

_Result = tuple[int, str, bool]


def describe_render_error(url_path: str, exc: BaseException) -> str:
    """Return ``"<path>: <template>:<line>: <error>"`` for a page that failed to render."""
    where = ""
    filename = getattr(exc, "filename", None) or getattr(exc, "name", None)
    lineno = getattr(exc, "lineno", None)
    if isinstance(filename, str) and lineno:
        where = f"{filename}:{lineno}: "
    else:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename.endswith((".j2", ".html", ".jinja", ".xml", ".txt")):
                where = f"{frame.filename}:{frame.lineno}: "
                break
    return f"page {url_path} failed to render: {where}{type(exc).__name__}: {exc}"


def _render_indices(job: _RenderJob, indices: Sequence[int]) -> tuple[list[_Result], str | None]:
    """Render pages; write those whose bytes differ from the live ones into the new generation."""
    results: list[_Result] = []
    for index in indices:
        page = job.pages[index]
        try:
            data = job.render(page)
            if not isinstance(data, bytes):
                raise TypeError(f"render returned {type(data).__name__}, not bytes")
        except Exception as exc:
            return results, describe_render_error(page.path, exc)
        sha = hashlib.sha256(data).hexdigest()
        relative = job.files[index]
        write = (
            job.old_sha[index] != sha
            or job.live_root is None
            or not os.path.isfile(os.path.join(job.live_root, relative))
        )
        if write:
            _write_new(job.new_root, relative, data)
        results.append((index, sha, write))
    return results, None


def _worker_start() -> None:
    """Make a forked worker refuse database work: the parent's session is not its to use."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    def refuse(state: Any) -> None:
        raise RuntimeError(
            "a page plan queried the database while rendering; plan_site must load "
            "everything a template shows (rendering runs in worker processes)"
        )

    event.listen(Session, "do_orm_execute", refuse)


def _worker_chunk(indices: list[int]) -> tuple[list[_Result], str | None]:
    """Render one chunk in a forked worker."""
    assert _JOB is not None
    try:
        return _render_indices(_JOB, indices)
    except Exception as exc:  # an I/O error: report it, exceptions may not pickle
        return [], f"writing pages failed: {type(exc).__name__}: {exc}"


def _worker_count(settings: Mapping[str, Any]) -> int:
    """Return how many render processes to use (BUILD_WORKERS, 0 = one per CPU)."""
    wanted = int(settings.get("BUILD_WORKERS") or 0)
    if wanted > 0:
        return wanted
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _render_all(
    job: _RenderJob,
    stale: list[int],
    workers: int,
    parallel_min_pages: int,
    progress: Callable[[int, int], None] | None,
) -> list[_Result]:
    """Render the stale pages, in forked workers when there are many."""
    global _JOB
    total = len(stale)
    results: list[_Result] = []
    if progress:
        progress(0, total)
    if (
        workers <= 1
        or total < parallel_min_pages
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        step = 500
        for start in range(0, total, step):
            done, error = _render_indices(job, stale[start : start + step])
            results += done
            if error:
                raise PageRenderError(error)
            if progress:
                progress(len(results), total)
        return results
    size = max(16, min(256, total // (workers * 8)))
    chunks = [stale[start : start + size] for start in range(0, total, size)]
    _JOB = job
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_worker_start) as pool:
            for done, error in pool.imap_unordered(_worker_chunk, chunks):
                results += done
                if error:
                    raise PageRenderError(error)
                if progress:
                    progress(len(results), total)
    finally:
        _JOB = None
    return results


# -------------------------------------------------------------------------- planning


@dataclass
class _OutputPlan:
    """Checked output files of a site plan, before anything is rendered."""

    page_files: list[str]
    redirects: list[PlannedRedirect]
    assets: list[tuple[str, str, Path]]  # (path, file, source)


def plan_output(site: PlannedSite) -> _OutputPlan:
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
        relative = _check_site_path(page.path, "page")
        claim(page.path, relative, "page")
        page_files.append(relative)
    assets: list[tuple[str, str, Path]] = []
    for url_path, source in sorted(site.assets.items()):
        relative = _check_site_path(url_path, "asset")
        claim(url_path, relative, "asset")
        assets.append((url_path, relative, Path(source)))
    folders = {os.path.dirname(rel) for rel in owners}
    parents = set()
    for folder in folders:
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
    return _OutputPlan(page_files=page_files, redirects=redirects, assets=assets)


# ----------------------------------------------------------------------- the build


def today_in(settings: Mapping[str, Any]) -> str:
    """Return today's date (ISO) in the site's TIMEZONE, the sitemap's lastmod for changes."""
    try:
        zone: dt.tzinfo = ZoneInfo(str(settings.get("TIMEZONE") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    return dt.datetime.now(zone).date().isoformat()


def publish_site(
    site: PlannedSite,
    settings: Mapping[str, Any],
    *,
    render: Callable[[Any], bytes],
    out: Path | None = None,
    full: bool = False,
    base_url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    today: str | None = None,
    parallel_min_pages: int = PARALLEL_MIN_PAGES,
) -> BuildReport:
    """Write a planned site as a new generation (only if something changed) and switch to it."""
    started = time.perf_counter()
    phases: dict[str, float] = {}
    folder = OutputFolder(Path(out or settings["OUTPUT_DIR"]))
    base = check_base_url(base_url or str(settings["SITE_URL"]))
    plan = plan_output(site)
    folder.live()  # refuse a foreign output folder before creating anything
    today = today or today_in(settings)
    command = str(settings.get("PUBLISH_COMMAND") or "").strip()
    with folder.locked():
        live = folder.live()
        folder.remove_partial()
        old = read_manifest(live)
        old_files: dict[str, dict[str, Any]] = old.get("files", {})
        trust_keys = not full and old.get("base_url") == base
        live_root = str(live / "site") if live else None
        number = (folder.numbers() or [0])[-1] + 1
        building = folder.generations / f".building-{number}-{os.getpid()}"
        new_root = str(building / "site")
        try:
            report = _build_generation(
                site,
                plan,
                settings,
                folder,
                live,
                live_root,
                old,
                old_files,
                trust_keys,
                building,
                new_root,
                number,
                base,
                today,
                render,
                progress,
                parallel_min_pages,
                phases,
            )
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        report.seconds = time.perf_counter() - started
        report.phases = phases
        # Still under the lock: a concurrent build must not prune what is being deployed.
        if command and report.generation is not None:
            _publish(command, folder, report, settings)
    return report


def _build_generation(
    site: PlannedSite,
    plan: _OutputPlan,
    settings: Mapping[str, Any],
    folder: OutputFolder,
    live: Path | None,
    live_root: str | None,
    old: dict[str, Any],
    old_files: dict[str, dict[str, Any]],
    trust_keys: bool,
    building: Path,
    new_root: str,
    number: int,
    base: str,
    today: str,
    render: Callable[[Any], bytes],
    progress: Callable[[int, int], None] | None,
    parallel_min_pages: int,
    phases: dict[str, float],
) -> BuildReport:
    """Render what is stale, write what changed, and switch generations if anything did."""
    mark = time.perf_counter()
    pages = site.pages
    files: dict[str, dict[str, Any]] = {}
    to_write: dict[str, bytes | None] = {}  # path -> bytes (None: already written by a worker)
    relative_of: dict[str, str] = {}
    stale: list[int] = []
    old_sha: list[str | None] = []
    for index, page in enumerate(pages):
        entry = old_files.get(page.path)
        relative = plan.page_files[index]
        relative_of[page.path] = relative
        old_sha.append(entry.get("sha256") if entry and entry.get("kind") == "page" else None)
        if (
            trust_keys
            and entry is not None
            and entry.get("kind") == "page"
            and entry.get("key") == page.key
            and live_root is not None
            and os.path.isfile(os.path.join(live_root, relative))
        ):
            files[page.path] = entry
        else:
            stale.append(index)
    phases["check"] = time.perf_counter() - mark

    mark = time.perf_counter()
    job = _RenderJob(pages, plan.page_files, old_sha, live_root, new_root, render)
    results = _render_all(job, stale, _worker_count(settings), parallel_min_pages, progress)
    for index, sha, written in results:
        page = pages[index]
        entry = old_files.get(page.path) or {}
        lastmod = entry["lastmod"] if entry.get("sha256") == sha else today
        files[page.path] = {"kind": "page", "key": page.key, "sha256": sha, "lastmod": lastmod}
        if written:
            to_write[page.path] = None
    phases["render"] = time.perf_counter() - mark

    mark = time.perf_counter()
    for url_path, relative, source in plan.assets:
        relative_of[url_path] = relative
        entry = old_files.get(url_path) or {}
        try:
            stat = source.stat()
        except OSError as exc:
            raise PublishError(f"asset {url_path}: cannot read {source}: {exc.strerror}") from None
        fingerprint = [str(source), stat.st_size, stat.st_mtime_ns]
        live_ok = live_root is not None and os.path.isfile(os.path.join(live_root, relative))
        if trust_keys and entry.get("source") == fingerprint and live_ok:
            files[url_path] = entry
            continue
        data = source.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        same = entry.get("sha256") == sha
        files[url_path] = {
            "kind": "asset",
            "sha256": sha,
            "lastmod": entry["lastmod"] if same else today,
            "source": fingerprint,
        }
        if not (same and live_ok):
            to_write[url_path] = data

    sitemap_entries = [
        (page.path, files[page.path]["lastmod"])
        for page in sorted(pages, key=lambda p: p.path)
        if page.indexable
    ]
    generated = sitemap_files(
        sitemap_entries, base, max_urls=int(settings.get("SITEMAP_MAX_URLS") or 50_000)
    )
    generated[ROBOTS_PATH] = robots_txt(base)
    generated[NETLIFY_REDIRECTS_PATH] = netlify_redirects(plan.redirects)
    generated[NGINX_REDIRECTS_PATH] = nginx_redirects(plan.redirects, base)
    for url_path, data in sorted(generated.items()):
        relative = file_for_path(url_path)
        relative_of[url_path] = relative
        entry = old_files.get(url_path) or {}
        sha = hashlib.sha256(data).hexdigest()
        same = entry.get("sha256") == sha
        files[url_path] = {
            "kind": "file",
            "sha256": sha,
            "lastmod": entry["lastmod"] if same else today,
        }
        live_ok = live_root is not None and os.path.isfile(os.path.join(live_root, relative))
        if not (same and live_ok):
            to_write[url_path] = data
    phases["extras"] = time.perf_counter() - mark

    removed = sum(1 for path in old_files if path not in files)
    manifest = {"version": MANIFEST_VERSION, "base_url": base, "files": files}
    if "publish" in old:
        manifest["publish"] = old["publish"]
    report = BuildReport(
        written=len(to_write),
        unchanged=len(files) - len(to_write),
        removed=removed,
        seconds=0.0,
        output=folder.out,
        rendered=len(results),
    )
    if not to_write and not removed and live is not None:
        # Nothing a visitor could see changed: leave the site alone. New keys for pages
        # whose bytes came out the same go into the live manifest (outside the site).
        if manifest != old:
            _write_manifest(live, manifest)
        report.generation = live
        return report

    mark = time.perf_counter()
    made: set[str] = set()
    for url_path, pending in to_write.items():
        if pending is not None:
            _write_new(new_root, relative_of[url_path], pending)
    Path(new_root).mkdir(parents=True, exist_ok=True)
    for url_path in files:
        if url_path in to_write:
            continue
        assert live_root is not None
        relative = relative_of[url_path]
        destination = safe_join(new_root, relative)
        parent = os.path.dirname(destination)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        _link_or_copy(os.path.join(live_root, relative), destination)
    manifest.pop("publish", None)
    _write_manifest(building, manifest)
    generation = folder.generations / str(number)
    os.rename(building, generation)
    phases["write"] = time.perf_counter() - mark
    mark = time.perf_counter()
    folder.switch(generation)
    folder.prune(int(settings.get("BUILD_GENERATIONS_KEPT", 2)), generation)
    phases["switch"] = time.perf_counter() - mark
    report.changed = True
    report.generation = generation
    return report


def _publish(
    command: str, folder: OutputFolder, report: BuildReport, settings: Mapping[str, Any]
) -> None:
    """Run PUBLISH_COMMAND for a new generation, or for one it has not yet published."""
    assert report.generation is not None
    manifest = read_manifest(report.generation)
    done = manifest.get("publish") == {"command": command, "ok": True}
    if not report.changed and done:
        report.publish = "skipped: nothing changed"
        return
    timeout = float(settings.get("PUBLISH_TIMEOUT_SECONDS") or 300)
    site_dir = report.generation / "site"
    env = dict(os.environ, ENGINE_SITE_DIR=str(site_dir))
    ok = False
    try:
        completed = subprocess.run(
            command,
            shell=True,
            cwd=folder.out,
            env=env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        ok = completed.returncode == 0
        failure = f"PUBLISH_COMMAND exited with status {completed.returncode}"
    except subprocess.TimeoutExpired:
        failure = f"PUBLISH_COMMAND did not finish within {timeout:g} s and was stopped"
    except OSError as exc:
        failure = f"PUBLISH_COMMAND could not start: {exc.strerror}"
    manifest["publish"] = {"command": command, "ok": ok}
    _write_manifest(report.generation, manifest)
    if ok:
        report.publish = "ran"
        return
    report.publish = "failed"
    raise PublishCommandError(
        f"{failure}; the site is built and live at {folder.out} but was not published. "
        "Fix the command and run `engine build` again to retry it",
        report,
    )


def build_site(
    session: Session,
    settings: Mapping[str, Any],
    *,
    out: Path | None = None,
    full: bool = False,
    base_url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BuildReport:
    """Load content, plan the site and publish it; raises ContentErrors before writing anything."""
    from engine.content import load_content
    from engine.pages import make_environment, plan_site, render_page

    started = time.perf_counter()
    base = check_base_url(base_url or str(settings["SITE_URL"]))
    OutputFolder(Path(out or settings["OUTPUT_DIR"])).live()
    content = load_content(Path(str(settings["CONTENT_DIR"])))
    loaded = time.perf_counter()
    site = plan_site(session, settings, content, base_url=base)
    planned = time.perf_counter()
    environment = make_environment(settings, base_url=base)

    def render(plan: Any) -> bytes:
        return render_page(environment, plan)

    try:
        report = publish_site(
            site, settings, render=render, out=out, full=full, base_url=base, progress=progress
        )
    except PublishCommandError as exc:
        _add_planning_time(exc.report, started, loaded, planned)
        raise
    _add_planning_time(report, started, loaded, planned)
    return report


def _add_planning_time(report: BuildReport, started: float, loaded: float, planned: float) -> None:
    """Count loading content and planning in a report's time and phases."""
    report.phases = {"content": loaded - started, "plan": planned - loaded, **report.phases}
    report.seconds += planned - started
