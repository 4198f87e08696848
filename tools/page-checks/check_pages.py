"""Check a built site: Nu HTML Checker on every page, Lighthouse SEO and accessibility per template.

Serves the built folder on 127.0.0.1 with real status codes (the 404 page answers 404,
``_redirects`` rules answer 301 and 410), checks that every sitemap URL answers 200, runs
vnu on every HTML file and SVG, then Lighthouse on one page per template, and prints a
table. Exit status 0 only when vnu reports no error, every Lighthouse run scores SEO 100
and accessibility at least the minimum, and every sitemap URL is served.

Used by ``scripts/check-pages``; run it directly with ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
VNU_JAR = HERE / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
LIGHTHOUSE = HERE / "node_modules" / ".bin" / "lighthouse"
SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"

#: One page per template: (label, URL path).
TEMPLATE_PAGES = [
    ("home", "/"),
    ("product, in stock", "/products/ridgeline-ul1-tent/"),
    ("product, variants (one size sold out)", "/products/talus-ridge-runner/"),
    ("product, back soon", "/products/cairnwood-trekker-2/"),
    ("product, backorder", "/products/talus-summit-2/"),
    ("product, coming soon", "/products/ridgeline-ul1-carbon/"),
    ("category, page 1", "/categories/trail-footwear/"),
    ("category, page 2", "/categories/trail-footwear/page/2/"),
    ("comparison", "/compare/ridgeline-ul2-tent-vs-cairnwood-trekker-2/"),
    ("guide", "/guides/choosing-a-backpacking-tent/"),
    ("plain page", "/about/"),
]

CHROME_FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-background-networking "
    "--disable-component-update --disable-sync --no-first-run --disable-dev-shm-usage"
)


# ------------------------------------------------------------------------- server


def read_rules(root: Path) -> dict[str, tuple[int, str]]:
    """Return the ``_redirects`` rules: source path -> (status, target)."""
    rules: dict[str, tuple[int, str]] = {}
    path = root / "_redirects"
    if not path.is_file():
        return rules
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#") and parts[2].isdigit():
            rules[parts[0]] = (int(parts[2]), parts[1])
    return rules


def make_handler(root: Path) -> type[http.server.SimpleHTTPRequestHandler]:
    """Return a request handler serving ``root`` as a static host would."""
    rules = read_rules(root)
    not_found = root / "404.html"

    class StaticSite(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _page(self, status: int, body: bytes, head_only: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head_only:
                self.wfile.write(body)

        def _rule(self, head_only: bool) -> bool:
            path = unquote(urlsplit(self.path).path)
            rule = rules.get(path)
            if rule is None:
                return False
            status, target = rule
            if status in (301, 302, 307, 308):
                self.send_response(status)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                body = not_found.read_bytes() if not_found.is_file() else b""
                self._page(status, body, head_only)
            return True

        def do_GET(self) -> None:
            if not self._rule(head_only=False):
                super().do_GET()

        def do_HEAD(self) -> None:
            if not self._rule(head_only=True):
                super().do_HEAD()

        def list_directory(self, path: str | os.PathLike[str]) -> None:
            # A static host answers 404 for a folder without index.html, not a listing.
            self.send_error(404)

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            if code == 404 and not_found.is_file():
                self._page(404, not_found.read_bytes(), self.command == "HEAD")
                return
            super().send_error(code, message, explain)

    return StaticSite


def serve(root: Path, port: int) -> http.server.ThreadingHTTPServer:
    """Serve ``root`` on 127.0.0.1:port in a background thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ------------------------------------------------------------------------ sitemap


def sitemap_urls(root: Path, base_url: str) -> list[str]:
    """Return every page URL in the site's sitemap (following a sitemap index)."""
    urls: list[str] = []
    pending = ["/sitemap.xml"]
    while pending:
        tree = ET.parse(root / pending.pop().lstrip("/"))
        for loc in tree.iter(f"{SITEMAP_NS}loc"):
            url = (loc.text or "").strip()
            if tree.getroot().tag == f"{SITEMAP_NS}sitemapindex":
                pending.append(urlsplit(url).path)
            else:
                urls.append(url)
    foreign = [url for url in urls if not url.startswith(base_url + "/")]
    if foreign:
        raise SystemExit(f"sitemap URLs not under {base_url}: {foreign[:5]}")
    return urls


def status_of(url: str) -> int:
    """Return the HTTP status a GET of ``url`` answers (redirects not followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# ---------------------------------------------------------------------------- vnu


def run_vnu(root: Path) -> tuple[list[str], int]:
    """Run the Nu HTML Checker on every HTML and SVG file; return its errors and the count."""
    files = sorted(str(p) for p in root.rglob("*") if p.suffix in (".html", ".svg"))
    result = subprocess.run(
        [
            "java",
            "-Xss1024k",
            "-jar",
            str(VNU_JAR),
            "--errors-only",
            "--also-check-svg",
            "--format",
            "json",
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        messages = json.loads(result.stderr or result.stdout or '{"messages": []}')["messages"]
    except (ValueError, KeyError):
        failure = f"vnu failed (exit {result.returncode}): {result.stderr.strip()[:2000]}"
        return [failure], len(files)
    errors = []
    for message in messages:
        if message.get("type") not in ("error", "non-document-error"):
            continue
        where = Path(unquote(urlsplit(message.get("url", "")).path))
        with contextlib.suppress(ValueError):
            where = where.relative_to(root)
        line = message.get("lastLine", "")
        extract = " ".join(message.get("extract", "").split())
        errors.append(f"{where}:{line}: {message.get('message', '')}  [{extract[:120]}]")
    if result.returncode not in (0, 1) and not errors:
        errors.append(f"vnu failed (exit {result.returncode}): {result.stderr.strip()[:2000]}")
    return errors, len(files)


# --------------------------------------------------------------------- lighthouse


@dataclass
class Score:
    """One Lighthouse run: scores and the failing audits in the two categories."""

    label: str
    path: str
    seo: int | None = None
    accessibility: int | None = None
    failures: list[str] = field(default_factory=list)


def failing_audits(report: dict[str, Any], category: str) -> list[str]:
    """Return the audits that lost points in a category, with the elements they flag."""
    lines = []
    audits = report["audits"]
    for ref in report["categories"][category]["auditRefs"]:
        audit = audits[ref["id"]]
        if ref.get("weight", 0) == 0 or audit.get("score") in (1, None):
            continue
        if audit.get("scoreDisplayMode") in ("notApplicable", "manual", "informative"):
            continue
        lines.append(f"{category}: {audit['id']}: {audit.get('title', '')}")
        for item in (audit.get("details") or {}).get("items", [])[:5]:
            node = item.get("node") or {}
            detail = node.get("snippet") or item.get("source") or item.get("url") or ""
            explanation = node.get("explanation") or item.get("explanation") or ""
            text = " ".join(f"{detail} {explanation}".split())
            if text:
                lines.append(f"    {text[:300]}")
    return lines


def run_lighthouse(url: str, label: str, path: str, workdir: Path) -> Score:
    """Run Lighthouse (SEO and accessibility) on one URL."""
    score = Score(label=label, path=path)
    output = workdir / (path.strip("/").replace("/", "_") or "home")
    output = output.with_suffix(".json")
    env = {**os.environ, "CHROME_PATH": os.environ.get("CHROME_PATH", "/usr/bin/chromium")}
    result = subprocess.run(
        [
            str(LIGHTHOUSE),
            url,
            "--only-categories=seo,accessibility",
            "--output=json",
            f"--output-path={output}",
            f"--chrome-flags={CHROME_FLAGS}",
            "--quiet",
            "--no-enable-error-reporting",
            "--max-wait-for-load=30000",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    if result.returncode != 0 or not output.is_file():
        score.failures.append(
            f"lighthouse failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
        )
        return score
    report = json.loads(output.read_text(encoding="utf-8"))
    if report.get("runtimeError"):
        score.failures.append(f"lighthouse runtime error: {report['runtimeError']}")
    categories = report["categories"]
    for name in ("seo", "accessibility"):
        value = categories[name].get("score")
        setattr(score, name, None if value is None else round(value * 100))
        score.failures += failing_audits(report, name)
    return score


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Serve the site, run the checks, print the results; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site folder")
    parser.add_argument("--port", type=int, required=True, help="port the site was built for")
    parser.add_argument("--min-accessibility", type=int, default=95)
    parser.add_argument("--skip-lighthouse", action="store_true")
    parser.add_argument("--skip-vnu", action="store_true")
    parser.add_argument("--report-dir", type=Path, help="keep Lighthouse JSON reports here")
    args = parser.parse_args(argv)

    root = args.site.resolve()
    base_url = f"http://127.0.0.1:{args.port}"
    server = serve(root, args.port)
    failed = False
    try:
        urls = sitemap_urls(root, base_url)
        bad = [(url, code) for url in urls if (code := status_of(url)) != 200]
        missing = status_of(f"{base_url}/no-such-page/")
        print(
            f"sitemap: {len(urls)} URLs, {len(urls) - len(bad)} answer 200; "
            f"an unknown path answers {missing}"
        )
        for url, code in bad:
            print(f"  {url}: HTTP {code}")
        failed |= bool(bad) or missing != 404

        if not args.skip_vnu:
            errors, checked = run_vnu(root)
            print(f"vnu: {checked} files (HTML and SVG), {len(errors)} error(s)")
            for error in errors:
                print(f"  {error}")
            failed |= bool(errors)

        if not args.skip_lighthouse:
            workdir = args.report_dir or Path(tempfile.mkdtemp(prefix="lighthouse-"))
            workdir.mkdir(parents=True, exist_ok=True)
            scores = [
                run_lighthouse(base_url + path, label, path, workdir)
                for label, path in TEMPLATE_PAGES
            ]
            failed |= print_table(scores, args.min_accessibility)
    finally:
        server.shutdown()
    print("page checks: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


def print_table(scores: list[Score], min_accessibility: int) -> bool:
    """Print the Lighthouse table and the failing audits; return True if any page fails."""
    width = max(len(s.label) for s in scores)
    path_width = max(len(s.path) for s in scores)
    header = f"| {'template'.ljust(width)} | {'page'.ljust(path_width)} |"
    print(f"\n{header} SEO | Accessibility | result |")
    print(f"| {'-' * width} | {'-' * path_width} | --- | ------------- | ------ |")
    failed = False
    for s in scores:
        ok = s.seo == 100 and s.accessibility is not None and s.accessibility >= min_accessibility
        failed |= not ok
        seo = "-" if s.seo is None else str(s.seo)
        a11y = "-" if s.accessibility is None else str(s.accessibility)
        print(
            f"| {s.label.ljust(width)} | {s.path.ljust(path_width)} | {seo.rjust(3)} "
            f"| {a11y.rjust(13)} | {'pass' if ok else 'FAIL':6} |"
        )
    for s in scores:
        if s.failures:
            print(f"\n{s.path}:")
            for line in s.failures:
                print(f"  {line}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
