"""Traffic sources, bot filtering and cookieless visitor hashes for page views and signups."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

CHANNELS = ("organic", "social", "email", "referral", "direct", "paid")

#: Query parameter carrying a restock email's link token (kept for campaign attribution).
LINK_TOKEN_PARAM = "et"

#: Normalized source, medium and campaign values are cut to this many characters.
MAX_VALUE_LENGTH = 100

#: Click ids that prove an ad click, with the platform named when nothing else names it.
#: fbclid is deliberately absent: Meta appends it to organic shares too, so alone it means social.
PAID_CLICK_IDS: dict[str, str] = {
    "gclid": "google",
    "gbraid": "google",
    "wbraid": "google",
    "dclid": "google",
    "msclkid": "bing",
    "ttclid": "tiktok",
    "li_fat_id": "linkedin",
    "twclid": "twitter",
    "yclid": "yandex",
    "sccid": "snapchat",
}
SOCIAL_CLICK_IDS: dict[str, str] = {"fbclid": "facebook"}

_TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{1,256}")

# utm_medium rules from Google Analytics' default channel group (case-insensitive).
_PAID_MEDIUM_RE = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
_DISPLAY_MEDIUMS = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIUMS = frozenset(
    {
        "social",
        "social-network",
        "social-media",
        "sm",
        "social network",
        "social media",
        "organic-social",
        "organic_social",
        "organic social",
    }
)
_EMAIL_WORDS = frozenset({"email", "e-mail", "e_mail", "e mail", "mail", "newsletter"})
_REFERRAL_MEDIUMS = frozenset({"referral", "affiliate", "affiliates"})
# Email service providers seen as utm_source on newsletter links.
_EMAIL_PROVIDERS = frozenset(
    {
        "mailchimp",
        "klaviyo",
        "sendgrid",
        "brevo",
        "sendinblue",
        "mailerlite",
        "convertkit",
        "beehiiv",
        "campaign-monitor",
        "campaignmonitor",
        "constantcontact",
        "omnisend",
        "activecampaign",
        "postmark",
        "substack",
    }
)
# Short names people type as utm_source.
_SOURCE_ALIASES: dict[str, str] = {
    "fb": "facebook",
    "ig": "instagram",
    "x": "twitter",
    "tw": "twitter",
    "li": "linkedin",
    "yt": "youtube",
    "tt": "tiktok",
    "pin": "pinterest",
    "adwords": "google",
    "googleads": "google",
    "google_ads": "google",
    "google-ads": "google",
    "bingads": "bing",
    "microsoft": "bing",
}

# Referrer hosts. An entry matches the host itself and every subdomain of it; the most
# specific entry wins (mail.google.com before google.*). A name of "" means "use the host".
_EXACT_HOSTS: dict[str, tuple[str, str]] = {
    # webmail (checked before the search brands they live under)
    "mail.google.com": ("email", "gmail"),
    "inbox.google.com": ("email", "gmail"),
    "mail.yahoo.com": ("email", "yahoo-mail"),
    "mail.yahoo.co.jp": ("email", "yahoo-mail"),
    "outlook.live.com": ("email", "outlook"),
    "outlook.office.com": ("email", "outlook"),
    "outlook.office365.com": ("email", "outlook"),
    "mail.live.com": ("email", "outlook"),
    "mail.aol.com": ("email", "aol-mail"),
    "mail.proton.me": ("email", "proton-mail"),
    "mail.protonmail.com": ("email", "proton-mail"),
    "mail.zoho.com": ("email", "zoho-mail"),
    "mail.zoho.eu": ("email", "zoho-mail"),
    "mail.yandex.ru": ("email", "yandex-mail"),
    "mail.yandex.com": ("email", "yandex-mail"),
    "e.mail.ru": ("email", "mail.ru"),
    "mail.qq.com": ("email", "qq-mail"),
    "mail.gmx.net": ("email", "gmx"),
    "navigator.gmx.net": ("email", "gmx"),
    "navigator.web.de": ("email", "web.de"),
    "app.fastmail.com": ("email", "fastmail"),
    "icloud.com": ("email", "icloud"),
    # Google properties that are not search
    "docs.google.com": ("referral", ""),
    "drive.google.com": ("referral", ""),
    "sites.google.com": ("referral", ""),
    "groups.google.com": ("referral", ""),
    "calendar.google.com": ("referral", ""),
    "classroom.google.com": ("referral", ""),
    # ad servers: the referrer of an ad click
    "googleadservices.com": ("paid", "google"),
    "googlesyndication.com": ("paid", "google"),
    "doubleclick.net": ("paid", "google"),
    # search engines without a brand spread over country domains
    "search.brave.com": ("organic", "brave"),
    "so.com": ("organic", "360"),
    "ya.ru": ("organic", "yandex"),
    "go.mail.ru": ("organic", "mail.ru"),
    "yep.com": ("organic", "yep"),
    "kagi.com": ("organic", "kagi"),
    "mojeek.com": ("organic", "mojeek"),
    "coccoc.com": ("organic", "coccoc"),
    "petalsearch.com": ("organic", "petal"),
    "search.lycos.com": ("organic", "lycos"),
    "dogpile.com": ("organic", "dogpile"),
    "metager.org": ("organic", "metager"),
    # social networks
    "facebook.com": ("social", "facebook"),
    "fb.com": ("social", "facebook"),
    "fb.me": ("social", "facebook"),
    "messenger.com": ("social", "facebook"),
    "m.me": ("social", "facebook"),
    "instagram.com": ("social", "instagram"),
    "threads.net": ("social", "threads"),
    "threads.com": ("social", "threads"),
    "t.co": ("social", "twitter"),
    "twitter.com": ("social", "twitter"),
    "x.com": ("social", "twitter"),
    "linkedin.com": ("social", "linkedin"),
    "lnkd.in": ("social", "linkedin"),
    "pin.it": ("social", "pinterest"),
    "reddit.com": ("social", "reddit"),
    "redd.it": ("social", "reddit"),
    "youtube.com": ("social", "youtube"),
    "youtu.be": ("social", "youtube"),
    "tiktok.com": ("social", "tiktok"),
    "bsky.app": ("social", "bluesky"),
    "snapchat.com": ("social", "snapchat"),
    "whatsapp.com": ("social", "whatsapp"),
    "wa.me": ("social", "whatsapp"),
    "t.me": ("social", "telegram"),
    "telegram.org": ("social", "telegram"),
    "telegram.me": ("social", "telegram"),
    "vk.com": ("social", "vk"),
    "vk.ru": ("social", "vk"),
    "ok.ru": ("social", "odnoklassniki"),
    "quora.com": ("social", "quora"),
    "tumblr.com": ("social", "tumblr"),
    "news.ycombinator.com": ("social", "hackernews"),
    "discord.com": ("social", "discord"),
    "discord.gg": ("social", "discord"),
    "discordapp.com": ("social", "discord"),
    "weibo.com": ("social", "weibo"),
    "weibo.cn": ("social", "weibo"),
    "line.me": ("social", "line"),
    "xing.com": ("social", "xing"),
    "nextdoor.com": ("social", "nextdoor"),
    "flipboard.com": ("social", "flipboard"),
    "twitch.tv": ("social", "twitch"),
}

# Brands registered under many country domains: "google" matches google.com, google.co.uk,
# google.com.br and their subdomains, but not google.example.com or googleusercontent.com.
_BRAND_HOSTS: dict[str, tuple[str, str]] = {
    "google": ("organic", "google"),
    "bing": ("organic", "bing"),
    "duckduckgo": ("organic", "duckduckgo"),
    "search.yahoo": ("organic", "yahoo"),
    "yandex": ("organic", "yandex"),
    "baidu": ("organic", "baidu"),
    "ecosia": ("organic", "ecosia"),
    "qwant": ("organic", "qwant"),
    "naver": ("organic", "naver"),
    "seznam": ("organic", "seznam"),
    "startpage": ("organic", "startpage"),
    "ask": ("organic", "ask"),
    "search.aol": ("organic", "aol"),
    "sogou": ("organic", "sogou"),
    "daum": ("organic", "daum"),
    "pinterest": ("social", "pinterest"),
}

# Referrers of Android apps (android-app://<package>/...).
_ANDROID_APPS: dict[str, tuple[str, str]] = {
    "com.google.android.googlequicksearchbox": ("organic", "google"),
    "com.google.android.gm": ("email", "gmail"),
    "com.microsoft.office.outlook": ("email", "outlook"),
    "com.facebook.katana": ("social", "facebook"),
    "com.facebook.lite": ("social", "facebook"),
    "com.facebook.orca": ("social", "facebook"),
    "com.instagram.android": ("social", "instagram"),
    "com.twitter.android": ("social", "twitter"),
    "com.linkedin.android": ("social", "linkedin"),
    "com.reddit.frontpage": ("social", "reddit"),
    "com.pinterest": ("social", "pinterest"),
    "com.zhiliaoapp.musically": ("social", "tiktok"),
    "com.google.android.youtube": ("social", "youtube"),
    "org.telegram.messenger": ("social", "telegram"),
    "com.whatsapp": ("social", "whatsapp"),
}

# Second-level labels under a country code (co.uk, com.br, ne.jp): the brand sits before them.
_SECOND_LEVEL_LABELS = frozenset(
    {"co", "com", "net", "org", "gov", "edu", "ac", "ne", "or", "go", "gob", "gv", "mil", "ltd"}
)

_SEARCH_NAMES = frozenset(
    name
    for channel, name in (*_EXACT_HOSTS.values(), *_BRAND_HOSTS.values(), *_ANDROID_APPS.values())
    if channel == "organic"
)
_SOCIAL_NAMES = frozenset(
    name
    for channel, name in (*_EXACT_HOSTS.values(), *_BRAND_HOSTS.values(), *_ANDROID_APPS.values())
    if channel == "social"
)
_EMAIL_SOURCES = (
    frozenset(
        name
        for channel, name in (*_EXACT_HOSTS.values(), *_ANDROID_APPS.values())
        if channel == "email"
    )
    | _EMAIL_WORDS
    | _EMAIL_PROVIDERS
)

_WHITESPACE_RE = re.compile(r"\s+")
# A host name with at least one dot, or an IPv6 literal; anything else is not a referrer.
_HOST_RE = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+|[0-9a-f:.]*:[0-9a-f:.]*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a page view or signup came from."""

    channel: str  # one of CHANNELS
    source: str = ""  # "google", "facebook", "newsletter", a referrer host, or ""
    medium: str = ""  # utm_medium, else "organic", "cpc", "referral" or "" (direct)
    campaign: str = ""  # utm_campaign
    click_id_kind: str = ""  # "gclid", "fbclid", ... when the landing URL carried one
    engine_token: str = ""  # the restock email link token (LINK_TOKEN_PARAM)


def _clean(value: object) -> str:
    """Lower-case, trim and bound one campaign value."""
    text = _CONTROL_RE.sub("", str(value))
    return _WHITESPACE_RE.sub(" ", text).strip().lower()[:MAX_VALUE_LENGTH]


def _strip_www(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def _lookup_host(host: str) -> tuple[str, str] | None:
    """Return (channel, name) for a known host, most specific entry first."""
    labels = host.split(".")
    for i in range(len(labels) - 1):
        hit = _EXACT_HOSTS.get(".".join(labels[i:]))
        if hit is not None:
            return hit
    # Drop the public suffix (one label, or two under a country code), then match the brand
    # right before it.
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL_LABELS:
        stem = labels[:-2]
    else:
        stem = labels[:-1]
    for i in range(len(stem)):
        hit = _BRAND_HOSTS.get(".".join(stem[i:]))
        if hit is not None:
            return hit
    return None


def _parse_host(value: str) -> str:
    """Return the lower-case host of a URL or bare host name, or "" when there is none."""
    value = value.strip()
    if not value:
        return ""
    if "://" not in value:
        value = "//" + value
    try:
        host = urlsplit(value).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".")


@dataclass(frozen=True, slots=True)
class _Referrer:
    channel: str  # "" when there is no usable external referrer
    name: str


_NO_REFERRER = _Referrer("", "")


def _classify_referrer(referrer: str | None, site_host: str) -> _Referrer:
    """Classify a referrer URL; internal, empty and unusable referrers give no channel."""
    if not referrer:
        return _NO_REFERRER
    referrer = referrer.strip()[:2048]
    try:
        parts = urlsplit(referrer if "://" in referrer else "//" + referrer)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return _NO_REFERRER
    if scheme == "android-app":
        app = _ANDROID_APPS.get(host)
        if app is not None:
            return _Referrer(*app)
        return _Referrer("referral", host) if host else _NO_REFERRER
    # about:blank, file:, data:, chrome-extension: and words without a host say nothing.
    if scheme not in ("", "http", "https") or not _HOST_RE.fullmatch(host):
        return _NO_REFERRER
    if site_host and (_strip_www(host) == site_host or host.endswith("." + site_host)):
        return _NO_REFERRER
    hit = _lookup_host(host)
    if hit is None:
        return _Referrer("referral", _strip_www(host))
    channel, name = hit
    return _Referrer(channel, name or _strip_www(host))


def _canonical_source(value: str) -> str:
    """Map a utm_source value to the name a referrer would give (Facebook.com -> facebook)."""
    if "." in value and " " not in value:
        hit = _lookup_host(_parse_host(value))
        if hit is not None and hit[1]:
            return hit[1]
        return _strip_www(value)
    return _SOURCE_ALIASES.get(value, value)


def _landing_params(page_url: str | None, utm: Mapping[str, str] | None) -> dict[str, str]:
    """Merge the landing URL's query with the parameters sent alongside (those win)."""
    params: dict[str, str] = {}
    if page_url and "?" in page_url:
        try:
            query = urlsplit(page_url.strip()).query
        except ValueError:
            query = ""
        try:
            fields = parse_qs(query, max_num_fields=100)
        except ValueError:  # more than 100 fields: not a landing URL worth reading
            fields = {}
        for key, values in fields.items():
            if values and values[0].strip():
                params[key.lower()] = values[0]
    for key, value in (utm or {}).items():
        if value is not None and str(value).strip():
            params[str(key).lower()] = str(value)
    return params


def _utm(params: Mapping[str, str], name: str) -> str:
    return _clean(params.get("utm_" + name, ""))


def _channel_from_utm(source: str, medium: str) -> str:
    """Apply Google Analytics' default channel rules, in its order, to source and medium."""
    if _PAID_MEDIUM_RE.match(medium) or medium in _DISPLAY_MEDIUMS:
        return "paid"
    if source in _SOCIAL_NAMES or medium in _SOCIAL_MEDIUMS:
        return "social"
    if source in _SEARCH_NAMES or medium == "organic":
        return "organic"
    if source in _EMAIL_SOURCES or medium in _EMAIL_WORDS or "newsletter" in source:
        return "email"
    # Anything else that was tagged (referral, affiliate, sms, a partner's name) came from
    # somewhere outside the site.
    return "referral"


def classify_source(
    referrer: str | None,
    page_url: str | None,
    utm: Mapping[str, str] | None = None,
    site_host: str | None = None,
) -> Source:
    """Classify a visit into a channel and source from its referrer and landing URL."""
    params = _landing_params(page_url, utm)
    site = _strip_www(_parse_host(site_host or "") or _parse_host_of_url(page_url))
    ref = _classify_referrer(referrer, site)

    token = params.get(LINK_TOKEN_PARAM, "").strip()
    token = token if _TOKEN_RE.fullmatch(token) else ""
    click_kind = next((kind for kind in PAID_CLICK_IDS if kind in params), "")
    if not click_kind and "fbclid" in params:
        click_kind = "fbclid"
    campaign = _utm(params, "campaign")

    utm_source = _utm(params, "source")
    utm_source = _canonical_source(utm_source) if utm_source else ""
    utm_medium = _utm(params, "medium")
    if utm_source or utm_medium:
        channel = _channel_from_utm(utm_source, utm_medium)
        if click_kind in PAID_CLICK_IDS:
            channel = "paid"  # auto-tagged ad clicks win over manual tags, as in GA
        return Source(channel, utm_source, utm_medium, campaign, click_kind, token)

    if click_kind in PAID_CLICK_IDS:
        name = ref.name if ref.channel else PAID_CLICK_IDS[click_kind]
        return Source("paid", name, "cpc", campaign, click_kind, token)
    if click_kind == "fbclid":
        name = ref.name if ref.channel == "social" else SOCIAL_CLICK_IDS[click_kind]
        return Source("social", name, "referral", campaign, click_kind, token)
    if token and ref.channel in ("", "email"):
        # The token is only ever put on restock email links.
        return Source("email", ref.name or "email", "email", campaign, "", token)
    if not ref.channel:
        return Source("direct", "", "", campaign, "", token)
    medium = {"organic": "organic", "paid": "cpc"}.get(ref.channel, "referral")
    return Source(ref.channel, ref.name, medium, campaign, "", token)


def _parse_host_of_url(url: str | None) -> str:
    """Return the host of an absolute URL ("" for a path or nothing)."""
    if not url or "://" not in url:
        return ""
    return _parse_host(url)


# --- bots -----------------------------------------------------------------------------

#: User agents shorter than this are not browsers (every real browser sends 60+ characters).
MIN_USER_AGENT_LENGTH = 20
#: Only this many leading characters are examined and cached.
MAX_USER_AGENT_LENGTH = 512
#: How many distinct user agents keep their verdict in memory.
BOT_CACHE_SIZE = 8192

_AUTOMATION_RE = re.compile(
    r"headless|phantomjs|puppeteer|playwright|selenium|webdriver|lighthouse|pagespeed|jsdom"
    r"|cypress|python-requests|python-urllib|python-httpx|aiohttp|httpx/|curl/|\bcurl\b|wget"
    r"|go-http-client|okhttp|\bjava/|apache-httpclient|axios/|node-fetch|undici|scrapy"
    r"|libwww-perl|guzzlehttp|postmanruntime|httpie|insomnia",
    re.IGNORECASE,
)

_REGEX_META = frozenset(".^$*+?{}[]()|\\")


def _as_literal(pattern: str) -> str | None:
    """Return the plain text a pattern matches, or None when it is a real regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 < len(pattern) and not pattern[i + 1].isalnum():
                out.append(pattern[i + 1])
                i += 2
                continue
            return None
        if char in _REGEX_META:
            return None
        out.append(char)
        i += 1
    return "".join(out)


class _CrawlerMatcher:
    """crawlerdetect's patterns, matched faster with the same result.

    crawlerdetect joins ~1,500 patterns into one case-insensitive alternation, which Python's
    regex engine tries at every position (about 0.5-2 ms per browser user agent). Most
    patterns are plain words, so those are indexed by their first three characters and
    checked with substring tests; only the real regexes stay in one (small) alternation.
    """

    def __init__(self, crawlers: list[str], exclusions: list[str]) -> None:
        self.exclusions = re.compile("(" + "|".join(exclusions) + ")", re.IGNORECASE)
        self.short: list[str] = []
        self.by_prefix: dict[str, list[str]] = {}
        regexes: list[str] = []
        for pattern in crawlers:
            literal = _as_literal(pattern)
            if literal is None:
                regexes.append(pattern)
            elif len(literal) < 3:
                self.short.append(literal.lower())
            else:
                self.by_prefix.setdefault(literal[:3].lower(), []).append(literal.lower())
        self.regex = re.compile("(" + "|".join(regexes) + ")", re.IGNORECASE)

    def is_crawler(self, user_agent: str) -> bool:
        """Return True when crawlerdetect would call this user agent a crawler."""
        agent = self.exclusions.sub("", user_agent.strip())
        if not agent:
            return False
        lowered = agent.lower()
        by_prefix = self.by_prefix
        for gram in {lowered[i : i + 3] for i in range(len(lowered) - 2)}:
            candidates = by_prefix.get(gram)
            if candidates and any(literal in lowered for literal in candidates):
                return True
        if any(literal in lowered for literal in self.short):
            return True
        return self.regex.search(agent) is not None


_matcher: _CrawlerMatcher | None = None
_matcher_lock = threading.Lock()


def _crawler_matcher() -> _CrawlerMatcher:
    """Return the crawler patterns, built once (the first requests wait for one build)."""
    global _matcher
    matcher = _matcher
    if matcher is None:
        # Built on the first user agent checked: only the web service classifies visitors.
        # Under a lock: concurrent first requests would otherwise each spend ~100 ms on it.
        with _matcher_lock:
            if _matcher is None:
                from crawlerdetect.providers.crawlers import data as crawlers
                from crawlerdetect.providers.exclusions import data as exclusions

                _matcher = _CrawlerMatcher(list(crawlers), list(exclusions))
            matcher = _matcher
    return matcher


@functools.lru_cache(maxsize=BOT_CACHE_SIZE)
def _is_bot_cached(user_agent: str) -> bool:
    if len(user_agent) < MIN_USER_AGENT_LENGTH:
        return True
    if _AUTOMATION_RE.search(user_agent):
        return True
    return _crawler_matcher().is_crawler(user_agent)


def is_bot(user_agent: str | None) -> bool:
    """Return True for crawlers, automation, headless browsers and missing user agents."""
    if not user_agent:
        return True
    return _is_bot_cached(user_agent.strip()[:MAX_USER_AGENT_LENGTH])


# --- visitor hashes ---------------------------------------------------------------------

VISITOR_HASH_LENGTH = 32  # hex characters (128 bits)
CLIENT_ADDRESS_HASH_LENGTH = 64  # hex characters (HMAC-SHA256)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: An IPv4 address already in its one spelling (most clients): no parsing needed.
_CANONICAL_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _normalize_ip(ip: str) -> str:
    """Give one spelling per address (IPv4-mapped IPv6 and zero-padded forms collapse)."""
    text = ip.strip()
    if _CANONICAL_IPV4_RE.fullmatch(text):
        return text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed


def _fields(*values: str) -> bytes:
    """Encode fields unambiguously (length-prefixed), so ("a", "bc") != ("ab", "c")."""
    out = bytearray()
    for value in values:
        data = value.encode("utf-8", "surrogatepass")
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def visitor_hash(salt: bytes, site: str, ip: str, user_agent: str) -> str:
    """Return the day's anonymous visitor id: keyed BLAKE2b of site, IP and user agent."""
    if not salt:
        raise ValueError("visitor_hash needs a non-empty salt")
    # BLAKE2b keys are at most 64 bytes; longer salts are reduced first.
    key = salt if len(salt) <= 64 else hashlib.blake2b(salt).digest()
    message = _fields(site.strip().lower(), _normalize_ip(ip), user_agent.strip())
    digest = hashlib.blake2b(message, key=key, digest_size=VISITOR_HASH_LENGTH // 2)
    return digest.hexdigest()


def client_address_hash(secret: str, ip: str) -> str:
    """Return a keyed HMAC-SHA256 of a client IP address for rate limits and consent logs."""
    if not secret:
        raise ValueError("client_address_hash needs a secret (an unkeyed IP hash is reversible)")
    # The context label keeps these hashes apart from anything else keyed with the same secret.
    message = b"client-address\x00" + _normalize_ip(ip).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
