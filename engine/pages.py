"""Decide which pages exist, what each shows, and render them with one plain Jinja2 environment.

``plan_site`` reads the whole catalog in two bulk queries, joins it with the Markdown
content and returns every page as a ``PagePlan`` (path, template, context and a key), plus
the redirects and the static files. ``render_page`` turns a plan into bytes. The same two
calls serve the static build, the live preview and (through ``make_environment``) email.

A plan's key digests everything its bytes depend on: the theme's template files, the
site-wide facts templates can see (``site``), the navigation, and the page's own context,
in which every product appears as a view object carrying a digest of exactly what the page
shows of it. A stock change therefore changes the key of the product's page and of the
pages that show the product's card, and of no other page.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import hashlib
import html as html_lib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jinja2
from markupsafe import Markup

from engine.catalog_rows import CatalogRows, read_catalog
from engine.content import (
    Content,
    ContentError,
    ContentErrors,
    Document,
    check_references,
    render_markdown,
)
from engine.settings import template_dirs
from engine.urls import SiteURLs

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SCHEMA = "https://schema.org/"
IN_STOCK = "InStock"
BACKORDER = "BackOrder"
OUT_OF_STOCK = "OutOfStock"
PRE_ORDER = "PreOrder"

#: Page template per product state; a store overrides any of them in TEMPLATES_DIR.
PRODUCT_TEMPLATES = {
    "in_stock": "pages/product.html.j2",
    "back_soon": "pages/back-soon.html.j2",
    "coming_soon": "pages/coming-soon.html.j2",
}
NOT_FOUND_PATH = "/404.html"
# Offers carry these until serialization splices in the site's shipping and returns JSON.
SHIPPING_PLACEHOLDER = "\x00shippingDetails\x00"
RETURNS_PLACEHOLDER = "\x00hasMerchantReturnPolicy\x00"
#: Rendered fragments (cards, header, footer) an environment keeps before starting over.
FRAGMENT_CACHE_LIMIT = 200_000
GONE_PATH = "/410.html"

#: Option names that map onto schema.org properties Google reads in ``variesBy``; other
#: options are stated as ``additionalProperty`` on each variant.
VARIES_BY = {"size": "size", "color": "color", "colour": "color", "material": "material",
             "pattern": "pattern"}  # fmt: skip

#: Comparison rows the engine fills from catalog data (other rows come from front matter).
BUILTIN_ROWS = ("price", "availability", "brand", "options", "weight")

# Display symbol and decimals; any other ISO code is written after the amount.
CURRENCY_FORMATS: dict[str, tuple[str, int]] = {
    "USD": ("$", 2), "EUR": ("€", 2), "GBP": ("£", 2), "CAD": ("CA$", 2), "AUD": ("A$", 2),
    "NZD": ("NZ$", 2), "JPY": ("¥", 0), "CHF": ("CHF ", 2), "SEK": ("SEK ", 2),
    "NOK": ("NOK ", 2), "DKK": ("DKK ", 2), "INR": ("₹", 2), "BRL": ("R$", 2),
}  # fmt: skip

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_JSON_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
# Files under these theme folders never reach a page, so they do not change page keys.
_NOT_PAGE_TEMPLATES = ("emails/",)


# --------------------------------------------------------------------------- public types


#: Completes a page's context from the part planning keeps (``PagePlan.fill``).
ContextFill = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PagePlan:
    """One page: where it goes, how it renders, and the key of everything its bytes use.

    Made with ``key_base`` instead of a ``key``, the key is computed when first asked for:
    a first build asks in its render workers, in parallel, not while planning.

    With a ``fill``, ``context`` holds only the page's ``PageMeta`` (under ``"page"``) and
    ``fill(context)`` returns the whole context. Product pages are planned that way: their
    related products, breadcrumbs and links are worked out when the page is rendered and
    dropped after, so a plan of 100,000 products holds no per-page lists.
    """

    path: str
    key_value: str | None
    template: str
    context: dict[str, Any]
    indexable: bool = True
    key_base: str = ""
    fill: ContextFill | None = field(default=None, compare=False, repr=False)
    #: Where the page comes when pages are rendered (``_Planner.render_order``).
    render_rank: int = field(default=0, compare=False)

    @property
    def key(self) -> str:
        """Return the digest of everything the page's bytes depend on."""
        if self.key_value is not None:
            return self.key_value
        fingerprint = _context_fingerprint(self.full_context())
        key = _hash(f"{self.key_base}|{self.template}|{self.path}|{fingerprint}")
        object.__setattr__(self, "key_value", key)
        return key

    def full_context(self) -> dict[str, Any]:
        """Return everything the page's template is rendered with."""
        return self.fill(self.context) if self.fill is not None else self.context

    def materialized(self) -> PagePlan:
        """Return this plan with its whole context, to render it and digest it once."""
        if self.fill is None:
            return self
        return dataclasses.replace(self, context=self.full_context(), fill=None)


@dataclass(frozen=True)
class Redirect:
    """A URL that moved (301 to ``target``) or is gone for good (410, ``target`` None)."""

    source: str
    target: str | None
    status: int


@dataclass
class Site:
    """Every page, redirect and static file the site has right now.

    ``renamed`` holds the title and description of the pages whose plain ones another page
    had first (see ``_make_unique``), so a later partial plan (``plan_changes``) keeps them.
    """

    pages: list[PagePlan]
    redirects: list[Redirect]
    assets: dict[str, Path]
    renamed: dict[str, tuple[str, str]] = field(default_factory=dict)

    def page(self, path: str) -> PagePlan | None:
        """Return the page at a URL path, if any."""
        index = self.__dict__.get("_pages_by_path")
        if index is None:
            index = {plan.path: plan for plan in self.pages}
            self.__dict__["_pages_by_path"] = index
        return index.get(path)

    def redirect(self, path: str) -> Redirect | None:
        """Return the redirect (or gone rule) for a URL path, if any."""
        index = self.__dict__.get("_redirects_by_path")
        if index is None:
            index = {rule.source: rule for rule in self.redirects}
            self.__dict__["_redirects_by_path"] = index
        return index.get(path)


# --------------------------------------------------------------------------- site facts


def price_valid_until(today: dt.date, days: int) -> dt.date:
    """Return Dec 31 of the year ``days`` after ``today``.

    A price promise that moved daily would change every product page every day; this one
    stays put all year and is always at least ``days`` away.
    """
    return dt.date((today + dt.timedelta(days=days)).year, 12, 31)


@dataclass(frozen=True)
class SiteInfo:
    """Every setting pages depend on; templates read it as ``site`` (no other settings).

    Its digest is part of every page key, so a setting that changes pages belongs here.
    """

    name: str
    url: str
    description: str
    language: str
    currency: str
    store_url: str
    api_url: str
    company_address: str
    price_valid_until: str
    shipping_country: str
    free_shipping: bool
    shipping_rate: Decimal
    handling_days: tuple[int, int]
    transit_days: tuple[int, int]
    return_days: int
    return_fees: str
    category_page_size: int
    related_products: int
    home_highlights: int
    # The waitlist form: its consent wording (and that wording's version) and quantity cap.
    waitlist_consent_text: str
    waitlist_consent_version: str
    waitlist_max_quantity: int
    digest: str = field(default="", compare=False)

    def shipping_details(self) -> dict[str, Any]:
        """Return the ``OfferShippingDetails`` every offer states."""
        rate = Decimal(0) if self.free_shipping else self.shipping_rate
        return {
            "@type": "OfferShippingDetails",
            "shippingRate": {
                "@type": "MonetaryAmount",
                "value": _decimal_text(rate),
                "currency": self.currency,
            },
            "shippingDestination": {
                "@type": "DefinedRegion",
                "addressCountry": self.shipping_country,
            },
            "deliveryTime": {
                "@type": "ShippingDeliveryTime",
                "handlingTime": _day_range(self.handling_days),
                "transitTime": _day_range(self.transit_days),
            },
        }

    @functools.cached_property
    def jsonld_fragments(self) -> dict[str, str]:
        """Return the shipping and returns JSON every offer repeats, serialized once."""
        return {
            json.dumps(SHIPPING_PLACEHOLDER): json.dumps(
                self.shipping_details(), ensure_ascii=False, separators=(",", ":")
            ),
            json.dumps(RETURNS_PLACEHOLDER): json.dumps(
                self.return_policy(), ensure_ascii=False, separators=(",", ":")
            ),
        }

    def return_policy(self) -> dict[str, Any]:
        """Return the ``MerchantReturnPolicy`` every offer states."""
        policy: dict[str, Any] = {
            "@type": "MerchantReturnPolicy",
            "applicableCountry": self.shipping_country,
        }
        if self.return_days <= 0:
            policy["returnPolicyCategory"] = SCHEMA + "MerchantReturnNotPermitted"
            return policy
        policy["returnPolicyCategory"] = SCHEMA + "MerchantReturnFiniteReturnWindow"
        policy["merchantReturnDays"] = self.return_days
        policy["returnMethod"] = SCHEMA + "ReturnByMail"
        policy["returnFees"] = SCHEMA + (
            "FreeReturn" if self.return_fees == "free" else "ReturnFeesCustomerResponsibility"
        )
        return policy


def _day_range(days: tuple[int, int]) -> dict[str, Any]:
    return {
        "@type": "QuantitativeValue",
        "minValue": days[0],
        "maxValue": days[1],
        "unitCode": "DAY",
    }


def site_info(
    settings: Mapping[str, Any], base_url: str | None = None, today: dt.date | None = None
) -> SiteInfo:
    """Return the site-wide facts for these settings (``base_url`` replaces ``SITE_URL``)."""
    fixed = str(settings.get("PRICE_VALID_UNTIL") or "").strip()
    if fixed:
        valid_until = dt.date.fromisoformat(fixed).isoformat()
    else:
        valid_until = price_valid_until(
            today or dt.date.today(), int(settings.get("PRICE_VALID_DAYS", 365))
        ).isoformat()
    site_url = str(base_url or settings["SITE_URL"]).rstrip("/")
    consent_text = str(settings.get("WAITLIST_CONSENT_TEXT") or "")
    info = SiteInfo(
        name=str(settings.get("SITE_NAME", "")),
        url=site_url,
        description=str(settings.get("SITE_DESCRIPTION", "")),
        language=str(settings.get("SITE_LANGUAGE") or "en"),
        currency=str(settings.get("CURRENCY") or "USD").upper(),
        store_url=str(settings.get("STORE_URL", "")).rstrip("/"),
        api_url=str(settings.get("API_URL") or site_url).rstrip("/"),
        company_address=str(settings.get("COMPANY_ADDRESS", "")),
        price_valid_until=valid_until,
        shipping_country=str(settings.get("SHIPPING_COUNTRY") or "US"),
        free_shipping=bool(settings.get("FREE_SHIPPING", True)),
        shipping_rate=Decimal(str(settings.get("SHIPPING_RATE") or "0")),
        handling_days=(
            int(settings.get("SHIPPING_HANDLING_DAYS_MIN", 0)),
            int(settings.get("SHIPPING_HANDLING_DAYS_MAX", 1)),
        ),
        transit_days=(
            int(settings.get("SHIPPING_TRANSIT_DAYS_MIN", 2)),
            int(settings.get("SHIPPING_TRANSIT_DAYS_MAX", 5)),
        ),
        return_days=int(settings.get("RETURN_DAYS", 30)),
        return_fees=str(settings.get("RETURN_FEES") or "free"),
        category_page_size=max(1, int(settings.get("CATEGORY_PAGE_SIZE", 24))),
        related_products=max(0, int(settings.get("RELATED_PRODUCTS", 4))),
        home_highlights=max(0, int(settings.get("HOME_HIGHLIGHTS", 8))),
        waitlist_consent_text=consent_text,
        waitlist_consent_version=consent_version(consent_text),
        waitlist_max_quantity=max(1, int(settings.get("WAITLIST_MAX_QUANTITY", 10))),
    )
    values = tuple(getattr(info, f.name) for f in dataclasses.fields(info) if f.name != "digest")
    return dataclasses.replace(info, digest=_hash(repr(values)))


def consent_version(text: str) -> str:
    """Return the version of a consent wording: a short digest, so any edit is a new version."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


def site_urls(info: SiteInfo) -> SiteURLs:
    """Return the URL helper for a site."""
    return SiteURLs(info.url, info.api_url, info.store_url)


# --------------------------------------------------------------------------- formatting


def format_money(amount: Decimal | int | float | str | None, currency: str = "USD") -> str:
    """Return an amount for display, e.g. ``$1,249.00`` (unknown currencies: ``12.00 XYZ``)."""
    if amount is None:
        return ""
    value = Decimal(str(amount))
    symbol, places = CURRENCY_FORMATS.get(currency.upper(), ("", 2))
    text = f"{value:,.{places}f}"
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def format_weight(grams: int) -> str:
    """Return a weight for display: grams below a kilogram, else kilograms."""
    if grams < 1000:
        return f"{grams} g"
    return f"{Decimal(grams) / 1000:.2f}".rstrip("0").rstrip(".") + " kg"


def format_date(value: dt.date) -> str:
    """Return a date for display, e.g. ``March 1, 2027`` (no locale lookups)."""
    return f"{_MONTHS[value.month - 1]} {value.day}, {value.year}"


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


def jsonld_dumps(data: Any, splice: Mapping[str, str] | None = None) -> Markup:
    """Serialize JSON-LD for a ``<script>`` element (``<``, ``>``, ``&`` escaped).

    ``splice`` maps placeholders (a placeholder string as JSON, quotes included) to JSON
    text put in their place, so a fragment repeated in every offer (shipping, returns) is
    serialized once per site.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    for placeholder, fragment in (splice or {}).items():
        text = text.replace(placeholder, fragment)
    # str.replace runs in C; translate() with a mapping goes through Python per character.
    for char, escaped in _JSON_ESCAPES:
        text = text.replace(char, escaped)
    return Markup(text)


def plain_text(html: str, limit: int | None = None) -> str:
    """Return the text of an HTML fragment, whitespace collapsed, cut at a word if too long."""
    text = _SPACE.sub(" ", html_lib.unescape(_TAG.sub(" ", html))).strip()
    if limit is not None and len(text) > limit:
        cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,.;:-–")
        text = cut + "…"
    return text


def _decimal_text(value: Decimal) -> str:
    return f"{value:.2f}"


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# --------------------------------------------------------------------------- environment


def _bytecode_cache(folder: Path) -> jinja2.BytecodeCache | None:
    """Return a compiled-template cache in ``folder`` (None when it cannot be made)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))


def make_environment(
    settings: Mapping[str, Any],
    base_url: str | None = None,
    *,
    bytecode_dir: Path | None = None,
) -> jinja2.Environment:
    """Return the one Jinja2 environment pages (and email) render with.

    ``bytecode_dir`` keeps compiled templates between processes (``engine build`` keeps
    them beside the generations): a rebuild then loads them instead of compiling each one
    again. A cached template is used only while its source is byte-for-byte the same.
    """
    info = site_info(settings, base_url)
    loader = jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(str(folder)) for folder in template_dirs(settings)]
    )
    env = jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm", "xml", "svg", "html.j2", "xml.j2", "svg.j2"),
            disabled_extensions=("txt", "txt.j2"),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates are fixed for an environment's life: fragments rendered once stay valid,
        # and no stat() per page. The preview makes a new environment when a file changes.
        auto_reload=False,
        bytecode_cache=_bytecode_cache(bytecode_dir) if bytecode_dir is not None else None,
    )
    urls = site_urls(info)
    fragments: dict[tuple[str, str], Markup] = {}

    def cached(template: str, **values: Any) -> Markup:
        """Render a partial once per distinct input (cards, header, footer)."""
        key = (template, _fingerprint(values))
        html = fragments.get(key)
        if html is None:
            if len(fragments) > FRAGMENT_CACHE_LIMIT:
                fragments.clear()
            html = Markup(env.get_template(template).render(values))
            fragments[key] = html
        return html

    env.globals.update(
        site=info,
        urls=urls,
        cached=cached,
        status_labels=STATUS_LABELS,
        availability_labels=AVAILABILITY_LABELS,
    )
    env.filters["price"] = lambda low, high=None: _price_from(low, high, info.currency)
    env.filters["money"] = lambda amount, currency=None: format_money(
        amount, currency or info.currency
    )
    env.filters["weight"] = format_weight
    env.filters["longdate"] = format_date
    env.filters["jsonld"] = jsonld_dumps
    env.filters["absolute"] = urls.absolute
    return env


def template_digest(settings: Mapping[str, Any]) -> str:
    """Return a digest of every theme file a page can use (overrides included)."""
    digest = hashlib.blake2b(digest_size=16)
    # Which layer a file comes from matters (an override hides the theme's file); where
    # the package is installed does not.
    for layer, folder in enumerate(reversed(template_dirs(settings))):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            if relative.startswith(_NOT_PAGE_TEMPLATES) or relative.startswith("assets/"):
                continue
            digest.update(f"\x00{layer}:{relative}\x00".encode() + path.read_bytes())
    return digest.hexdigest()


def theme_assets(settings: Mapping[str, Any]) -> dict[str, Path]:
    """Return the theme's static files by URL path; the store's overrides win."""
    assets: dict[str, Path] = {}
    for folder in reversed(template_dirs(settings)):
        base = folder / "assets"
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            assets["/assets/" + path.relative_to(base).as_posix()] = path
    return assets


# --------------------------------------------------------------------------- view objects


class Image(NamedTuple):
    """An image as pages show it: source (path or absolute URL) and alternative text."""

    src: str
    alt: str


class Link(NamedTuple):
    """A link to another page of the site."""

    path: str
    title: str


class Crumb(NamedTuple):
    """One step of a breadcrumb trail."""

    name: str
    path: str


# View objects are read-only by convention, not frozen: a frozen dataclass's __init__
# sets each field through object.__setattr__, which shows at 100,000 products.


@dataclass(slots=True)
class Chrome:
    """What every page shows around its content: category navigation and footer links."""

    nav: tuple[Link, ...]
    footer: tuple[Link, ...]
    nav_paths: frozenset[str]
    digest: str

    @classmethod
    def of(cls, nav: tuple[Link, ...], footer: tuple[Link, ...]) -> Chrome:
        """Return the chrome for these links."""
        digest = _view_digest(tuple(map(tuple, nav)), tuple(map(tuple, footer)))
        return cls(nav, footer, frozenset(link.path for link in nav), digest)


class PageMeta(NamedTuple):
    """What the ``<head>`` says about a page."""

    title: str
    description: str
    path: str
    image: Image | None = None
    og_type: str = "website"
    indexable: bool = True


@dataclass(slots=True)
class VariantView:
    """A variant as product pages show it."""

    id: int
    sku: str
    title: str
    options: tuple[tuple[str, str], ...]
    price: Decimal
    compare_at: Decimal | None
    availability: str
    barcode: str
    grams: int
    image: Image | None


@dataclass(slots=True)
class Card:
    """A product as lists show it (categories, guides, related products, home)."""

    handle: str
    path: str
    title: str
    image: Image | None
    price: Decimal | None
    price_max: Decimal | None
    status: str  # in_stock | backorder | back_soon | coming_soon
    digest: str


@dataclass(slots=True)
class ProductView:
    """Everything a product's own page shows about it."""

    handle: str
    path: str
    title: str
    state: str  # in_stock | back_soon | coming_soon
    seo_title: str
    seo_description: str
    body_html: str
    extra_html: str
    brand: str
    product_type: str
    images: tuple[Image, ...]
    option_names: tuple[str, ...]
    variants: tuple[VariantView, ...]
    price_min: Decimal | None
    price_max: Decimal | None
    compare_at: Decimal | None
    available_from: dt.date | None
    faq: tuple[tuple[str, str], ...]
    attributes: tuple[tuple[str, str], ...]
    card: Card
    digest: str

    @property
    def has_options(self) -> bool:
        """Return True when shoppers choose between variants."""
        return len(self.variants) > 1

    @property
    def sold_out_variants(self) -> tuple[VariantView, ...]:
        """Return the variants that cannot be bought now."""
        return tuple(v for v in self.variants if v.availability == OUT_OF_STOCK)

    @property
    def attribute_map(self) -> dict[str, str]:
        """Return the spec table as a mapping."""
        return dict(self.attributes)


_PLAIN_TYPES = frozenset({str, int, float, bool, Decimal, dt.date, type(None)})
# Named tuples of plain values: a plain tuple's repr (in C) stands for them.
_PLAIN_TUPLES = frozenset({Link, Crumb, Image})
_CHROME = ("chrome",)  # the same on every page: digested once into the base key


def _context_fingerprint(context: Mapping[str, Any]) -> str:
    """Return the fingerprint of a page context without the site chrome."""
    return _fingerprint({k: v for k, v in context.items() if k not in _CHROME})


def _fingerprint(value: Any) -> str:
    """Return a stable text standing for a context value (views stand in by their digest)."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return repr(value)
    if kind in _PLAIN_TUPLES:
        return repr(tuple(value))
    if kind is PageMeta:
        image = value.image
        return repr((*value[:3], tuple(image) if image else None, *value[4:]))
    if kind is list or kind is tuple:
        return "[" + ",".join([_fingerprint(item) for item in value]) + "]"
    digest = getattr(value, "digest", None)
    if isinstance(digest, str):
        return "#" + digest
    if isinstance(value, dict):
        return "{" + ",".join([f"{k!r}:{_fingerprint(v)}" for k, v in value.items()]) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join([_fingerprint(item) for item in value]) + "]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fingerprint(tuple(getattr(value, f.name) for f in dataclasses.fields(value)))
    raise TypeError(f"cannot fingerprint a {type(value).__name__} in a page context")


def _view_digest(*values: Any) -> str:
    """Digest plain values (str, numbers, Decimal, date, None and tuples of them) via repr."""
    return _hash(repr(values))


def _plain_image(image: Image | None) -> tuple[str, str] | None:
    return (image.src, image.alt) if image else None


# --------------------------------------------------------------------------- catalog loading


def _image(item: Any, default_alt: str) -> Image | None:
    """Read one stored image (a URL, or a mapping with ``src``/``url`` and ``alt``)."""
    if isinstance(item, str):
        return Image(item, default_alt) if item else None
    if isinstance(item, Mapping):
        src = str(item.get("src") or item.get("url") or "")
        if not src:
            return None
        return Image(src, str(item.get("alt") or default_alt))
    return None


def _availability(sellable: Any, tracked: Any, stock: int, policy: str) -> str:
    if not sellable:
        return OUT_OF_STOCK
    if tracked and stock <= 0 and policy == "continue":
        return BACKORDER
    return IN_STOCK


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _card(
    handle: str,
    path: str,
    title: str,
    image: Image | None,
    prices: list[Decimal],
    status: str,
) -> Card:
    low = min(prices) if prices else None
    high = max(prices) if prices else None
    digest = _view_digest(handle, path, title, _plain_image(image), low, high, status)
    return Card(handle, path, title, image, low, high, status, digest)


def _catalog_view(
    row: _ProductRow,
    variants: list[tuple[Any, ...]],
    doc: Document | None,
    urls: SiteURLs,
    decode: _Decoder,
) -> ProductView:
    """Build the page view of an active, published catalog product."""
    meta = doc.meta if doc else {}
    title = row.title
    images = [img for img in (_image(item, title) for item in decode.json(row.images)) if img]
    if meta.get("image"):
        images.insert(0, Image(str(meta["image"]), str(meta.get("image_alt") or title)))
    option_names = tuple(str(name) for name in decode.json(row.option_names))
    views = []
    plain_variants = []
    for (
        _product_id,
        variant_id,
        sku,
        option_values,
        raw_price,
        raw_compare_at,
        barcode,
        grams,
        image,
        tracked,
        policy,
        stock,
        is_sellable,
    ) in variants:
        values = decode.json(option_values)
        is_default = not values or values == ["Default Title"]
        price = decode.money(raw_price) or Decimal("0.00")  # the column is NOT NULL
        compare_at = decode.money(raw_compare_at)
        compare_at = compare_at if compare_at and compare_at > price else None
        options: tuple[tuple[str, str], ...] = ()
        variant_title = ""
        if not is_default:
            texts = [str(value) for value in values]
            variant_title = " / ".join(texts)
            options = tuple(zip(option_names, texts, strict=False))
        variant = VariantView(
            variant_id,
            sku or "",
            variant_title,
            options,
            price,
            compare_at,
            _availability(is_sellable, tracked, stock, policy),
            (barcode or "").lstrip("'"),
            grams or 0,
            Image(image, title) if image else None,
        )
        views.append(variant)
        plain_variants.append(
            (
                variant.id,
                variant.sku,
                variant.title,
                variant.options,
                variant.price,
                variant.compare_at,
                variant.availability,
                variant.barcode,
                variant.grams,
                (image, title) if image else None,
            )
        )
    sellable = [v for v in views if v.availability != OUT_OF_STOCK]
    state = "in_stock" if sellable else "back_soon"
    if not sellable:
        status = "back_soon"
    elif all(v.availability == BACKORDER for v in sellable):
        status = "backorder"
    else:
        status = "in_stock"
    prices = [v.price for v in views]
    compare = [v.compare_at for v in views if v.compare_at]
    path = urls.product(row.handle)
    card = _card(row.handle, path, title, images[0] if images else None, prices, status)
    shown = (
        row.handle,
        path,
        title,
        state,
        row.seo_title or "",
        str(meta.get("description") or row.seo_description or ""),
        row.body_html or "",
        doc.html if doc else "",
        str(meta.get("brand") or row.vendor or ""),
        row.product_type or "",
        tuple(images),
        option_names if any(v.options for v in views) else (),
        tuple(views),
        min(prices) if prices else None,
        max(prices) if prices else None,
        max(compare) if compare else None,
        None,  # available_from
        _faq(meta) if doc else (),
        _attributes(meta) if doc else (),
        card,
    )
    # The digest ``_product_view`` would compute, from the plain values made above.
    digest = _view_digest(
        *shown[:10],
        tuple((image.src, image.alt) for image in images),
        shown[11],
        tuple(plain_variants),
        *shown[13:19],
        card.digest,
    )
    return ProductView(*shown, digest=digest)


def _coming_soon_view(doc: Document, urls: SiteURLs) -> ProductView:
    """Build the page view of a product declared only in Markdown."""
    meta = doc.meta
    title = str(meta["title"])
    images = (
        (Image(str(meta["image"]), str(meta.get("image_alt") or title)),)
        if meta.get("image")
        else ()
    )
    price = Decimal(str(meta["price"])) if meta.get("price") is not None else None
    path = urls.product(doc.slug)
    card = _card(
        doc.slug,
        path,
        title,
        images[0] if images else None,
        [price] if price is not None else [],
        "coming_soon",
    )
    available_from = meta.get("available_from")
    return _product_view(
        handle=doc.slug,
        path=path,
        title=title,
        state="coming_soon",
        seo_title="",
        seo_description=str(meta.get("description") or ""),
        body_html="",
        extra_html=doc.html,
        brand=str(meta.get("brand") or ""),
        product_type="",
        images=images,
        option_names=(),
        variants=(),
        price_min=price,
        price_max=price,
        compare_at=None,
        available_from=available_from if isinstance(available_from, dt.date) else None,
        faq=_faq(meta),
        attributes=_attributes(meta),
        card=card,
    )


def _product_view(**values: Any) -> ProductView:
    plain = []
    for name, value in values.items():
        if name == "images":
            value = tuple(_plain_image(image) for image in value)
        elif name == "variants":
            value = tuple(
                (
                    v.id,
                    v.sku,
                    v.title,
                    v.options,
                    v.price,
                    v.compare_at,
                    v.availability,
                    v.barcode,
                    v.grams,
                    _plain_image(v.image),
                )
                for v in value
            )
        elif name == "card":
            value = value.digest
        plain.append(value)
    return ProductView(**values, digest=_view_digest(*plain))


def _faq(meta: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Return (question, answer HTML) pairs; answers are Markdown."""
    return tuple(
        (str(item.get("question", "")), render_markdown(str(item.get("answer", ""))))
        for item in meta.get("faq") or []
        if isinstance(item, Mapping)
    )


def _attributes(meta: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    attributes = meta.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        return ()
    return tuple(
        (str(name), _text(value))
        for name, value in attributes.items()
        if value is not None and _text(value).strip()
    )


class _Summary(NamedTuple):
    """What ordering, category membership and the home page's lists need of a product."""

    handle: str
    title: str
    product_type: str
    state: str  # in_stock | back_soon | coming_soon


@dataclass
class _Catalog:
    """The catalog as planning needs it: live product views and the rest by status.

    ``summaries`` (or the views themselves) order and group the products; ``views`` may
    build each view only when a page asks for it (``_LazyViews``).
    """

    views: Mapping[str, ProductView]
    archived: set[str]
    handles: set[str]
    tags: dict[str, tuple[str, ...]]
    summaries: list[Any] = field(default_factory=list)


class _Decoder:
    """Decode JSON and money columns, each distinct stored value once.

    Sizes, colours, tags and prices repeat across thousands of rows; decoding each distinct
    text once is most of what makes loading 100,000 products quick.
    """

    def __init__(self) -> None:
        self._json: dict[str, Any] = {}
        self._money: dict[Any, Decimal] = {}

    def json(self, raw: Any) -> Any:
        """Return a JSON column's value (drivers that decode JSON themselves pass through)."""
        if raw is None:
            return []
        if not isinstance(raw, str):
            return raw
        value = self._json.get(raw)
        if value is None:
            value = self._json[raw] = json.loads(raw)
        return value

    def money(self, raw: Any) -> Decimal | None:
        """Return a money column as a Decimal with two places (SQLite hands back floats)."""
        if raw is None or isinstance(raw, Decimal):
            return raw
        value = self._money.get(raw)
        if value is None:
            value = self._money[raw] = Decimal(str(raw)).quantize(Decimal("0.01"))
        return value


class _ProductRow(NamedTuple):
    id: int
    handle: str
    title: str
    body_html: str
    vendor: str
    product_type: str
    tags: Any
    status: str
    published: Any
    seo_title: str
    seo_description: str
    option_names: Any
    images: Any


def build_catalog(rows: CatalogRows, content: Content, urls: SiteURLs) -> _Catalog:
    """Build the live product views from the catalog rows and the product Markdown."""
    lazy = lazy_catalog(rows, content, urls, summarize=False)
    views = {handle: lazy.views[handle] for handle in lazy.views}
    return dataclasses.replace(lazy, views=views, summaries=list(views.values()))


class _LazyViews(Mapping[str, ProductView]):
    """Live product views by handle, each built on first use (planning a few pages)."""

    def __init__(self, build: dict[str, Any]) -> None:
        self._build = build  # handle -> zero-argument function returning the view
        self._views: dict[str, ProductView] = {}

    def __getitem__(self, handle: str) -> ProductView:
        view = self._views.get(handle)
        if view is None:
            view = self._views[handle] = self._build[handle]()
        return view

    def __contains__(self, handle: object) -> bool:
        return handle in self._build

    def __iter__(self) -> Iterator[str]:
        return iter(self._build)

    def __len__(self) -> int:
        return len(self._build)


def lazy_catalog(
    rows: CatalogRows, content: Content, urls: SiteURLs, *, summarize: bool = True
) -> _Catalog:
    """Return the catalog with views built only when used (``build_catalog`` builds all).

    With ``summarize``, ``summaries`` come from the rows, without building any view.
    """
    by_product: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for variant in rows.variants:
        by_product[variant[0]].append(variant)
    decode = _Decoder()
    build: dict[str, Any] = {}
    archived: set[str] = set()
    handles: set[str] = set()
    tags: dict[str, tuple[str, ...]] = {}
    summaries: list[_Summary] = []
    for raw in rows.products:
        row = _ProductRow._make(raw)
        handles.add(row.handle)
        if row.status == "archived":
            archived.add(row.handle)
        elif row.status == "active" and row.published:
            variants = by_product.get(row.id, [])
            doc = content.products.get(row.handle)
            build[row.handle] = functools.partial(_catalog_view, row, variants, doc, urls, decode)
            tags[row.handle] = tuple(str(tag).casefold() for tag in decode.json(row.tags))
            if summarize:
                # A product is "in stock" when any variant is sellable (``_catalog_view``).
                state = "in_stock" if any(v[12] for v in variants) else "back_soon"
                summaries.append(_Summary(row.handle, row.title, row.product_type or "", state))
    for handle, doc in content.products.items():
        if (
            doc.meta.get("status") == "coming-soon"
            and handle not in build
            and handle not in archived
        ):
            build[handle] = functools.partial(_coming_soon_view, doc, urls)
            if summarize:
                summaries.append(_Summary(handle, str(doc.meta["title"]), "", "coming_soon"))
    return _Catalog(
        views=_LazyViews(build), archived=archived, handles=handles, tags=tags,
        summaries=summaries,
    )  # fmt: skip


# --------------------------------------------------------------------------- planning


@dataclass(slots=True)
class _Draft:
    """A page before titles are made unique and its key is computed (``fill``: see PagePlan)."""

    path: str
    template: str
    context: dict[str, Any]
    indexable: bool = True
    fill: ContextFill | None = None


def _sort_key(view: Any) -> tuple[str, str]:
    return (view.title.casefold(), view.handle)


def _error(doc: Document, key: str, message: str) -> ContentError:
    line = doc.lines.get(key) or doc.line(key.split(".")[0])
    return ContentError(doc.source, line, message)


def plan_site(
    session: Session,
    settings: Mapping[str, Any],
    content: Content,
    base_url: str | None = None,
    *,
    rows: CatalogRows | None = None,
) -> Site:
    """Decide every page, redirect and static file; raise ``ContentErrors`` on bad content.

    ``rows`` (from ``read_catalog``) saves reading the catalog again when the caller has.
    """
    with _collector_paused():
        return _plan_site(session, settings, content, base_url, rows)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while planning.

    Planning allocates several objects per product and frees none of them in cycles; with
    the collector running, each full collection walks every object made so far, which
    makes planning 100,000 products several times slower. Reference counting still frees
    everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    except BaseException:
        if was_enabled:
            gc.enable()
        raise
    if was_enabled:
        if gc.get_freeze_count() == 0:
            # Everything made while planning is in the youngest generation: the first
            # collection after re-enabling would walk all of it (most of a second at
            # 10,000 products) to find no garbage. Freezing and unfreezing moves it
            # straight to the oldest generation, as if it had survived collections.
            gc.freeze()
            gc.unfreeze()
        gc.enable()


def _plan_site(
    session: Session,
    settings: Mapping[str, Any],
    content: Content,
    base_url: str | None,
    rows: CatalogRows | None,
) -> Site:
    info = site_info(settings, base_url)
    urls = site_urls(info)
    catalog = build_catalog(rows or read_catalog(session), content, urls)
    errors = list(check_references(content, catalog.handles))
    if errors:
        raise ContentErrors(errors)
    planner = _Planner(settings, content, catalog, urls, info)
    drafts = planner.drafts()
    if planner.errors:
        raise ContentErrors(planner.errors)
    assets = theme_assets(settings)
    clashes = [
        ContentError(
            f"assets/{path.removeprefix('/assets/')}", 1, "has the same URL as a theme file"
        )
        for path in sorted(content.assets)
        if path in assets
    ]
    if clashes:
        raise ContentErrors(clashes)
    assets.update(content.assets)
    renamed = _make_unique(drafts)
    pages = _page_plans(drafts, settings, info, planner.chrome, planner.render_order())
    return Site(
        pages=pages,
        redirects=planner.redirects(),
        assets=dict(sorted(assets.items())),
        renamed=renamed,
    )


def _page_plans(
    drafts: list[_Draft],
    settings: Mapping[str, Any],
    info: SiteInfo,
    chrome: Chrome,
    order: Mapping[str, int] | None = None,
) -> list[PagePlan]:
    """Return the drafts as page plans with their keys (``order``: render ranks by path)."""
    # Site chrome (navigation, footer links) is on every page: part of every key via ``base``.
    base = _hash("|".join((template_digest(settings), info.digest, chrome.digest)))
    order = order or {}
    last = len(order)
    return [
        PagePlan(
            path=draft.path,
            key_value=None,
            template=draft.template,
            context=draft.context,
            indexable=draft.indexable,
            key_base=base,
            fill=draft.fill,
            render_rank=order.get(draft.path, last + index),
        )
        for index, draft in enumerate(drafts)
    ]


def plan_changes(
    settings: Mapping[str, Any],
    content: Content,
    rows: CatalogRows,
    changed: set[str],
    previous: Mapping[str, tuple[str, bool]],
    renamed: Mapping[str, tuple[str, str]],
    base_url: str | None = None,
) -> Site | None:
    """Plan only the pages that show the ``changed`` products, after a stock-only change.

    Valid when nothing but the stock and sellable columns of some variants changed since
    the site whose pages were ``previous`` (URL path -> key, indexable) and ``renamed``:
    titles, lists and their order then stay as they were. The pages that show a changed
    product (its page, the category pages listing it, the product pages relating it, the
    comparisons and guides showing it, and the home page) are planned afresh; every other
    page keeps its previous key and is not planned. Returns None when the pages planned
    are not all pages the previous site had (plan the whole site then).
    """
    with _collector_paused():
        info = site_info(settings, base_url)
        urls = site_urls(info)
        catalog = lazy_catalog(rows, content, urls)
        planner = _Planner(settings, content, catalog, urls, info)
        drafts = planner.drafts_showing(changed)
        if planner.errors:
            return None
        for draft in drafts:
            names = renamed.get(draft.path)
            if names is not None:
                draft.context["page"] = draft.context["page"]._replace(
                    title=names[0], description=names[1]
                )
        planned = _page_plans(drafts, settings, info, planner.chrome)
        paths = {page.path for page in planned}
        if len(paths) != len(planned) or not paths <= previous.keys():
            return None
        pages = planned + [
            PagePlan(path=path, key_value=key, template="", context={}, indexable=indexable)
            for path, (key, indexable) in previous.items()
            if path not in paths
        ]
        assets = theme_assets(settings)
        assets.update(content.assets)
        return Site(
            pages=pages,
            redirects=planner.redirects(),
            assets=dict(sorted(assets.items())),
            renamed=dict(renamed),
        )


class _Planner:
    """Works out every page's context from the catalog views and the content documents."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        content: Content,
        catalog: _Catalog,
        urls: SiteURLs,
        info: SiteInfo,
    ) -> None:
        self.content = content
        self.catalog = catalog
        self.views = catalog.views
        self.urls = urls
        self.info = info
        # One site-wide order (title, then handle) that every list follows.
        self.ordered = sorted(catalog.summaries, key=_sort_key)
        self.rank = {view.handle: index for index, view in enumerate(self.ordered)}
        self._rings: dict[tuple[str, str], tuple[list[str], dict[str, int]]] = {}
        self._by_type: dict[str, list[str]] | None = None
        self.page_size = info.category_page_size
        self.related_count = info.related_products
        self.highlights = info.home_highlights
        self.errors: list[ContentError] = []
        self.members = self._category_members()
        self.primary: dict[str, str] = {}
        for slug in sorted(self.members):
            for handle in self.members[slug]:
                self.primary.setdefault(handle, slug)
        self.comparisons = self._comparisons()
        self.guides_by_product: dict[str, list[Link]] = defaultdict(list)
        for slug in sorted(content.guides):
            doc = content.guides[slug]
            for handle in doc.meta.get("products") or []:
                if handle in self.views:
                    self.guides_by_product[handle].append(Link(urls.guide(slug), _title(doc)))
        self.chrome = Chrome.of(
            nav=tuple(
                Link(urls.category(slug), _title(content.categories[slug]))
                for slug in sorted(content.categories)
            ),
            footer=tuple(
                Link(urls.page(slug), _title(content.pages[slug])) for slug in sorted(content.pages)
            ),
        )

    # -- membership and links

    def _category_members(self) -> dict[str, list[str]]:
        """Return each category's products in display order (listed first, then by title)."""
        by_type: dict[str, list[str]] = defaultdict(list)
        by_tag: dict[str, list[str]] = defaultdict(list)
        tags = self.catalog.tags
        by_category: dict[str, list[str]] = defaultdict(list)
        for view in self.catalog.summaries:
            handle = view.handle
            if view.product_type:
                by_type[view.product_type.casefold()].append(handle)
            for tag in tags.get(handle, ()):
                by_tag[tag].append(handle)
            if view.state == "coming_soon":
                declared = self.content.products[handle].meta.get("category")
                if declared:
                    by_category[str(declared)].append(handle)
        members: dict[str, list[str]] = {}
        for slug, doc in sorted(self.content.categories.items()):
            meta = doc.meta
            listed = [h for h in meta.get("products") or [] if h in self.views]
            found = set(by_category.get(slug, ()))
            for kind in meta.get("types") or []:
                found.update(by_type.get(str(kind).casefold(), ()))
            for tag in meta.get("tags") or []:
                found.update(by_tag.get(str(tag).casefold(), ()))
            seen = set(listed)
            rest = sorted(found - seen, key=self.rank.__getitem__)
            members[slug] = list(dict.fromkeys(listed)) + rest
        return members

    def related(self, view: ProductView) -> list[Card]:
        """Return the related products: front matter ``related``, else category neighbours."""
        return [self.views[h].card for h in self.related_handles(view)]

    def related_handles(self, view: Any) -> list[str]:
        """Return the handles ``related`` shows (``view`` needs a handle and a product type)."""
        if self.related_count == 0:
            return []
        doc = self.content.products.get(view.handle)
        chosen = [h for h in (doc.meta.get("related") or []) if h in self.views] if doc else []
        if not chosen:
            # The next products in the category's order (wrapping round): every product
            # links to a few neighbours and is linked from a few, so one product's change
            # touches a handful of pages, not the whole category.
            ring, positions = self._ring(view)
            start = positions.get(view.handle, -1)
            count = min(self.related_count, len(ring))
            chosen = [ring[(start + step) % len(ring)] for step in range(1, count + 1)]
        chosen = [h for h in dict.fromkeys(chosen) if h != view.handle]
        return chosen[: self.related_count]

    def related_candidates(self, changed: set[str]) -> set[str]:
        """Return the products whose related block may show one of ``changed`` (a superset).

        A related block is the front matter's list, else the next products of the
        product's ring: so only products with their own list and the few ring places
        before each changed product can show it, not every product of the catalog.
        """
        if self.related_count == 0 or not changed:
            return set()
        candidates: set[str] = set()
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for view in self.ordered:
            doc = self.content.products.get(view.handle)
            if doc is not None and doc.meta.get("related"):
                candidates.add(view.handle)
            groups[self._ring_key(view)].append(view.handle)
        for handles in groups.values():
            ring, positions = self._ring(self.views[handles[0]])
            members = set(handles)
            # A product outside its own ring shows the ring's first products.
            candidates.update(h for h in handles if h not in positions)
            for handle in changed:
                at = positions.get(handle)
                if at is None:
                    continue
                for step in range(1, min(self.related_count, len(ring)) + 1):
                    before = ring[(at - step) % len(ring)]
                    if before in members:
                        candidates.add(before)
        return candidates

    def _ring_key(self, view: Any) -> tuple[str, str]:
        slug = self.primary.get(view.handle)
        return ("category", slug) if slug else ("type", view.product_type.casefold())

    def _ring(self, view: Any) -> tuple[list[str], dict[str, int]]:
        """Return the product's neighbours list (its category, else its type) and positions."""
        key = self._ring_key(view)
        slug = key[1] if key[0] == "category" else None
        ring = self._rings.get(key)
        if ring is None:
            if slug:
                handles = self.members[slug]
            elif key[1]:
                if self._by_type is None:
                    self._by_type = defaultdict(list)
                    for other in self.ordered:
                        self._by_type[other.product_type.casefold()].append(other.handle)
                handles = self._by_type.get(key[1], [])
            else:
                handles = []
            ring = self._rings[key] = (handles, {h: i for i, h in enumerate(handles)})
        return ring

    def _comparisons(self) -> dict[str, tuple[str, str]]:
        """Return publishable comparisons (both products have pages) by slug."""
        pairs: dict[str, tuple[str, str]] = {}
        seen: dict[frozenset[str], str] = {}
        for slug, doc in sorted(self.content.comparisons.items()):
            handles = [str(h) for h in doc.meta.get("products") or []]
            if len(handles) != 2 or handles[0] == handles[1]:
                self.errors.append(
                    _error(doc, "products", "compare exactly two different products")
                )
                continue
            pair = frozenset(handles)
            if pair in seen:
                self.errors.append(
                    _error(
                        doc,
                        "products",
                        f"compares the same products as comparisons/{seen[pair]}.md; "
                        "one intent, one page",
                    )
                )
                continue
            seen[pair] = slug
            # A compared product without a page (draft, archived) takes the comparison
            # down with it: publish only with real data on both sides.
            if all(h in self.views for h in handles):
                pairs[slug] = (handles[0], handles[1])
        return pairs

    def render_order(self) -> dict[str, int]:
        """Return the product and category pages by path, in the order to render them.

        Each category's products in its listed order, each of its pages right after the
        products it lists, then the products no category lists. Related products are the
        next ones in that order, so neighbouring pages show the same product cards: a render
        worker renders each card once for a run of pages, not once per page.
        """
        order: dict[str, int] = {}
        for slug in sorted(self.members):
            handles = self.members[slug]
            for number, start in enumerate(range(0, len(handles), self.page_size), start=1):
                for handle in handles[start : start + self.page_size]:
                    order.setdefault(self.urls.product(handle), len(order))
                order.setdefault(self.urls.category(slug, number), len(order))
        for view in self.ordered:
            order.setdefault(self.urls.product(view.handle), len(order))
        return order

    # -- drafts

    def drafts(self) -> list[_Draft]:
        """Return every page, home first, in a stable order."""
        drafts = [self.home()]
        comparison_links: dict[str, list[Link]] = defaultdict(list)
        comparison_drafts = []
        for slug, (a, b) in self.comparisons.items():
            draft = self.comparison(slug, a, b)
            if draft is None:
                continue
            comparison_drafts.append(draft)
            title = draft.context["page_title"]
            comparison_links[a].append(Link(draft.path, title))
            comparison_links[b].append(Link(draft.path, title))
        for handle in sorted(self.views):
            drafts.append(self.product(self.views[handle], comparison_links.get(handle, [])))
        for slug in sorted(self.content.categories):
            drafts.extend(self.category(slug))
        drafts.extend(comparison_drafts)
        for slug in sorted(self.content.guides):
            drafts.append(self.guide(slug))
        for slug in sorted(self.content.pages):
            drafts.append(self.plain(slug))
        drafts.append(self.error_page(NOT_FOUND_PATH, "pages/404.html.j2", "Page not found"))
        drafts.append(self.error_page(GONE_PATH, "pages/410.html.j2", "This page is gone"))
        return drafts

    def drafts_showing(self, changed: set[str]) -> list[_Draft]:
        """Return the pages that show any of the ``changed`` live products, and home."""
        changed = {handle for handle in changed if handle in self.views}
        compared: dict[str, list[str]] = defaultdict(list)
        for slug, pair in self.comparisons.items():
            for handle in pair:
                compared[handle].append(slug)
        comparison_drafts: dict[str, _Draft | None] = {}

        def comparison(slug: str) -> _Draft | None:
            if slug not in comparison_drafts:
                comparison_drafts[slug] = self.comparison(slug, *self.comparisons[slug])
            return comparison_drafts[slug]

        drafts = [self.home()]
        products = set(changed)
        for handle in self.related_candidates(changed):
            if changed.intersection(self.related_handles(self.views[handle])):
                products.add(handle)
        for handle in sorted(products):
            links = []
            for slug in compared.get(handle, []):
                draft = comparison(slug)
                if draft is not None:
                    links.append(Link(draft.path, draft.context["page_title"]))
            drafts.append(self.product(self.views[handle], links))
        for slug in sorted(self.content.categories):
            if changed.intersection(self.members[slug]):
                drafts.extend(self.category(slug, showing=changed))
        for slug in self.comparisons:
            if changed.intersection(self.comparisons[slug]):
                draft = comparison(slug)
                if draft is not None:
                    drafts.append(draft)
        for slug in sorted(self.content.guides):
            if changed.intersection(self.content.guides[slug].meta.get("products") or []):
                drafts.append(self.guide(slug))
        return drafts

    def _context(
        self, kind: str, meta: PageMeta, crumbs: list[Crumb], **values: Any
    ) -> dict[str, Any]:
        return {"kind": kind, "page": meta, "breadcrumbs": crumbs, "chrome": self.chrome, **values}

    def _titled(self, title: str) -> str:
        return f"{title} | {self.info.name}" if self.info.name else title

    def home(self) -> _Draft:
        """Plan the home page: categories, guides, back-soon and coming-soon highlights."""
        content = self.content
        categories = []
        for slug in sorted(content.categories):
            doc = content.categories[slug]
            image = Image(str(doc.meta["image"]), "") if doc.meta.get("image") else None
            categories.append(
                {
                    "link": Link(self.urls.category(slug), _title(doc)),
                    "description": str(doc.meta.get("description") or ""),
                    "image": image,
                    "count": len(self.members[slug]),
                }
            )
        guides = [
            {
                "link": Link(self.urls.guide(slug), _title(content.guides[slug])),
                "description": str(content.guides[slug].meta.get("description") or ""),
            }
            for slug in sorted(content.guides)
        ]
        ordered = self.ordered
        views = self.views
        back_soon = [v.handle for v in ordered if v.state == "back_soon"][: self.highlights]
        coming_soon = [v.handle for v in ordered if v.state == "coming_soon"][: self.highlights]
        title = self.info.name or "Home"
        if self.info.description:
            title = f"{self.info.name} – {self.info.description}"
        meta = PageMeta(
            title=title,
            description=self.info.description or self.info.name,
            path="/",
        )
        return _Draft(
            "/",
            "pages/home.html.j2",
            self._context(
                "home",
                meta,
                [],
                categories=categories,
                guides=guides,
                back_soon=[views[h].card for h in back_soon],
                coming_soon=[views[h].card for h in coming_soon],
            ),
        )

    def product(self, view: ProductView, comparisons: list[Link]) -> _Draft:
        """Plan a product page in any live state (its lists are made when it is rendered)."""
        description = view.seo_description or plain_text(view.body_html or view.extra_html, 155)
        if not description:
            description = f"{view.title} from {self.info.name}."
        meta = PageMeta(
            title=view.seo_title or self._titled(view.title),
            description=description,
            path=view.path,
            image=view.images[0] if view.images else None,
            og_type="product",
        )
        return _Draft(
            view.path,
            PRODUCT_TEMPLATES[view.state],
            {"page": meta},
            fill=functools.partial(self._product_context, view, comparisons),
        )

    def _product_context(
        self, view: ProductView, comparisons: list[Link], planned: dict[str, Any]
    ) -> dict[str, Any]:
        """Return a product page's whole context around its planned ``PageMeta``."""
        crumbs = [Crumb("Home", "/")]
        slug = self.primary.get(view.handle)
        if slug:
            crumbs.append(Crumb(_title(self.content.categories[slug]), self.urls.category(slug)))
        crumbs.append(Crumb(view.title, view.path))
        return self._context(
            "product",
            planned["page"],
            crumbs,
            product=view,
            related=self.related(view),
            comparisons=comparisons,
            guides=self.guides_by_product.get(view.handle, []),
        )

    def category(self, slug: str, showing: set[str] | None = None) -> list[_Draft]:
        """Plan a category's pages (``CATEGORY_PAGE_SIZE`` products each).

        With ``showing``, only the pages that list one of those products (a stock change
        changes no list, so no other page of the category).
        """
        doc = self.content.categories[slug]
        title = _title(doc)
        handles = self.members[slug]
        chunks = [
            handles[i : i + self.page_size] for i in range(0, len(handles), self.page_size)
        ] or [[]]
        pages = len(chunks)
        # One list of page links, shared by all the category's pages (not one per page).
        links = (
            [Link(self.urls.category(slug, n), str(n)) for n in range(1, pages + 1)]
            if pages > 1
            else []
        )
        drafts = []
        for number, chunk in enumerate(chunks, start=1):
            if showing is not None and showing.isdisjoint(chunk):
                continue
            path = self.urls.category(slug, number)
            crumbs = [Crumb("Home", "/"), Crumb(title, self.urls.category(slug))]
            page_title, description = title, str(doc.meta.get("description") or "")
            if number > 1:
                crumbs.append(Crumb(f"Page {number}", path))
                page_title = f"{title} – Page {number}"
                description = f"{description} (page {number} of {pages})"
            meta = PageMeta(
                title=self._titled(page_title),
                description=description,
                path=path,
                image=Image(str(doc.meta["image"]), "") if doc.meta.get("image") else None,
            )
            pagination = {
                "number": number,
                "pages": pages,
                "previous": self.urls.category(slug, number - 1) if number > 1 else None,
                "next": self.urls.category(slug, number + 1) if number < pages else None,
                "links": links,
            }
            drafts.append(
                _Draft(
                    path,
                    "pages/category.html.j2",
                    self._context(
                        "category",
                        meta,
                        crumbs,
                        category=doc,
                        heading=page_title,
                        intro=doc.html if number == 1 else "",
                        products=[self.views[h].card for h in chunk],
                        pagination=pagination,
                    ),
                )
            )
        return drafts

    def comparison(self, slug: str, a: str, b: str) -> _Draft | None:
        """Plan a comparison page; a row without data on both sides is a content error."""
        doc = self.content.comparisons[slug]
        left, right = self.views[a], self.views[b]
        wanted = doc.meta.get("attributes")
        rows = []
        if wanted:
            for index, name in enumerate(wanted):
                values = (self._cell(left, str(name)), self._cell(right, str(name)))
                if not values[0] or not values[1]:
                    missing = left if not values[0] else right
                    self.errors.append(
                        _error(
                            doc,
                            f"attributes.{index}",
                            f"no {name!r} data for {missing.handle!r}; compare only what "
                            "both products state",
                        )
                    )
                    continue
                rows.append((_row_label(str(name)), values[0], values[1]))
        else:
            names = list(BUILTIN_ROWS) + [
                name for name, _ in left.attributes if name in right.attribute_map
            ]
            for name in names:
                values = (self._cell(left, name), self._cell(right, name))
                if values[0] and values[1]:
                    rows.append((_row_label(name), values[0], values[1]))
        title = str(doc.meta.get("title") or f"{left.title} vs {right.title}")
        crumbs = [Crumb("Home", "/"), Crumb(title, self.urls.compare(slug))]
        meta = PageMeta(
            title=self._titled(title),
            description=str(doc.meta.get("description") or ""),
            path=self.urls.compare(slug),
            image=left.images[0] if left.images else None,
        )
        return _Draft(
            meta.path,
            "pages/comparison.html.j2",
            self._context(
                "comparison",
                meta,
                crumbs,
                comparison=doc,
                page_title=title,
                products=[left.card, right.card],
                rows=rows,
            ),
        )

    def _cell(self, view: ProductView, name: str) -> str:
        """Return what a comparison row says about one product ("" when it has no data)."""
        if name == "price":
            return _price_text(view.price_min, view.price_max, self.info.currency)
        if name == "availability":
            return STATUS_LABELS[view.card.status]
        if name == "brand":
            return view.brand
        if name == "options":
            return "; ".join(
                f"{option}: {', '.join(dict.fromkeys(v for n, v in _options(view) if n == option))}"
                for option in view.option_names
            )
        if name == "weight":
            weights = sorted({v.grams for v in view.variants if v.grams > 0})
            if not weights:
                return ""
            if len(weights) == 1:
                return format_weight(weights[0])
            return f"{format_weight(weights[0])} – {format_weight(weights[-1])}"
        return view.attribute_map.get(name, "")

    def guide(self, slug: str) -> _Draft:
        """Plan a guide page with its featured products' live availability."""
        doc = self.content.guides[slug]
        title = _title(doc)
        featured = [
            self.views[h].card
            for h in dict.fromkeys(doc.meta.get("products") or [])
            if h in self.views
        ]
        path = self.urls.guide(slug)
        meta = PageMeta(
            title=self._titled(title),
            description=str(doc.meta.get("description") or ""),
            path=path,
            image=Image(str(doc.meta["image"]), "") if doc.meta.get("image") else None,
            og_type="article",
        )
        crumbs = [Crumb("Home", "/"), Crumb(title, path)]
        return _Draft(
            path,
            "pages/guide.html.j2",
            self._context("guide", meta, crumbs, guide=doc, heading=title, products=featured),
        )

    def plain(self, slug: str) -> _Draft:
        """Plan a plain Markdown page."""
        doc = self.content.pages[slug]
        title = _title(doc)
        path = self.urls.page(slug)
        meta = PageMeta(
            title=self._titled(title), description=str(doc.meta.get("description") or ""), path=path
        )
        crumbs = [Crumb("Home", "/"), Crumb(title, path)]
        return _Draft(
            path, "pages/page.html.j2", self._context("page", meta, crumbs, doc=doc, heading=title)
        )

    def error_page(self, path: str, template: str, title: str) -> _Draft:
        """Plan the 404 or 410 page (not indexable, not in the sitemap)."""
        meta = PageMeta(title=self._titled(title), description=title, path=path, indexable=False)
        return _Draft(
            path,
            template,
            self._context("error", meta, [], heading=title),
            indexable=False,
        )

    # -- redirects

    def redirects(self) -> list[Redirect]:
        """Return discontinued products' and reversed comparisons' redirects."""
        rules: dict[str, Redirect] = {}
        for handle in sorted(self.catalog.archived):
            target = self._successor(handle)
            source = self.urls.product(handle)
            if target:
                rules[source] = Redirect(source, target, 301)
            else:
                rules[source] = Redirect(source, None, 410)
        page_paths = {self.urls.compare(slug) for slug in self.comparisons}
        for slug, (a, b) in self.comparisons.items():
            target = self.urls.compare(slug)
            for alias in (f"{b}-vs-{a}", f"{a}-vs-{b}"):
                source = self.urls.compare(alias)
                if alias != slug and source not in page_paths and source not in rules:
                    rules[source] = Redirect(source, target, 301)
        return [rules[source] for source in sorted(rules)]

    def _successor(self, handle: str) -> str | None:
        """Follow ``replaced_by`` until a product with a page (or a dead end, or a loop)."""
        seen = {handle}
        current = handle
        while True:
            doc = self.content.products.get(current)
            nxt = str(doc.meta.get("replaced_by") or "") if doc else ""
            if not nxt or nxt in seen:
                return None
            if nxt in self.views:
                return self.urls.product(nxt)
            seen.add(nxt)
            current = nxt


STATUS_LABELS = {
    "in_stock": "In stock",
    "backorder": "Available on backorder",
    "back_soon": "Sold out – back soon",
    "coming_soon": "Coming soon",
}
AVAILABILITY_LABELS = {
    IN_STOCK: "In stock",
    BACKORDER: "Backorder – ships when restocked",
    OUT_OF_STOCK: "Sold out",
}


def _title(doc: Document) -> str:
    return str(doc.meta.get("title") or doc.slug.replace("-", " ").capitalize())


def _row_label(name: str) -> str:
    return name[:1].upper() + name[1:] if name in BUILTIN_ROWS else name


def _options(view: ProductView) -> Iterable[tuple[str, str]]:
    for variant in view.variants:
        yield from variant.options


def _price_from(low: Decimal | None, high: Decimal | None, currency: str) -> str:
    """Return "$10.00", or "From $10.00" when variants cost different amounts."""
    if low is None:
        return ""
    if high is not None and high != low:
        return "From " + format_money(low, currency)
    return format_money(low, currency)


def _price_text(low: Decimal | None, high: Decimal | None, currency: str) -> str:
    if low is None:
        return ""
    if high is None or high == low:
        return format_money(low, currency)
    return f"{format_money(low, currency)} – {format_money(high, currency)}"


def _make_unique(drafts: list[_Draft]) -> dict[str, tuple[str, str]]:
    """Give every indexable page its own title and description (search engines need both).

    Returns the final title and description of each page that was given new ones.
    """
    renamed: set[str] = set()
    for attribute in ("title", "description"):
        groups: dict[str, list[_Draft]] = defaultdict(list)
        for draft in drafts:
            if draft.indexable:
                groups[getattr(draft.context["page"], attribute)].append(draft)
        for value, same in groups.items():
            if len(same) < 2:
                continue
            # The first page in site order keeps the plain text; the others say which.
            for draft in same[1:]:
                meta: PageMeta = draft.context["page"]
                label = draft.path.strip("/").split("/")[-1] or "home"
                unique = f"{value} ({label})"
                if attribute == "title":
                    draft.context["page"] = meta._replace(title=unique)
                else:
                    draft.context["page"] = meta._replace(description=unique)
                renamed.add(draft.path)
    result = {}
    for draft in drafts:
        if draft.path in renamed:
            meta = draft.context["page"]
            result[draft.path] = (meta.title, meta.description)
    return result


# --------------------------------------------------------------------------- structured data


def structured_data(
    context: Mapping[str, Any], site: SiteInfo, urls: SiteURLs
) -> list[dict[str, Any]]:
    """Return the JSON-LD objects a page carries, built from what the page shows."""
    kind = context["kind"]
    items: list[dict[str, Any]] = []
    if kind == "home":
        items.append(
            {
                "@context": "https://schema.org",
                "@type": "WebSite",
                "name": site.name,
                "url": urls.absolute("/"),
            }
        )
        items.append(
            {
                "@context": "https://schema.org",
                "@type": "Organization",
                "name": site.name,
                "url": urls.absolute("/"),
                "hasMerchantReturnPolicy": site.return_policy(),
            }
        )
    elif kind == "product":
        product = product_jsonld(context["product"], context["page"], site, urls)
        if product:
            items.append(product)
    elif kind in ("category", "guide"):
        cards: list[Card] = context["products"]
        if cards:
            items.append(
                {
                    "@context": "https://schema.org",
                    "@type": "ItemList",
                    "numberOfItems": len(cards),
                    "itemListElement": [
                        {
                            "@type": "ListItem",
                            "position": position,
                            "url": urls.absolute(card.path),
                            "name": card.title,
                        }
                        for position, card in enumerate(cards, start=1)
                    ],
                }
            )
    crumbs: list[Crumb] = context.get("breadcrumbs") or []
    if len(crumbs) > 1:
        items.append(
            {
                "@context": "https://schema.org",
                "@type": "BreadcrumbList",
                "itemListElement": [
                    {
                        "@type": "ListItem",
                        "position": position,
                        "name": crumb.name,
                        "item": urls.absolute(crumb.path),
                    }
                    for position, crumb in enumerate(crumbs, start=1)
                ],
            }
        )
    return items


def product_jsonld(
    view: ProductView, meta: PageMeta, site: SiteInfo, urls: SiteURLs
) -> dict[str, Any] | None:
    """Return ``Product`` (one variant) or ``ProductGroup`` markup; None without a price."""
    url = urls.absolute(view.path)
    data: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "Product",
        "@id": url + "#product",
        "name": view.title,
        "description": meta.description,
        "url": url,
    }
    if view.images:
        data["image"] = [urls.absolute(image.src) for image in view.images]
    if view.brand:
        data["brand"] = {"@type": "Brand", "name": view.brand}
    if view.state == "coming_soon":
        if view.price_min is None:
            # Nothing to offer yet: Product markup without an offer earns no rich result
            # and would describe a sale the page does not make.
            return None
        offer = _offer(view.price_min, PRE_ORDER, url, site)
        if view.available_from:
            offer["availabilityStarts"] = view.available_from.isoformat()
        data["offers"] = offer
        return data
    if not view.variants:
        return None
    if not view.has_options:
        variant = view.variants[0]
        _identifiers(data, variant)
        data["offers"] = _offer(variant.price, variant.availability, url, site)
        return data
    data["@type"] = "ProductGroup"
    data["productGroupID"] = view.handle
    varies = [
        VARIES_BY[name.casefold()] for name in view.option_names if name.casefold() in VARIES_BY
    ]
    if varies:
        data["variesBy"] = [SCHEMA + name for name in dict.fromkeys(varies)]
    data["hasVariant"] = [
        _variant_jsonld(view, variant, url, site, urls) for variant in view.variants
    ]
    return data


def _variant_jsonld(
    view: ProductView, variant: VariantView, url: str, site: SiteInfo, urls: SiteURLs
) -> dict[str, Any]:
    item: dict[str, Any] = {"@type": "Product", "name": f"{view.title} – {variant.title}"}
    _identifiers(item, variant)
    image = variant.image or (view.images[0] if view.images else None)
    if image:
        item["image"] = urls.absolute(image.src)
    extra = []
    for name, value in variant.options:
        prop = VARIES_BY.get(name.casefold())
        if prop:
            item[prop] = value
        else:
            extra.append({"@type": "PropertyValue", "name": name, "value": value})
    if extra:
        item["additionalProperty"] = extra
    item["offers"] = _offer(
        variant.price, variant.availability, f"{url}?variant={variant.id}", site
    )
    return item


def _identifiers(item: dict[str, Any], variant: VariantView) -> None:
    if variant.sku:
        item["sku"] = variant.sku
    if variant.barcode.isdigit() and len(variant.barcode) in (8, 12, 13, 14):
        item["gtin"] = variant.barcode


def _offer(price: Decimal, availability: str, url: str, site: SiteInfo) -> dict[str, Any]:
    return {
        "@type": "Offer",
        "url": url,
        "price": _decimal_text(price),
        "priceCurrency": site.currency,
        "priceValidUntil": site.price_valid_until,
        "availability": SCHEMA + availability,
        "itemCondition": SCHEMA + "NewCondition",
        "shippingDetails": SHIPPING_PLACEHOLDER,
        "hasMerchantReturnPolicy": RETURNS_PLACEHOLDER,
    }


# --------------------------------------------------------------------------- rendering


class PageRenderer:
    """Renders planned pages with one environment (what ``engine build`` hands its workers)."""

    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env

    def __call__(self, plan: PagePlan) -> bytes:
        """Render one page to bytes."""
        return render_page(self.env, plan)

    def prepare(self) -> None:
        """Compile every page template now, once, before render workers are forked.

        Each worker then starts with them compiled instead of compiling its own.
        """
        for name in self.env.list_templates(extensions=("j2",)):
            if not name.startswith(_NOT_PAGE_TEMPLATES):
                self.env.get_template(name)


def render_page(env: jinja2.Environment, plan: PagePlan) -> bytes:
    """Render one planned page to UTF-8 bytes (deterministic: no clocks, no randomness)."""
    template = env.get_template(plan.template)
    site: SiteInfo = env.globals["site"]  # type: ignore[assignment]
    urls: SiteURLs = env.globals["urls"]  # type: ignore[assignment]
    splice = site.jsonld_fragments
    context = plan.full_context()
    jsonld = [jsonld_dumps(item, splice) for item in structured_data(context, site, urls)]
    return template.render(context, jsonld=jsonld).encode("utf-8")
