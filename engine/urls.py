"""The engine's own URL helper: page paths, absolute links, service and store links.

Pages, the live preview and emails all build links here (never Flask's ``url_for``), so a
static build, the preview and an email agree on every URL.
"""

from __future__ import annotations

import re
from urllib.parse import quote

#: Path prefixes the web service owns; no page may live under them.
RESERVED_PREFIXES = ("/api/", "/hooks/", "/waitlist/", "/unsubscribe/", "/admin/", "/healthz")


_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def segment(value: str) -> str:
    """Return one path segment, percent-encoded (handles and slugs are usually plain ASCII)."""
    value = str(value)
    if value in (".", ".."):
        return value.replace(".", "%2E")  # never a path step up or in place
    if _PLAIN_SEGMENT.fullmatch(value):
        return value
    return quote(value, safe="")


def is_reserved(path: str) -> bool:
    """Return True when a URL path belongs to the web service rather than to the pages."""
    return any(
        path == prefix.rstrip("/") or path.startswith(prefix) for prefix in RESERVED_PREFIXES
    )


class SiteURLs:
    """Paths of every page kind, plus absolute, service (API) and store (buy) links."""

    __slots__ = ("api_url", "site_url", "store_url")

    def __init__(self, site_url: str, api_url: str, store_url: str) -> None:
        self.site_url = site_url.rstrip("/")
        self.api_url = (api_url or site_url).rstrip("/")
        self.store_url = store_url.rstrip("/")

    def home(self) -> str:
        """Return the home page path."""
        return "/"

    def product(self, handle: str) -> str:
        """Return a product page path (every state uses the same URL)."""
        return f"/products/{segment(handle)}/"

    def category(self, slug: str, page: int = 1) -> str:
        """Return a category page path; page 2 onwards live under ``page/<n>/``."""
        if page <= 1:
            return f"/categories/{segment(slug)}/"
        return f"/categories/{segment(slug)}/page/{page}/"

    def compare(self, slug: str) -> str:
        """Return a comparison page path."""
        return f"/compare/{segment(slug)}/"

    def guide(self, slug: str) -> str:
        """Return a guide page path."""
        return f"/guides/{segment(slug)}/"

    def page(self, slug: str) -> str:
        """Return a plain page path."""
        return f"/{segment(slug)}/"

    def asset(self, name: str) -> str:
        """Return the path of a published static file (theme or content asset)."""
        return "/assets/" + quote(name.lstrip("/"), safe="/")

    def absolute(self, path: str) -> str:
        """Return ``SITE_URL`` + path; absolute URLs (``https:``, ``//host``) are left alone."""
        if "://" in path or path.startswith("//") or path.startswith(("mailto:", "tel:")):
            return path
        if not path.startswith("/"):
            path = "/" + path
        return self.site_url + path

    def api(self, path: str) -> str:
        """Return ``API_URL`` + path (signups, page views, email links to service routes)."""
        if not path.startswith("/"):
            path = "/" + path
        return self.api_url + path

    def buy(self, handle: str, variant_id: int | str | None = None) -> str:
        """Return the store's product link (``STORE_URL/products/<handle>``)."""
        link = f"{self.store_url}/products/{segment(handle)}"
        if variant_id is not None:
            link += f"?variant={segment(str(variant_id))}"
        return link
