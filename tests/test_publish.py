"""The static build: incremental, atomic generations, sitemaps, robots.txt, redirect rules."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from lxml import etree
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

import engine.publish.generations
from engine.catalog import set_stock
from engine.content import ContentErrors, load_content
from engine.db import Database
from engine.demo import seed_demo
from engine.models import Product, Variant
from engine.pages import plan_site
from engine.publish import (
    PLANNED_TABLES,
    SITEMAP_NS,
    BuildReport,
    PageRenderError,
    PublishCommandError,
    PublishError,
    UnsafePathError,
    build_site,
    file_for_path,
    publish_site,
    safe_join,
    sitemap_files,
)
from engine.publish.generations import Prestage
from engine.settings import bundled_path

BASE = "https://shop.test"
NS = {"s": SITEMAP_NS}


# ------------------------------------------------------------------ a hand-made plan


@dataclass(frozen=True)
class Page:
    """A page plan shaped like engine.pages.PagePlan."""

    path: str
    key: str
    template: str
    context: dict[str, Any]
    indexable: bool = True


@dataclass(frozen=True)
class Redirect:
    """A redirect shaped like engine.pages.Redirect."""

    source: str
    target: str | None
    status: int


@dataclass
class Site:
    """A site plan shaped like engine.pages.Site."""

    pages: list[Page]
    redirects: list[Redirect] = field(default_factory=list)
    assets: dict[str, Path] = field(default_factory=dict)


TEMPLATES = {
    "page.html": "<!doctype html><title>{{ title }}</title><p>{{ body }}</p>\n",
    "404.html": "<!doctype html><title>Not found</title>\n",
}
ENV = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True)


def page(path: str, title: str, body: str = "", *, indexable: bool = True, salt: str = "") -> Page:
    """Return a page whose key digests everything its bytes depend on (plus an optional salt)."""
    context = {"title": title, "body": body}
    key = hashlib.sha256(json.dumps([context, salt], sort_keys=True).encode()).hexdigest()
    return Page(path, key, "page.html", context, indexable)


def not_found() -> Page:
    """Return the 404 page (not indexable)."""
    return Page("/404.html", "404-v1", "404.html", {}, indexable=False)


class Renderer:
    """Render with the tiny environment, counting renders; optionally fail on the Nth page."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.count = 0
        self.fail_on = fail_on

    def __call__(self, plan: Page) -> bytes:
        self.count += 1
        if self.fail_on is not None and self.count >= self.fail_on:
            raise RuntimeError(f"boom on {plan.path}")
        return ENV.get_template(plan.template).render(plan.context).encode()


def catalog(n: int = 5) -> list[Page]:
    """Return a small site's pages: home, n products, the 404 page."""
    pages = [page("/", "Home", "Welcome")]
    pages += [page(f"/products/p{i}/", f"Product {i}", f"Copy {i}") for i in range(n)]
    pages.append(not_found())
    return pages


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    """Return settings for a build into tmp_path/site."""
    return {
        "OUTPUT_DIR": str(tmp_path / "site"),
        "SITE_URL": BASE,
        "SITEMAP_MAX_URLS": 50000,
        "BUILD_GENERATIONS_KEPT": 2,
        "BUILD_WORKERS": 1,
        "PUBLISH_COMMAND": "",
        "PUBLISH_TIMEOUT_SECONDS": 30,
        "TIMEZONE": "UTC",
    }


Build = Callable[..., BuildReport]


@pytest.fixture
def build(settings: dict[str, Any]) -> Build:
    """Return a function that publishes a site plan with the test settings."""

    def run(site: Site, render: Callable[[Any], bytes] | None = None, **kwargs: Any) -> BuildReport:
        return publish_site(site, settings, render=render or Renderer(), **kwargs)

    return run


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Return (inode, mtime_ns, size) of every entry under root, symlinks not followed."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            stat = os.lstat(path)
            result[os.path.relpath(path, root)] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return result


def site_files(out: Path) -> dict[str, bytes]:
    """Return every published file's bytes by relative path."""
    files = {}
    for dirpath, _dirnames, filenames in os.walk(out):
        for name in filenames:
            path = Path(dirpath) / name
            files[str(path.relative_to(out))] = path.read_bytes()
    return files


def generations(out: Path) -> Path:
    """Return the generations folder beside the output."""
    return out.parent / f".{out.name}.generations"


def manifest(out: Path) -> dict[str, Any]:
    """Return the live generation's manifest."""
    data: dict[str, Any] = json.loads((out.resolve().parent / "manifest.json").read_text())
    return data


# ------------------------------------------------------------------------ the build


def test_first_build_writes_pages_assets_and_rules(
    build: Build, settings: dict[str, Any], tmp_path: Path
) -> None:
    asset = tmp_path / "style.css"
    asset.write_text("body { color: #222 }\n")
    site = Site(
        catalog(2),
        redirects=[Redirect("/products/old/", "/products/p1/", 301)],
        assets={"/assets/style.css": asset},
    )
    report = build(site)
    out = tmp_path / "site"
    assert out.is_symlink()
    assert os.readlink(out) == ".site.generations/1/site"
    files = site_files(out)
    assert set(files) == {
        "index.html",
        "products/p0/index.html",
        "products/p1/index.html",
        "404.html",
        "assets/style.css",
        "sitemap.xml",
        "robots.txt",
        "_redirects",
        "redirects.nginx.conf",
    }
    assert (
        files["products/p1/index.html"] == b"<!doctype html><title>Product 1</title><p>Copy 1</p>"
    )
    assert files["assets/style.css"] == asset.read_bytes()
    assert (report.written, report.unchanged, report.removed) == (9, 0, 0)
    assert report.rendered == 4 and report.changed and report.output == out
    assert report.generation == generations(out) / "1"


def test_no_change_rebuild_touches_nothing(build: Build, tmp_path: Path) -> None:
    asset = tmp_path / "logo.svg"
    asset.write_text("<svg/>")
    site = Site(
        catalog(), redirects=[Redirect("/gone/", None, 410)], assets={"/assets/logo.svg": asset}
    )
    build(site)
    before = snapshot(tmp_path)
    renderer = Renderer()
    report = build(site, renderer)
    assert snapshot(tmp_path) == before
    assert renderer.count == 0
    assert (report.written, report.removed, report.changed) == (0, 0, False)
    assert report.unchanged == len(site_files(tmp_path / "site"))


def test_changed_key_rerenders_only_that_page(build: Build, tmp_path: Path) -> None:
    pages = catalog()
    build(Site(pages))
    out = tmp_path / "site"
    old = snapshot(out.resolve())
    pages[2] = page("/products/p1/", "Product 1", "Now back in stock")
    renderer = Renderer()
    report = build(Site(pages), renderer)
    assert renderer.count == 1
    assert report.written == 1 and report.changed
    assert b"back in stock" in (out / "products/p1/index.html").read_bytes()
    new = snapshot(out.resolve())
    # Unchanged files are the same inodes (hard links), the changed one is a new file.
    assert new["products/p0/index.html"][0] == old["products/p0/index.html"][0]
    assert new["products/p1/index.html"][0] != old["products/p1/index.html"][0]
    assert os.readlink(out) == ".site.generations/2/site"


def test_identical_bytes_are_unchanged_and_the_new_key_is_kept(
    build: Build, tmp_path: Path
) -> None:
    pages = catalog()
    build(Site(pages))
    before = snapshot(tmp_path / "site")
    pages[1] = page("/products/p0/", "Product 0", "Copy 0", salt="template v2")
    renderer = Renderer()
    report = build(Site(pages), renderer)
    assert renderer.count == 1
    assert (report.written, report.changed) == (0, False)
    assert snapshot(tmp_path / "site") == before
    assert manifest(tmp_path / "site")["files"]["/products/p0/"]["key"] == pages[1].key
    again = Renderer()
    build(Site(pages), again)
    assert again.count == 0


def test_full_renders_everything_but_rewrites_only_changed_files(
    build: Build, tmp_path: Path
) -> None:
    pages = catalog()
    build(Site(pages))
    renderer = Renderer()
    report = build(Site(pages), renderer, full=True)
    assert renderer.count == len(pages)
    assert (report.written, report.changed) == (0, False)
    pages[0] = page("/", "Home", "New welcome")
    report = build(Site(pages), Renderer(), full=True)
    assert report.written == 1


def test_a_file_deleted_from_the_live_site_is_named_and_full_restores_it(
    build: Build, tmp_path: Path
) -> None:
    pages = catalog()
    build(Site(pages))
    out = tmp_path / "site"
    (out / "products/p3/index.html").unlink()
    pages[1] = page("/products/p0/", "Product 0", "changed copy")
    with pytest.raises(PublishError, match=r"products/p3/index\.html is missing .*--full"):
        build(Site(pages))
    assert os.readlink(out) == ".site.generations/1/site"
    report = build(Site(pages), full=True)
    assert report.changed and (out / "products/p3/index.html").is_file()
    assert b"changed copy" in (out / "products/p0/index.html").read_bytes()


def test_removed_pages_are_deleted(build: Build, tmp_path: Path) -> None:
    pages = catalog(3)
    build(Site(pages))
    out = tmp_path / "site"
    assert (out / "products/p2/index.html").exists()
    report = build(Site([p for p in pages if p.path != "/products/p2/"]))
    assert report.removed == 1 and report.changed
    assert not (out / "products/p2").exists()
    assert "/products/p2/" not in (out / "sitemap.xml").read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_half_way_leaves_the_live_site_intact(
    settings: dict[str, Any], tmp_path: Path, workers: int
) -> None:
    settings["BUILD_WORKERS"] = workers
    pages = catalog(40)
    publish_site(Site(pages), settings, render=Renderer(), parallel_min_pages=1)
    out = tmp_path / "site"
    link = (os.readlink(out), os.lstat(out).st_ino, os.lstat(out).st_mtime_ns)
    before = snapshot(out.resolve())
    published = site_files(out)
    changed = [page(p.path, p.path, "changed", indexable=p.indexable) for p in pages]
    with pytest.raises(PageRenderError, match=r"page /\S* failed to render: .*RuntimeError: boom"):
        publish_site(Site(changed), settings, render=Renderer(fail_on=20), parallel_min_pages=1)
    assert (os.readlink(out), os.lstat(out).st_ino, os.lstat(out).st_mtime_ns) == link
    assert snapshot(out.resolve()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".site.generations", "site"]
    assert site_files(out) == published
    leftovers = [p.name for p in generations(out).iterdir()]
    assert sorted(leftovers) == [".lock", "1"]


def test_a_killed_build_leaves_nothing_behind_for_the_next(build: Build, tmp_path: Path) -> None:
    build(Site(catalog()))
    partial = generations(tmp_path / "site") / ".building-2-99999" / "site"
    partial.mkdir(parents=True)
    (partial / "index.html").write_text("half")
    build(Site(catalog()))
    assert not partial.parent.exists()


def test_switch_is_one_symlink_and_old_generations_are_pruned(
    build: Build, settings: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "site"
    for round_ in range(1, 6):
        build(Site([page("/", "Home", f"round {round_}")]))
        assert os.readlink(out) == f".site.generations/{round_}/site"
    kept = sorted(p.name for p in generations(out).iterdir() if p.name.isdigit())
    assert kept == ["3", "4", "5"]  # the live one and BUILD_GENERATIONS_KEPT=2 before it
    assert not [p for p in tmp_path.iterdir() if ".switch-" in p.name]


def test_output_layout_survives_moving_the_instance(build: Build, tmp_path: Path) -> None:
    build(Site(catalog(1)))
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    try:
        assert (moved / "site" / "index.html").read_bytes().startswith(b"<!doctype html>")
    finally:
        moved.rename(tmp_path)


def test_parallel_rendering_writes_the_same_site(settings: dict[str, Any], tmp_path: Path) -> None:
    pages = catalog(60)
    publish_site(Site(pages), settings, render=Renderer(), out=tmp_path / "serial")
    settings["BUILD_WORKERS"] = 2
    report = publish_site(
        Site(pages), settings, render=Renderer(), out=tmp_path / "parallel", parallel_min_pages=1
    )
    assert report.rendered == len(pages)
    assert site_files(tmp_path / "serial") == site_files(tmp_path / "parallel")


class PidRecorder(Renderer):
    """Render like ``Renderer`` and note which process rendered each page."""

    def __init__(self, log: Path) -> None:
        super().__init__()
        self.log = log
        self.prepared = 0

    def prepare(self) -> None:
        self.prepared += 1

    def __call__(self, plan: Page) -> bytes:
        with self.log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        return super().__call__(plan)


def test_render_workers_are_replaced_by_fresh_forks_and_write_the_same_site(
    settings: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.publish.render as render_module

    # A worker renders one chunk (16 pages) and is replaced, sharing the parent's memory anew.
    monkeypatch.setattr(render_module, "PAGES_PER_WORKER", 16)
    pages = catalog(200)
    publish_site(Site(pages), settings, render=Renderer(), out=tmp_path / "serial")
    settings["BUILD_WORKERS"] = 2
    renderer = PidRecorder(tmp_path / "pids.txt")
    report = publish_site(
        Site(pages), settings, render=renderer, out=tmp_path / "parallel", parallel_min_pages=1
    )
    pids = (tmp_path / "pids.txt").read_text().split()
    assert report.rendered == len(pages) == len(pids)
    assert str(os.getpid()) not in pids
    assert len(set(pids)) >= len(pages) // 16  # a new process per chunk of 16 pages
    assert renderer.prepared == 1  # templates compiled once, in the parent, before forking
    assert site_files(tmp_path / "serial") == site_files(tmp_path / "parallel")


def test_progress_reports_rendered_pages(build: Build) -> None:
    calls: list[tuple[int, int]] = []
    build(Site(catalog(3)), progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)


# ------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "path",
    [
        "/../etc/passwd",
        "/products/../../escape/",
        "relative/",
        "",
        "//etc/",
        "/a\\..\\..\\b/",
        "/a\x00b/",
        "/%2e%2e/x/",
        "/a/%2F..%2F..%2Fx/",
        "/a/%00/",
        "/with space/",
        "/a/./b/",
        "/q?x=1",
        "/api/products/",
        "/healthz",
        "/sitemap.xml",
        "/sitemap-2.xml",
        "/robots.txt",
        "/_redirects",
    ],
)
def test_unsafe_or_reserved_paths_are_refused(build: Build, tmp_path: Path, path: str) -> None:
    with pytest.raises(UnsafePathError):
        build(Site([page("/", "Home"), page(path, "Bad")]))
    assert not (tmp_path / "site").exists()
    assert not generations(tmp_path / "site").exists()


def test_safe_join_refuses_escapes(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/index.html") == str(tmp_path / "a/index.html")
    for relative in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(UnsafePathError):
            safe_join(tmp_path, relative)


def test_paths_map_to_files() -> None:
    assert file_for_path("/") == "index.html"
    assert file_for_path("/products/tent/") == "products/tent/index.html"
    assert file_for_path("/categories/c/page/2/") == "categories/c/page/2/index.html"
    assert file_for_path("/404.html") == "404.html"
    assert file_for_path("/products/caf%C3%A9/") == "products/caf%C3%A9/index.html"


@pytest.mark.parametrize(
    ("site", "message"),
    [
        (Site([page("/a/", "A"), page("/a/index.html", "B")]), "written twice"),
        (Site([page("/a/", "A"), page("/a/", "A again")]), "written twice"),
        (
            Site([page("/assets/x.css", "A")], assets={"/assets/x.css": Path("x.css")}),
            "written twice",
        ),
        (Site([page("/a", "A"), page("/a/b/", "B")]), "need as a folder"),
        (Site([page("/a/", "A")], redirects=[Redirect("/a/", "/b/", 301)]), "would hide the page"),
        (
            Site(
                [page("/", "H")], redirects=[Redirect("/x/", "/", 301), Redirect("/x/", None, 410)]
            ),
            "planned twice",
        ),
        (Site([page("/", "H")], redirects=[Redirect("/x/", "/y/", 410)]), "410 has no target"),
        (Site([page("/", "H")], redirects=[Redirect("/x/", "/a b/", 301)]), "not allowed"),
        (
            Site([page("/", "H")], redirects=[Redirect("/x/", "https://e.test/;return 200", 301)]),
            "absolute http",
        ),
    ],
)
def test_conflicting_plans_are_refused(
    build: Build, tmp_path: Path, site: Site, message: str
) -> None:
    with pytest.raises(PublishError, match=message):
        build(site)
    assert not (tmp_path / "site").exists()


def test_a_foreign_output_folder_is_refused(build: Build, tmp_path: Path) -> None:
    out = tmp_path / "site"
    out.mkdir()
    (out / "mine.html").write_text("keep me")
    with pytest.raises(PublishError, match="not written by engine build"):
        build(Site(catalog(1)))
    assert (out / "mine.html").read_text() == "keep me"
    assert not generations(out).exists()


def test_a_foreign_symlink_is_refused(build: Build, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "site").symlink_to(elsewhere)
    with pytest.raises(PublishError, match="not to a site built by engine build"):
        build(Site(catalog(1)))
    assert list(elsewhere.iterdir()) == []


def test_an_empty_output_folder_is_taken_over(build: Build, tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    build(Site(catalog(1)))
    assert (tmp_path / "site").is_symlink()


def test_a_relative_base_url_is_refused(build: Build) -> None:
    with pytest.raises(PublishError, match="absolute http"):
        build(Site(catalog(1)), base_url="shop.test")


def test_a_render_error_names_the_template_line(build: Build, tmp_path: Path) -> None:
    (tmp_path / "theme").mkdir()
    (tmp_path / "theme/bad.html.j2").write_text("line one\n{{ product.price.amount }}\n")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(tmp_path / "theme"), undefined=jinja2.StrictUndefined
    )

    def render(plan: Page) -> bytes:
        return env.get_template(plan.template).render(plan.context).encode()

    bad = Page("/products/x/", "k", "bad.html.j2", {})
    with pytest.raises(
        PageRenderError, match=r"page /products/x/ .*bad\.html\.j2:2: UndefinedError"
    ):
        build(Site([bad]), render)


# ----------------------------------------------------------------------- sitemaps


def parse_urlset(data: bytes) -> list[tuple[str, str]]:
    """Parse a sitemap and check it against the sitemaps.org rules; return (loc, lastmod)."""
    root = etree.fromstring(data)
    assert root.tag == f"{{{SITEMAP_NS}}}urlset"
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert len(data) <= 50 * 1024 * 1024
    urls = root.findall("s:url", NS)
    assert len(urls) <= 50000
    result = []
    for url in urls:
        children = [etree.QName(child).localname for child in url]
        assert children == ["loc", "lastmod"]  # no changefreq or priority
        loc, lastmod = (
            url.findtext("s:loc", namespaces=NS),
            url.findtext("s:lastmod", namespaces=NS),
        )
        assert loc and loc.startswith(BASE + "/") and len(loc) < 2048
        assert lastmod and re.fullmatch(r"\d{4}-\d{2}-\d{2}", lastmod)
        result.append((loc, lastmod))
    return result


def test_sitemap_lists_indexable_pages_with_absolute_urls(build: Build, tmp_path: Path) -> None:
    pages = [*catalog(2), page("/hidden/", "Hidden", indexable=False), page("/a&b/", "Amp")]
    build(Site(pages), today="2024-05-01")
    entries = parse_urlset((tmp_path / "site/sitemap.xml").read_bytes())
    assert entries == [
        (f"{BASE}/", "2024-05-01"),
        (f"{BASE}/a&b/", "2024-05-01"),
        (f"{BASE}/products/p0/", "2024-05-01"),
        (f"{BASE}/products/p1/", "2024-05-01"),
    ]
    assert b"/a&amp;b/" in (tmp_path / "site/sitemap.xml").read_bytes()


def test_base_url_option_wins_over_site_url(build: Build, tmp_path: Path) -> None:
    build(Site(catalog(1)), base_url="https://www.example.org/")
    assert b"<loc>https://www.example.org/</loc>" in (tmp_path / "site/sitemap.xml").read_bytes()
    assert (
        "Sitemap: https://www.example.org/sitemap.xml" in (tmp_path / "site/robots.txt").read_text()
    )


def test_sitemap_splits_into_an_index(
    build: Build, settings: dict[str, Any], tmp_path: Path
) -> None:
    settings["SITEMAP_MAX_URLS"] = 2
    build(Site(catalog(4)), today="2024-05-01")  # 5 indexable pages
    out = tmp_path / "site"
    index = etree.fromstring((out / "sitemap.xml").read_bytes())
    assert index.tag == f"{{{SITEMAP_NS}}}sitemapindex"
    locs = [s.findtext("s:loc", namespaces=NS) for s in index.findall("s:sitemap", NS)]
    assert locs == [f"{BASE}/sitemap-{n}.xml" for n in (1, 2, 3)]
    seen = []
    for n in (1, 2, 3):
        entries = parse_urlset((out / f"sitemap-{n}.xml").read_bytes())
        assert 1 <= len(entries) <= 2
        seen += [loc for loc, _ in entries]
    assert len(seen) == 5 == len(set(seen))
    settings["SITEMAP_MAX_URLS"] = 50000
    report = build(Site(catalog(4)), today="2024-05-01")
    assert report.removed == 3
    assert not (out / "sitemap-1.xml").exists()


def test_sitemap_splits_by_size() -> None:
    entries = [(f"/products/p{i}/", "2024-05-01") for i in range(10)]
    files = sitemap_files(entries, BASE, max_bytes=400)
    assert len(files) > 2
    for path, data in files.items():
        if path != "/sitemap.xml":
            assert len(data) <= 400
            parse_urlset(data)


def test_lastmod_moves_only_when_bytes_change(build: Build, tmp_path: Path) -> None:
    pages = catalog(2)
    build(Site(pages), today="2024-01-01")
    pages[1] = page("/products/p0/", "Product 0", "Changed copy")
    pages[2] = page("/products/p1/", "Product 1", "Copy 1", salt="new template, same bytes")
    build(Site(pages), today="2024-02-01")
    pages[1] = page("/products/p0/", "Product 0", "Changed copy", salt="again")
    build(Site(pages), today="2024-03-01", full=True)
    lastmods = dict(parse_urlset((tmp_path / "site/sitemap.xml").read_bytes()))
    assert lastmods == {
        f"{BASE}/": "2024-01-01",
        f"{BASE}/products/p0/": "2024-02-01",
        f"{BASE}/products/p1/": "2024-01-01",
    }


# ------------------------------------------------------------ robots and redirects


def test_robots_txt_allows_pages_and_names_the_sitemap(build: Build, tmp_path: Path) -> None:
    build(Site(catalog(1)))
    robots = (tmp_path / "site/robots.txt").read_text()
    assert robots == (
        "User-agent: *\n"
        "Allow: /\n"
        "Disallow: /api/\n"
        "Disallow: /hooks/\n"
        "Disallow: /waitlist/\n"
        "Disallow: /unsubscribe/\n"
        "Disallow: /admin/\n"
        "Disallow: /healthz\n"
        "\n"
        "Sitemap: https://shop.test/sitemap.xml\n"
    )


def test_redirect_rules_for_static_hosts_and_nginx(build: Build, tmp_path: Path) -> None:
    redirects = [
        Redirect("/products/old/", "/products/p0/", 301),
        Redirect("/products/gone/", None, 410),
        Redirect("/compare/b-vs-a/", "/compare/a-vs-b/", 301),
    ]
    build(Site(catalog(1), redirects=redirects))
    out = tmp_path / "site"
    rules = [
        line for line in (out / "_redirects").read_text().splitlines() if not line.startswith("#")
    ]
    assert rules == [
        "/compare/b-vs-a/ /compare/a-vs-b/ 301",
        "/products/gone/ /404.html 410",
        "/products/old/ /products/p0/ 301",
    ]
    nginx = [
        line
        for line in (out / "redirects.nginx.conf").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert nginx == [
        "location = /compare/b-vs-a/ { return 301 https://shop.test/compare/a-vs-b/; }",
        "location = /compare/b-vs-a { return 301 https://shop.test/compare/a-vs-b/; }",
        "location = /products/gone/ { return 410; }",
        "location = /products/gone { return 410; }",
        "location = /products/old/ { return 301 https://shop.test/products/p0/; }",
        "location = /products/old { return 301 https://shop.test/products/p0/; }",
    ]


# ---------------------------------------------------------------- PUBLISH_COMMAND


@pytest.fixture
def runs(tmp_path: Path, settings: dict[str, Any]) -> Iterator[Path]:
    """Configure a PUBLISH_COMMAND that logs its working folder and ENGINE_SITE_DIR."""
    log = tmp_path / "runs.log"
    settings["PUBLISH_COMMAND"] = (
        f'echo "$(pwd -P) $ENGINE_SITE_DIR $(cat index.html | wc -c)" >> {log}'
    )
    yield log


def test_publish_command_runs_in_the_new_generation(
    build: Build, runs: Path, tmp_path: Path
) -> None:
    report = build(Site(catalog(1)))
    assert report.publish == "ran"
    cwd, site_dir, size = runs.read_text().split()
    generation = str((tmp_path / "site").resolve())
    assert cwd == site_dir == generation
    assert int(size) > 0
    report = build(Site(catalog(1)))
    assert report.publish == "skipped: nothing changed"
    assert len(runs.read_text().splitlines()) == 1
    build(Site(catalog(2)))
    assert len(runs.read_text().splitlines()) == 2


def test_publish_command_failure_is_reported_and_retried(
    build: Build, settings: dict[str, Any], tmp_path: Path
) -> None:
    settings["PUBLISH_COMMAND"] = "echo deploying; exit 3"
    with pytest.raises(
        PublishCommandError, match="exited with status 3; the site is built"
    ) as info:
        build(Site(catalog(1)))
    assert info.value.report.changed and info.value.report.publish == "failed"
    assert (tmp_path / "site/index.html").exists()
    # Nothing changed since, but the last deploy failed: the next build tries again.
    marker = tmp_path / "deployed"
    settings["PUBLISH_COMMAND"] = f"touch {marker}"
    report = build(Site(catalog(1)))
    assert not report.changed and report.publish == "ran" and marker.exists()


def test_publish_command_timeout(build: Build, settings: dict[str, Any]) -> None:
    settings["PUBLISH_COMMAND"] = "sleep 5"
    settings["PUBLISH_TIMEOUT_SECONDS"] = 0.2
    with pytest.raises(PublishCommandError, match=r"did not finish within 0\.2 s"):
        build(Site(catalog(1)))


# ------------------------------------------------------------ recycled generations


@pytest.mark.parametrize("seed", range(4))
def test_incremental_builds_always_equal_a_fresh_build(
    settings: dict[str, Any], tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    settings["BUILD_WORKERS"] = 2
    pages = {p.path: p for p in catalog(30)}
    out = tmp_path / "site"
    history: dict[str, dict[str, bytes]] = {}
    for step in range(14):
        for _ in range(rng.randrange(0, 6)):
            action = rng.choice(["change", "remove", "add", "salt", "nested", "none"])
            path = rng.choice(sorted(pages))
            if action == "change" and path != "/404.html":
                pages[path] = page(path, path, f"step {step} {rng.random()}")
            elif action == "remove" and path not in ("/", "/404.html"):
                del pages[path]
            elif action == "add":
                new = f"/products/n{rng.randrange(60)}/"
                pages[new] = page(new, new, f"added {step}")
            elif action == "salt" and path != "/404.html":
                old = pages[path]
                pages[path] = page(path, old.context["title"], old.context["body"], salt=str(step))
            elif action == "nested":
                new = f"/categories/c{rng.randrange(3)}/page/{rng.randrange(2, 5)}/"
                pages[new] = page(new, new, f"nested {step}")
        site = Site(sorted(pages.values(), key=lambda p: p.path))
        min_pages = rng.choice([1, 1000])
        publish_site(site, settings, render=Renderer(), today="2024-01-01",
                     parallel_min_pages=min_pages)  # fmt: skip
        fresh = tmp_path / f"fresh-{step}"
        publish_site(site, settings, render=Renderer(), out=fresh, today="2024-01-01")
        assert site_files(out) == site_files(fresh), f"step {step}"
        history[os.readlink(out)] = site_files(out)
        # Kept older generations still hold exactly what they held when they were live.
        for link, files in history.items():
            folder = tmp_path / link
            if folder.exists():
                assert site_files(folder) == files, f"{link} changed at step {step}"
        assert not [p for p in generations(out).iterdir() if p.name.startswith(".building")]


def test_a_recycled_generation_is_used_instead_of_a_new_copy(build: Build, tmp_path: Path) -> None:
    pages = catalog(5)
    for n in range(3):
        pages[0] = page("/", "Home", f"round {n}")
        build(Site(pages))
    out = tmp_path / "site"
    oldest = snapshot(generations(out) / "1")
    pages[0] = page("/", "Home", "round 3")
    build(Site(pages))
    assert os.readlink(out) == ".site.generations/4/site"
    assert not (generations(out) / "1").exists()
    # Generation 1's folders and unchanged files carry on as generation 4.
    recycled = snapshot(generations(out) / "4")
    assert recycled["site/products"] == oldest["site/products"]
    assert recycled["site/products/p0/index.html"][0] == oldest["site/products/p0/index.html"][0]


# ------------------------------------------- the real plan: demo store, CLI, databases


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """Build the bundled demo store's content (serially: the demo is small)."""
    return {**config, "CONTENT_DIR": str(bundled_path("demo_content")), "BUILD_WORKERS": 1}


@pytest.fixture
def demo(app: Flask, db: Database) -> Flask:
    """Return the app with the demo catalog imported."""
    with db.session() as session:
        seed_demo(session)
    return app


def build_demo_site(app: Flask, db: Database, **kwargs: Any) -> BuildReport:
    """Run build_site with the app's settings in a session of its own."""
    with db.session() as session:
        return build_site(session, app.config, **kwargs)


def test_build_site_publishes_the_demo_store(demo: Flask, db: Database) -> None:
    report = build_demo_site(demo, db)
    out = Path(demo.config["OUTPUT_DIR"])
    assert report.changed and report.removed == 0 and report.written > 50
    entries = parse_urlset((out / "sitemap.xml").read_bytes())
    for loc, _lastmod in entries:
        assert (out / file_for_path(loc.removeprefix(BASE))).is_file(), loc
    assert (out / "404.html").is_file()
    assert f"{BASE}/404.html" not in dict(entries)
    rules = (out / "_redirects").read_text()
    assert re.search(r"^/products/\S+/ (/products/\S+/ 301|/404\.html 410)$", rules, re.M)
    again = build_demo_site(demo, db)
    assert (again.written, again.rendered, again.changed) == (0, 0, False)


def test_a_stock_change_rewrites_only_the_pages_that_show_it(demo: Flask, db: Database) -> None:
    build_demo_site(demo, db)
    out = Path(demo.config["OUTPUT_DIR"])
    before = manifest(out)["files"]
    with db.session() as session:
        variant = session.scalars(
            select(Variant)
            .join(Product)
            .where(Product.status == "active", Variant.sellable, Variant.inventory_tracked)
            .order_by(Variant.sku)
        ).first()
        assert variant is not None
        handle, sku = variant.product.handle, variant.sku
        set_stock(session, variant, 0, source="cli")
    report = build_demo_site(demo, db, progress=None)
    after = manifest(out)["files"]
    changed = {
        path for path in after if before.get(path, {}).get("sha256") != after[path]["sha256"]
    }
    assert f"/products/{handle}/" in changed, sku
    assert report.written == len(changed) < len(after) // 4
    assert report.rendered < len(after) // 2
    assert all(after[p]["sha256"] == before[p]["sha256"] for p in after if p not in changed)


def test_the_first_stock_change_after_a_first_build_reuses_the_parsed_content(
    demo: Flask, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.content

    build_demo_site(demo, db)  # into an output folder that did not exist
    parsed: list[Path] = []
    original = engine.content.load_content

    def load_content(folder: Path) -> Any:
        parsed.append(folder)
        return original(folder)

    monkeypatch.setattr(engine.content, "load_content", load_content)
    with db.session() as session:
        variant = session.scalars(
            select(Variant).where(Variant.sellable, Variant.inventory_tracked).order_by(Variant.sku)
        ).first()
        assert variant is not None
        set_stock(session, variant, 0, source="cli")
    report = build_demo_site(demo, db)
    assert report.changed and report.partial
    assert parsed == []  # the first build kept its parsed content for this one


def test_stock_changes_plan_only_their_pages_and_equal_a_fresh_build(
    demo: Flask, db: Database, tmp_path: Path
) -> None:
    build_demo_site(demo, db)
    out = Path(demo.config["OUTPUT_DIR"])
    rng = random.Random(7)
    with db.session() as session:
        skus = session.scalars(
            select(Variant.sku).join(Product).where(Product.status == "active")
            .order_by(Variant.sku)
        ).all()  # fmt: skip
    for step in range(6):
        with db.session() as session:
            for sku in rng.sample(skus, rng.choice([1, 1, 3])):
                variant = session.scalars(select(Variant).where(Variant.sku == sku)).one()
                set_stock(session, variant, rng.choice([0, 0, 2, 9]), source="cli")
        report = build_demo_site(demo, db)
        assert report.partial, f"step {step}"
        fresh = build_demo_site(demo, db, out=tmp_path / f"fresh-{step}")
        assert not fresh.partial
        assert site_files(out) == site_files(tmp_path / f"fresh-{step}"), f"step {step}"
    # Anything besides stock (here a title) plans the whole site again.
    with db.session() as session:
        product = session.scalars(select(Product).where(Product.status == "active")).first()
        assert product is not None
        product.title = "Renamed " + product.title
    report = build_demo_site(demo, db)
    assert not report.partial and report.written >= 1
    assert site_files(out) == site_files(build_demo_site(demo, db, out=tmp_path / "f").output)


@pytest.fixture
def change_stock(demo: Flask, db: Database) -> Callable[..., None]:
    """Return a function that sets one demo variant's stock: a stock change.

    Always the same variant: a sellable, tracked variant of an active product when the
    test began.
    """
    with db.session() as session:
        variant_id = session.scalars(
            select(Variant.id).join(Product).where(
                Product.status == "active", Variant.sellable, Variant.inventory_tracked
            ).order_by(Product.handle, Variant.id)
        ).first()  # fmt: skip

    def change(quantity: int = 0) -> None:
        with db.session() as session:
            set_stock(session, session.get_one(Variant, variant_id), quantity, source="cli")

    return change


@pytest.fixture
def prestages(monkeypatch: pytest.MonkeyPatch) -> list[Prestage | None]:
    """Record what each build's ``Prestage.start`` returned."""
    started: list[Prestage | None] = []
    original = Prestage.start.__func__  # type: ignore[attr-defined]

    def start(cls: type[Prestage], *args: Any) -> Prestage | None:
        started.append(original(cls, *args))
        return started[-1]

    monkeypatch.setattr(Prestage, "start", classmethod(start))
    return started


def test_the_first_stock_changes_adopt_a_copy_made_while_planning(
    demo: Flask,
    db: Database,
    tmp_path: Path,
    prestages: list[Prestage | None],
    change_stock: Callable[..., None],
) -> None:
    build_demo_site(demo, db)  # from scratch: nothing to copy, nothing to recycle
    assert prestages == [None]
    out = Path(demo.config["OUTPUT_DIR"])
    first = snapshot(generations(out) / "1")
    change_stock()
    report = build_demo_site(demo, db)
    assert report.changed and report.written >= 1
    copy = prestages[-1]
    assert copy is not None and copy.status == 0  # the child copied the live generation
    names = sorted(p.name for p in generations(out).iterdir() if not p.name.startswith(".c"))
    assert names == [".lock", ".templates", "1", "2"]  # adopted: no copy or spare left
    second = snapshot(generations(out) / "2")
    # Unchanged files are the live generation's inodes; changed ones are new files.
    changed = [p for p in second if p.endswith(".html") and second[p][0] != first[p][0]]
    assert changed and len(changed) == report.written - ("sitemap.xml" in str(changed))
    assert site_files(out) == site_files(build_demo_site(demo, db, out=tmp_path / "f").output)
    # From the third change on there is a generation to recycle: nothing is copied.
    change_stock(5)
    build_demo_site(demo, db)
    assert prestages[-1] is not None
    change_stock(0)
    build_demo_site(demo, db)
    assert prestages[-1] is None and os.readlink(out) == ".site.generations/4/site"


def test_an_unused_copy_becomes_the_spare_the_next_build_recycles(
    demo: Flask,
    db: Database,
    tmp_path: Path,
    prestages: list[Prestage | None],
    change_stock: Callable[..., None],
) -> None:
    build_demo_site(demo, db)
    out = Path(demo.config["OUTPUT_DIR"])
    content = tmp_path / "content"
    shutil.copytree(demo.config["CONTENT_DIR"], content)
    demo.config["CONTENT_DIR"] = str(content)
    (content / "guides" / "broken.md").write_text("---\ntitle: [unclosed\n---\n")
    change_stock()
    with pytest.raises(ContentErrors):
        build_demo_site(demo, db)  # a content mistake stops the build after the copy began
    assert prestages[-1] is not None
    spare = generations(out) / ".spare"
    assert sorted(manifest(out)["files"]) == sorted(
        json.loads((spare / "manifest.json").read_text())["files"]
    )
    assert os.readlink(out) == ".site.generations/1/site"
    assert not list(generations(out).glob(".prestage-*"))
    (content / "guides" / "broken.md").unlink()
    spare_folders = snapshot(spare)
    report = build_demo_site(demo, db)
    assert report.changed and prestages[-1] is None  # the spare was there: no new copy
    assert not spare.exists()
    assert snapshot(generations(out) / "2")["site/products"] == spare_folders["site/products"]
    assert site_files(out) == site_files(build_demo_site(demo, db, out=tmp_path / "f").output)


def test_a_failed_copy_falls_back_to_staging_the_tree_itself(
    demo: Flask,
    db: Database,
    tmp_path: Path,
    prestages: list[Prestage | None],
    monkeypatch: pytest.MonkeyPatch,
    change_stock: Callable[..., None],
) -> None:
    build_demo_site(demo, db)
    out = Path(demo.config["OUTPUT_DIR"])
    # A copy a killed build left behind (its process is gone) is deleted by the next build.
    leftover = generations(out) / ".prestage-999999999"
    (leftover / "site").mkdir(parents=True)

    def half_copy(live: Path, destination: Path, manifest: Any) -> None:
        (destination / "site" / "products").mkdir(parents=True)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.publish.generations, "copy_generation", half_copy)
    change_stock()
    report = build_demo_site(demo, db)
    copy = prestages[-1]
    assert copy is not None and copy.status != 0
    assert report.changed and report.written >= 1
    assert not leftover.exists() and not (generations(out) / ".spare").exists()
    assert not list(generations(out).glob(".prestage-*"))
    assert site_files(out) == site_files(build_demo_site(demo, db, out=tmp_path / "f").output)


def test_cli_build_prints_counts_and_time(demo: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["build"])
    assert result.exit_code == 0, result.output
    out = demo.config["OUTPUT_DIR"]
    assert re.fullmatch(rf"written \d+, unchanged 0, removed 0 in [\d.]+ s: {out}\n", result.stdout)
    again = runner.invoke(args=["build"])
    assert again.exit_code == 0
    assert re.match(r"written 0, unchanged \d+, removed 0 in [\d.]+ s: ", again.stdout)
    assert "nothing changed: the published site was left as it was" in again.stdout


def test_cli_build_out_and_base_url(demo: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "public"
    result = runner.invoke(args=["build", "--out", str(other), "--base-url", "https://e.test/"])
    assert result.exit_code == 0, result.output
    assert "Sitemap: https://e.test/sitemap.xml" in (other / "robots.txt").read_text()
    assert b"<loc>https://e.test/</loc>" in (other / "sitemap.xml").read_bytes()
    assert not Path(demo.config["OUTPUT_DIR"]).exists()
    full = runner.invoke(
        args=["build", "--out", str(other), "--base-url", "https://e.test", "--full"]
    )
    assert full.exit_code == 0 and full.stdout.startswith("written 0, ")


def test_cli_build_stops_on_content_errors_before_writing(
    demo: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    content = tmp_path / "bad-content"
    shutil.copytree(bundled_path("demo_content"), content)
    (content / "categories" / "broken.md").write_text(
        "---\ntitle: Broken\ndescription: A category\ncolour: blue\nproducts:\n  - no-such-thing\n"
        "---\nBody\n"
    )
    demo.config["CONTENT_DIR"] = str(content)
    result = runner.invoke(args=["build"])
    assert result.exit_code == 1
    assert re.search(r"^categories/broken\.md:\d+: .*colour", result.stderr, re.M)
    assert "nothing was written" in result.stderr
    assert "Traceback" not in result.output
    assert not Path(demo.config["OUTPUT_DIR"]).exists()
    assert not generations(Path(demo.config["OUTPUT_DIR"])).exists()


def test_cli_build_refuses_a_foreign_output_folder(demo: Flask, runner: FlaskCliRunner) -> None:
    out = Path(demo.config["OUTPUT_DIR"])
    out.mkdir(parents=True)
    (out / "index.html").write_text("hand-made")
    result = runner.invoke(args=["build"])
    assert result.exit_code == 1
    assert "not written by engine build" in result.stderr
    assert (out / "index.html").read_text() == "hand-made"


def test_cli_build_reports_a_failed_publish_command(demo: Flask, runner: FlaskCliRunner) -> None:
    demo.config["PUBLISH_COMMAND"] = "echo uploading; exit 4"
    result = runner.invoke(args=["build"])
    assert result.exit_code == 3
    assert re.match(r"written \d+, unchanged 0, removed 0 in ", result.stdout)
    assert "error: PUBLISH_COMMAND exited with status 4; the site is built" in result.stderr
    assert (Path(demo.config["OUTPUT_DIR"]) / "index.html").is_file()
    demo.config["PUBLISH_COMMAND"] = "true"
    retry = runner.invoke(args=["build"])
    assert retry.exit_code == 0 and "PUBLISH_COMMAND ran" in retry.stdout
    done = runner.invoke(args=["build"])
    assert "PUBLISH_COMMAND not run: nothing changed since it last succeeded" in done.stdout


def test_render_workers_may_not_use_the_database(
    session: Session, settings: dict[str, Any]
) -> None:
    settings["BUILD_WORKERS"] = 2

    def render(plan: Page) -> bytes:
        session.scalars(select(Product)).all()
        return b"never"

    with pytest.raises(PageRenderError, match="queried the database while rendering"):
        publish_site(Site(catalog(4)), settings, render=render, parallel_min_pages=1)
    assert session.execute(select(func.count()).select_from(Product)).scalar_one() == 0


def test_an_unchanged_site_is_not_planned_again(demo: Flask, db: Database, tmp_path: Path) -> None:
    content = tmp_path / "demo-content"
    shutil.copytree(bundled_path("demo_content"), content)
    demo.config["CONTENT_DIR"] = str(content)
    first = build_demo_site(demo, db)
    again = build_demo_site(demo, db)
    assert "plan" not in again.phases
    assert (again.written, again.removed, again.changed) == (0, 0, False)
    assert again.unchanged == first.written
    full = build_demo_site(demo, db, full=True)
    assert "plan" in full.phases and full.rendered > 0 and full.written == 0
    guide = next((content / "categories").glob("*.md"))
    guide.write_text(guide.read_text() + "\nOne more sentence.\n")
    edited = build_demo_site(demo, db)
    assert "plan" in edited.phases and edited.written >= 1


def test_site_inputs_cover_every_table_the_plan_reads(demo: Flask, db: Database) -> None:
    tables: set[str] = set()

    def capture(*args: Any) -> None:
        statement = args[2]
        tables.update(t.lower() for t in re.findall(r'\b(?:FROM|JOIN)\s+"?(\w+)', statement, re.I))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.session() as session:
            plan_site(session, demo.config, load_content(Path(demo.config["CONTENT_DIR"])))
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    unread = tables - set(PLANNED_TABLES)
    assert tables and not unread, f"plan_site reads {unread}: add them to PLANNED_TABLES"
