"""Files written beside the pages: sitemaps, robots.txt and redirect rules for static hosts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

from engine.publish.paths import SERVICE_PREFIXES, PlannedRedirect

#: sitemaps.org: at most 50,000 URLs and 50 MB (52,428,800 bytes) uncompressed per file.
SITEMAP_MAX_BYTES = 50 * 1024 * 1024
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
SITEMAP_PATH = "/sitemap.xml"
ROBOTS_PATH = "/robots.txt"
NETLIFY_REDIRECTS_PATH = "/_redirects"
NGINX_REDIRECTS_PATH = "/redirects.nginx.conf"
NOT_FOUND_PATH = "/404.html"
_XML_QUOTES = {'"': "&quot;", "'": "&apos;"}
_XML_SPECIAL = re.compile("[&<>\"']")


def escape(text: str, entities: dict[str, str]) -> str:
    """Escape ``&``, ``<``, ``>`` and the given characters for XML (as ``xml.sax.saxutils``).

    Written out: ``xml.sax.saxutils`` imports ``urllib.request`` and ``http.client``.
    """
    text = text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
    for char, entity in entities.items():
        text = text.replace(char, entity)
    return text


_URL_SAFE = "/:@!$&'()*+,;=-._~%"
#: A path of these characters only is its own percent-encoding (the common case).
_ALREADY_QUOTED = re.compile(r"[A-Za-z0-9" + re.escape(_URL_SAFE) + r"]*")


def absolute_url(base_url: str, url_path: str) -> str:
    """Return the absolute, percent-encoded URL of a site path."""
    if _ALREADY_QUOTED.fullmatch(url_path):
        return base_url + url_path
    return base_url + quote(url_path, safe=_URL_SAFE)


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
        loc = absolute_url(base_url, url_path)
        if _XML_SPECIAL.search(loc):
            loc = escape(loc, _XML_QUOTES)
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
        loc = escape(absolute_url(base_url, path), _XML_QUOTES)
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
