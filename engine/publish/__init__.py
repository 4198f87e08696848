"""Static build: incremental, atomic generations, sitemaps, robots.txt and redirect rules.

The published folder (``OUTPUT_DIR``) is a symlink to the site folder of the live
*generation*. A build that changes anything stages a generation beside it, in
``.<name>.generations/``: changed files written fresh, unchanged ones hard-linked from
the live generation; then one ``os.replace`` of a symlink switches the site. A build
that fails half-way leaves the live site exactly as it was.

::

    instance/site -> .site.generations/7/site
    instance/.site.generations/7/site/…          the published files
    instance/.site.generations/7/manifest.json   path -> key, sha256, lastmod
    instance/.site.generations/6/…               older generations (BUILD_GENERATIONS_KEPT)
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import os
import pickle
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.publish.errors import (
    PageRenderError,
    PublishCommandError,
    PublishError,
    UnsafePathError,
)
from engine.publish.generations import (
    MANIFEST_VERSION,
    OutputFolder,
    Prestage,
    Staging,
    link_into,
    read_manifest,
    write_file,
    write_manifest,
)
from engine.publish.paths import (
    SERVICE_PREFIXES,
    OutputPlan,
    PlannedSite,
    check_base_url,
    file_for_path,
    plan_output,
    safe_join,
)
from engine.publish.render import PARALLEL_MIN_PAGES, RenderJob, render_all, worker_count
from engine.publish.rules import (
    NETLIFY_REDIRECTS_PATH,
    NGINX_REDIRECTS_PATH,
    ROBOTS_PATH,
    SITEMAP_MAX_BYTES,
    SITEMAP_NS,
    SITEMAP_PATH,
    netlify_redirects,
    nginx_redirects,
    robots_txt,
    sitemap_files,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "PLANNED_TABLES",
    "SERVICE_PREFIXES",
    "SITEMAP_MAX_BYTES",
    "SITEMAP_NS",
    "BuildReport",
    "PageRenderError",
    "PublishCommandError",
    "PublishError",
    "UnsafePathError",
    "build_site",
    "file_for_path",
    "publish_site",
    "safe_join",
    "site_inputs",
    "sitemap_files",
]

_SITEMAP_PART = re.compile(r"^/sitemap-\d+\.xml$")
#: Modules whose code decides a page's bytes: a new version of them re-renders every page
#: (bytes still decide what is rewritten), since page keys cover data, not code.
_RENDERING_MODULES = ("pages.py", "urls.py", "content.py")


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
    #: True when only the pages showing products whose stock changed were planned.
    partial: bool = False


def today_in(settings: Mapping[str, Any]) -> str:
    """Return today's date (ISO) in the site's TIMEZONE: the lastmod of pages changed now."""
    try:
        zone: dt.tzinfo = ZoneInfo(str(settings.get("TIMEZONE") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    return dt.datetime.now(zone).date().isoformat()


def code_fingerprint() -> str:
    """Return a digest of the engine code that renders pages (its version and sources)."""
    import engine

    digest = hashlib.sha256(engine.__version__.encode())
    package = Path(engine.__file__).resolve().parent
    for name in _RENDERING_MODULES:
        path = package / name
        if path.is_file():
            digest.update(name.encode() + b"\x00" + path.read_bytes())
    return digest.hexdigest()


def generations_kept(settings: Mapping[str, Any]) -> int:
    """Return BUILD_GENERATIONS_KEPT: old generations kept besides the live one."""
    return int(settings.get("BUILD_GENERATIONS_KEPT", 2))


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
    fingerprint: str = "",
    inputs: str = "",
    parallel_min_pages: int = PARALLEL_MIN_PAGES,
    record: Mapping[str, Any] | None = None,
    prestage: Prestage | None = None,
) -> BuildReport:
    """Write a planned site as a new generation (only if something changed) and switch to it.

    ``fingerprint`` names the rendering code (a new one re-renders every page) and
    ``inputs`` everything the plan was made from (see ``site_inputs``), recorded so the
    next build with the same inputs can skip planning. ``record`` is kept in the manifest
    as ``plan`` (what the next build needs to plan only the pages a stock change shows).
    """
    started = time.perf_counter()
    folder = OutputFolder(Path(out or settings["OUTPUT_DIR"]))
    base = check_base_url(base_url or str(settings["SITE_URL"]))
    plan = plan_output(site)
    folder.live()  # refuse a foreign output folder before creating anything
    command = str(settings.get("PUBLISH_COMMAND") or "").strip()
    # The plan is millions of long-lived objects: keep the collector from traversing them
    # (a full collection takes seconds at 100,000 pages) and forked render workers from
    # copying them page by page when it writes to their headers.
    gc.freeze()
    try:
        return _publish_locked(
            site, plan, settings, folder, base, command, started,
            render=render, full=full, today=today, fingerprint=fingerprint, inputs=inputs,
            progress=progress, parallel_min_pages=parallel_min_pages, record=record,
            prestage=prestage,
        )  # fmt: skip
    finally:
        gc.unfreeze()


def _publish_locked(
    site: PlannedSite,
    plan: OutputPlan,
    settings: Mapping[str, Any],
    folder: OutputFolder,
    base: str,
    command: str,
    started: float,
    *,
    render: Callable[[Any], bytes],
    full: bool,
    today: str | None,
    fingerprint: str,
    inputs: str,
    progress: Callable[[int, int], None] | None,
    parallel_min_pages: int,
    record: Mapping[str, Any] | None,
    prestage: Prestage | None,
) -> BuildReport:
    """Build under the lock, then run PUBLISH_COMMAND if the site changed."""
    with folder.locked():
        live = folder.live()
        folder.remove_partial()
        staging = Staging(folder, live, generations_kept(settings), prestage)
        build = _Build(site, plan, settings, folder, live, staging, base)
        try:
            report = build.run(
                render=render,
                full=full,
                today=today or today_in(settings),
                fingerprint=fingerprint,
                inputs=inputs,
                progress=progress,
                parallel_min_pages=parallel_min_pages,
                record=record,
            )
        except BaseException:
            staging.abandon()
            raise
        report.seconds = time.perf_counter() - started
        report.phases = build.phases
        # Still under the lock: a concurrent build must not recycle what is being deployed.
        if command and report.generation is not None:
            _publish(command, folder, report, settings)
    return report


class _Build:
    """One build: decide what is stale, render it, stage what changed, switch."""

    def __init__(
        self,
        site: PlannedSite,
        plan: OutputPlan,
        settings: Mapping[str, Any],
        folder: OutputFolder,
        live: Path | None,
        staging: Staging,
        base: str,
    ) -> None:
        self.site = site
        self.plan = plan
        self.settings = settings
        self.folder = folder
        self.live = live
        self.live_root = str(live / "site") if live is not None else None
        self.staging = staging
        self.base = base
        self.phases: dict[str, float] = {}
        #: The new manifest's entries, by URL path.
        self.files: dict[str, dict[str, Any]] = {}
        #: Paths to write: bytes, or None when a render worker already wrote them.
        self.to_write: dict[str, bytes | None] = {}
        self.relative: dict[str, str] = {}

    def live_has(self, relative: str) -> bool:
        """Return True when the live generation has this file."""
        return self.live_root is not None and os.path.isfile(os.path.join(self.live_root, relative))

    def run(
        self,
        *,
        render: Callable[[Any], bytes],
        full: bool,
        today: str,
        fingerprint: str,
        inputs: str,
        progress: Callable[[int, int], None] | None,
        parallel_min_pages: int,
        record: Mapping[str, Any] | None = None,
    ) -> BuildReport:
        """Build and, if anything a visitor could see changed, switch to the new generation."""
        mark = time.perf_counter()
        old = read_manifest(self.live)
        old_files: dict[str, dict[str, Any]] = old["files"]
        trust = not full and old.get("base_url") == self.base
        trust = trust and old.get("fingerprint") == fingerprint
        pages = self.site.pages
        stale: list[int] = []
        live_sha: list[str | None] = []
        for index, page in enumerate(pages):
            entry = old_files.get(page.path)
            relative = self.plan.page_files[index]
            self.relative[page.path] = relative
            is_page = entry is not None and entry.get("kind") == "page"
            live_sha.append(entry.get("sha256") if entry and is_page else None)
            # The live generation holds what its manifest lists (only builds write it);
            # --full re-checks every file.
            if trust and is_page and entry is not None and entry.get("key") == page.key:
                self.files[page.path] = entry
                continue
            if not page.template:
                # A page a partial plan carried over from a site that is no longer live.
                raise _CarriedPageStale(page.path)
            stale.append(index)
        self.phases["check"] = time.perf_counter() - mark

        mark = time.perf_counter()
        if stale:
            planned = {page.path for page in pages} | {a[0] for a in self.plan.assets}
            planned |= {path for path in self.staging.files if _is_rule_file(path)}
            self.staging.open(planned)
        # Pages that show the same products render one after another (PagePlan.render_rank).
        stale.sort(key=lambda index: getattr(pages[index], "render_rank", 0))
        job = RenderJob(pages, self.plan.page_files, live_sha, self.live_root,
                        self.staging.root, render)  # fmt: skip
        workers = worker_count(self.settings)
        results = render_all(job, stale, workers, parallel_min_pages, progress)
        for index, sha, written, key in results:
            page = pages[index]
            entry = old_files.get(page.path) or {}
            lastmod = entry["lastmod"] if entry.get("sha256") == sha else today
            self.files[page.path] = {"kind": "page", "key": key, "sha256": sha,
                                     "lastmod": lastmod}  # fmt: skip
            if written:
                self.to_write[page.path] = None
        self.phases["render"] = time.perf_counter() - mark

        mark = time.perf_counter()
        self.add_assets(old_files, trust, today)
        self.add_rules(old_files, today)
        self.phases["extras"] = time.perf_counter() - mark

        removed = sum(1 for path in old_files if path not in self.files)
        manifest: dict[str, Any] = {
            "version": MANIFEST_VERSION,
            "base_url": self.base,
            "fingerprint": fingerprint,
            "inputs": inputs,
            "files": self.files,
        }
        if record is not None:
            manifest["plan"] = record
        report = BuildReport(
            written=len(self.to_write),
            unchanged=len(self.files) - len(self.to_write),
            removed=removed,
            seconds=0.0,
            output=self.folder.out,
            rendered=len(results),
        )
        if self.live is not None and not self.to_write and not removed:
            # Nothing a visitor could see changed: leave the site alone. New keys of pages
            # whose bytes came out the same go into the live manifest (beside the site).
            self.staging.restore()
            if "publish" in old:
                manifest["publish"] = old["publish"]
            if manifest != old:
                write_manifest(self.live, manifest)
            report.generation = self.live
            self.phases["write"] = 0.0
            return report

        mark = time.perf_counter()
        self.stage()
        generation = self.staging.finish(manifest)
        self.phases["write"] = time.perf_counter() - mark
        mark = time.perf_counter()
        self.folder.switch(generation)
        self.staging.prune()
        self.phases["switch"] = time.perf_counter() - mark
        report.changed = True
        report.generation = generation
        return report

    def add_assets(self, old_files: dict[str, dict[str, Any]], trust: bool, today: str) -> None:
        """Add the site's static files, re-reading only those whose source changed."""
        for url_path, relative, source in self.plan.assets:
            self.relative[url_path] = relative
            entry = old_files.get(url_path) or {}
            try:
                stat = source.stat()
            except OSError as exc:
                raise PublishError(
                    f"asset {url_path}: cannot read {source}: {exc.strerror}"
                ) from None
            fingerprint = [str(source), stat.st_size, stat.st_mtime_ns]
            live_ok = self.live_has(relative)
            if trust and entry.get("source") == fingerprint and live_ok:
                self.files[url_path] = entry
                continue
            data = source.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            same = entry.get("sha256") == sha
            self.files[url_path] = {
                "kind": "asset",
                "sha256": sha,
                "lastmod": entry["lastmod"] if same else today,
                "source": fingerprint,
            }
            if not (same and live_ok):
                self.to_write[url_path] = data

    def add_rules(self, old_files: dict[str, dict[str, Any]], today: str) -> None:
        """Add sitemaps, robots.txt and the redirect rule files."""
        entries = [
            (page.path, self.files[page.path]["lastmod"])
            for page in sorted(self.site.pages, key=lambda p: p.path)
            if page.indexable
        ]
        max_urls = int(self.settings.get("SITEMAP_MAX_URLS") or 50_000)
        generated = sitemap_files(entries, self.base, max_urls=max_urls)
        generated[ROBOTS_PATH] = robots_txt(self.base)
        generated[NETLIFY_REDIRECTS_PATH] = netlify_redirects(self.plan.redirects)
        generated[NGINX_REDIRECTS_PATH] = nginx_redirects(self.plan.redirects, self.base)
        for url_path, data in sorted(generated.items()):
            relative = file_for_path(url_path)
            self.relative[url_path] = relative
            entry = old_files.get(url_path) or {}
            sha = hashlib.sha256(data).hexdigest()
            same = entry.get("sha256") == sha
            self.files[url_path] = {
                "kind": "file",
                "sha256": sha,
                "lastmod": entry["lastmod"] if same else today,
            }
            if not (same and self.live_has(relative)):
                self.to_write[url_path] = data

    def stage(self) -> None:
        """Bring the staged generation to exactly the new site's files."""
        staging = self.staging
        staging.open(set(self.files))
        staging.drop(set(self.files))
        root = staging.root
        for url_path, data in self.to_write.items():
            if data is not None:
                write_file(root, self.relative[url_path], data)
        folders: set[str] = set()  # known to exist in the staged generation
        for url_path, entry in self.files.items():
            if url_path in self.to_write or staging.holds(url_path, entry["sha256"]):
                continue
            assert self.live_root is not None  # not written, so it is live already
            relative = self.relative[url_path]
            source = os.path.join(self.live_root, relative)
            try:
                link_into(source, root, relative, folders)
            except FileNotFoundError:
                if os.path.exists(source):
                    raise
                raise PublishError(
                    f"{source} is missing from the live site (removed by hand?); "
                    "run `engine build --full` to write every file again"
                ) from None


class _CarriedPageStale(PublishError):
    """A partially planned site met a live generation other than the one it was planned on."""


def _is_rule_file(url_path: str) -> bool:
    """Return True for the files a build writes beside the pages (sitemaps, rules)."""
    fixed = (SITEMAP_PATH, ROBOTS_PATH, NETLIFY_REDIRECTS_PATH, NGINX_REDIRECTS_PATH)
    return url_path in fixed or bool(_SITEMAP_PART.match(url_path))


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
    env = dict(os.environ, ENGINE_SITE_DIR=str(report.generation / "site"))
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
    write_manifest(report.generation, manifest)
    if ok:
        report.publish = "ran"
        return
    report.publish = "failed"
    raise PublishCommandError(
        f"{failure}; the site is built and live at {folder.out} but was not published. "
        "Fix the command and run `engine build` again to retry it",
        report,
    )


def content_files_digest(content_dir: Path) -> str:
    """Return a digest of every file under the content folder: names and bytes, unparsed.

    Parsing the Markdown is most of what loading content costs; an unchanged folder needs
    none of it (the last build that recorded this digest parsed it without errors).
    """
    digest = hashlib.blake2b(digest_size=16)
    root = os.fspath(content_dir)
    if not os.path.isdir(root):
        digest.update(b"missing" if not os.path.exists(root) else b"not a folder")
        return digest.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        relative = os.path.relpath(dirpath, root)
        digest.update(f"\x01{relative}\x01{len(dirnames)}".encode())
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                data = handle.read()
            digest.update(f"\x00{name}\x00{len(data)}\x00".encode() + data)
    return digest.hexdigest()


def site_inputs(
    settings: Mapping[str, Any],
    content_digest: str,
    base_url: str,
    fingerprint: str,
    rows_digest: str,
) -> str:
    """Return a digest of everything ``plan_site`` reads, so an unchanged site is not re-planned.

    Covers the rendering code, the settings, today's date (offers carry a price-valid-until
    date), the content files (``content_files_digest``), every file of the theme folders and
    the catalog rows the plan reads (``CatalogRows.digest``; a test fails when the plan
    starts reading another table than ``PLANNED_TABLES``).
    """
    from engine.settings import DEFAULTS, template_dirs

    digest = hashlib.sha256()
    plain = (str, int, float, bool, list, dict, tuple, type(None))
    # The engine's settings only: a web framework's own configuration keys are no input.
    values = sorted(
        (k, v) for k, v in settings.items() if k in DEFAULTS and isinstance(v, plain)
    )
    for part in (fingerprint, base_url, today_in(settings), content_digest, values, rows_digest):
        digest.update(repr(part).encode() + b"\x00")
    for folder in template_dirs(settings):
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                stat = os.stat(os.path.join(dirpath, name))
                entry = (os.path.join(dirpath, name), stat.st_size, stat.st_mtime_ns)
                digest.update(repr(entry).encode())
    return digest.hexdigest()


#: The tables ``plan_site`` reads (through ``engine.catalog_rows.read_catalog``).
PLANNED_TABLES = ("product", "variant")


def reuse_unchanged_site(
    settings: Mapping[str, Any], out: Path | None, inputs: str
) -> BuildReport | None:
    """Return a report for a live site built from exactly these inputs, or None to build.

    The live generation is trusted to hold what its manifest lists (only builds write
    generations); ``--full`` re-renders and re-checks every file.
    """
    folder = OutputFolder(Path(out or settings["OUTPUT_DIR"]))
    if folder.live() is None:
        return None
    with folder.locked():
        live = folder.live()
        manifest = read_manifest(live)
        if live is None or not inputs or manifest.get("inputs") != inputs:
            return None
        if not (live / "site").is_dir():
            return None
        files = manifest["files"]
        report = BuildReport(
            written=0,
            unchanged=len(files),
            removed=0,
            seconds=0.0,
            output=folder.out,
            generation=live,
        )
        command = str(settings.get("PUBLISH_COMMAND") or "").strip()
        if command:
            _publish(command, folder, report, settings)
    return report


def build_site(
    session: Session | Any,
    settings: Mapping[str, Any],
    *,
    out: Path | None = None,
    full: bool = False,
    base_url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BuildReport:
    """Load content, plan the site and publish it; raises ContentErrors before writing anything.

    ``session`` reads the catalog: a SQLAlchemy session, or a ``sqlite3`` connection.
    When only stock columns changed since the live site was built, only the pages that
    show the changed products are planned (``engine.pages.plan_changes``).
    """
    from engine.catalog_rows import read_catalog

    started = time.perf_counter()
    base = check_base_url(base_url or str(settings["SITE_URL"]))
    folder = OutputFolder(Path(out or settings["OUTPUT_DIR"]))
    folder.live()  # refuse a foreign output folder before reading anything
    content_dir = Path(str(settings["CONTENT_DIR"]))
    fingerprint = code_fingerprint()
    rows = read_catalog(session)
    content_digest = content_files_digest(content_dir)
    # Everything but the stock columns: equal to the live site's, a stock change it is.
    shape = site_inputs(settings, content_digest, base, fingerprint, rows.shape_digest())
    inputs = hashlib.sha256(f"{shape}|{rows.digest()}".encode()).hexdigest()
    digested = time.perf_counter()
    if not full:
        try:
            reused = reuse_unchanged_site(settings, out, inputs)
        except PublishCommandError as exc:
            exc.report.seconds = time.perf_counter() - started
            raise
        if reused is not None:
            reused.seconds = time.perf_counter() - started
            reused.phases = {"inputs": reused.seconds}
            return reused

    # The first builds after one from scratch stage a whole folder tree: a child process
    # copies the live generation while this one plans (see Prestage).
    prestage = Prestage.start(folder, folder.live(), generations_kept(settings))
    held = [rows]  # handed over, so planning can drop the rows before rendering
    del rows
    try:
        return _plan_and_publish(
            session, settings, folder, held, shape, inputs, fingerprint, content_dir,
            content_digest, base, started, digested,
            out=out, full=full, progress=progress, prestage=prestage,
        )  # fmt: skip
    finally:
        if prestage is not None:
            prestage.close()


def _plan_and_publish(
    session: Session | Any,
    settings: Mapping[str, Any],
    folder: OutputFolder,
    held: list[Any],
    shape: str,
    inputs: str,
    fingerprint: str,
    content_dir: Path,
    content_digest: str,
    base: str,
    started: float,
    digested: float,
    *,
    out: Path | None,
    full: bool,
    progress: Callable[[int, int], None] | None,
    prestage: Prestage | None,
) -> BuildReport:
    """Load the content, plan the site (only the stock change's pages when it can) and publish.

    ``held`` holds the catalog rows (``CatalogRows``), emptied here once planned.
    """
    from engine.pages import PageRenderer, make_environment, plan_changes, plan_site

    rows = held.pop()

    content = load_content_cached(content_dir, content_digest, fingerprint, folder.generations)
    loaded = time.perf_counter()
    site = None
    stock = rows.stock()
    if not full:
        previous = read_manifest(folder.live())
        changes = _stock_changes(previous, shape, rows, stock)
        if changes is not None:
            changed, pages, renamed = changes
            site = plan_changes(settings, content, rows, changed, pages, renamed, base_url=base)
    partial = site is not None
    if site is None:
        site = plan_site(session, settings, content, base_url=base, rows=rows)
    record = {
        "shape": shape,
        "stock": stock,
        "renamed": site.renamed,
        "noindex": sorted(page.path for page in site.pages if not page.indexable),
    }
    del rows
    planned = time.perf_counter()
    templates = folder.generations / ".templates"
    render = PageRenderer(make_environment(settings, base_url=base, bytecode_dir=templates))

    def publish(site: Any) -> BuildReport:
        return publish_site(
            site, settings, render=render, out=out, full=full, base_url=base,
            progress=progress, fingerprint=fingerprint, inputs=inputs, record=record,
            prestage=prestage,
        )  # fmt: skip

    try:
        try:
            report = publish(site)
        except _CarriedPageStale:
            # Another build switched the site after this one read it: plan everything.
            site = plan_site(session, settings, content, base_url=base)
            record["renamed"] = site.renamed
            report = publish(site)
    except PublishCommandError as exc:
        _add_planning_time(exc.report, started, digested, loaded, planned)
        raise
    _add_planning_time(report, started, digested, loaded, planned)
    report.partial = partial
    return report


def load_content_cached(content_dir: Path, digest: str, fingerprint: str, cache: Path) -> Any:
    """Return ``load_content(content_dir)``, from the last build's copy when the files match.

    Parsing the Markdown of hundreds of files is most of what a stock change's build would
    spend on content. The parsed content is kept beside the generations (a pickle the
    engine writes there itself), named by the files' digest, the folder and the code.
    """
    from engine.content import load_content

    key = hashlib.sha256(f"{digest}|{content_dir.resolve()}|{fingerprint}".encode()).hexdigest()
    path = cache / f".content-{key[:32]}.pickle"
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        pass
    except Exception:  # unreadable (an interrupted write, another Python): parse again
        pass
    content = load_content(content_dir)
    # A first build creates the folder here, so the first stock change after it has the copy.
    cache.mkdir(parents=True, exist_ok=True)
    temp = cache / f".content-{os.getpid()}.tmp"
    with open(temp, "wb") as handle:
        pickle.dump(content, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(temp, path)
    for old in cache.glob(".content-*.pickle"):
        if old != path:
            old.unlink(missing_ok=True)
    return content


def _stock_changes(
    previous: Mapping[str, Any], shape: str, rows: Any, now: str
) -> tuple[set[str], dict[str, tuple[str, bool]], dict[str, tuple[str, str]]] | None:
    """Return the handles whose stock changed since the live site, or None to plan it all.

    Also returns the live pages (URL path -> key, indexable) and renamed page titles.
    """
    record = previous.get("plan")
    if not isinstance(record, dict) or record.get("shape") != shape:
        return None
    stock = record.get("stock")
    if not isinstance(stock, str):
        return None
    before, current = stock.split(";"), now.split(";")
    if len(before) != len(current) or (rows.variants and len(current) != len(rows.variants)):
        return None
    changed_ids = {
        row[0] for row, new, old in zip(rows.variants, current, before, strict=False)
        if new != old
    }  # fmt: skip
    handles = {row[1] for row in rows.products if row[0] in changed_ids}
    noindex = set(record.get("noindex") or [])
    pages = {
        path: (str(entry.get("key")), path not in noindex)
        for path, entry in previous.get("files", {}).items()
        if entry.get("kind") == "page"
    }
    renamed = {path: (names[0], names[1]) for path, names in record["renamed"].items()}
    return handles, pages, renamed


def _add_planning_time(
    report: BuildReport, started: float, digested: float, loaded: float, planned: float
) -> None:
    """Count digesting inputs, loading content and planning in a report's time and phases."""
    report.phases = {
        "inputs": digested - started,
        "content": loaded - digested,
        "plan": planned - loaded,
        **report.phases,
    }
    report.seconds += planned - started
