"""Traffic sources, bot filtering and visitor hashes on real referrers and user agents."""

from __future__ import annotations

import dataclasses

import pytest
from crawlerdetect import CrawlerDetect

from engine.tracking import (
    CHANNELS,
    CLIENT_ADDRESS_HASH_LENGTH,
    LINK_TOKEN_PARAM,
    MAX_VALUE_LENGTH,
    VISITOR_HASH_LENGTH,
    Source,
    _crawler_matcher,
    classify_source,
    client_address_hash,
    is_bot,
    visitor_hash,
)

SITE = "gear.example.com"
PAGE = f"https://{SITE}/products/trail-tent/"

# (referrer, landing URL, expected channel, expected source)
REFERRERS = [
    # search engines, with and without country domains
    ("https://www.google.com/", PAGE, "organic", "google"),
    ("https://www.google.co.uk/", PAGE, "organic", "google"),
    ("https://www.google.com.br/", PAGE, "organic", "google"),
    ("https://www.google.de/url?sa=t&source=web&rct=j", PAGE, "organic", "google"),
    ("android-app://com.google.android.googlequicksearchbox/", PAGE, "organic", "google"),
    (
        "android-app://com.google.android.googlequicksearchbox/https/www.google.com",
        PAGE,
        "organic",
        "google",
    ),
    ("https://www.bing.com/", PAGE, "organic", "bing"),
    ("https://cn.bing.com/search?q=tent", PAGE, "organic", "bing"),
    ("https://duckduckgo.com/", PAGE, "organic", "duckduckgo"),
    ("https://html.duckduckgo.com/", PAGE, "organic", "duckduckgo"),
    ("https://search.yahoo.com/", PAGE, "organic", "yahoo"),
    ("https://r.search.yahoo.com/_ylt=AwrFQ/RV=2/RE=1/RO=10/RU=x", PAGE, "organic", "yahoo"),
    ("https://search.yahoo.co.jp/", PAGE, "organic", "yahoo"),
    ("https://yandex.ru/", PAGE, "organic", "yandex"),
    ("https://yandex.com.tr/search/?text=cadir", PAGE, "organic", "yandex"),
    ("https://ya.ru/", PAGE, "organic", "yandex"),
    ("https://www.baidu.com/link?url=abc", PAGE, "organic", "baidu"),
    ("https://m.baidu.com/", PAGE, "organic", "baidu"),
    ("https://www.ecosia.org/", PAGE, "organic", "ecosia"),
    ("https://www.qwant.com/", PAGE, "organic", "qwant"),
    ("https://search.naver.com/search.naver?query=tent", PAGE, "organic", "naver"),
    ("https://search.seznam.cz/", PAGE, "organic", "seznam"),
    ("https://search.brave.com/", PAGE, "organic", "brave"),
    ("https://www.startpage.com/", PAGE, "organic", "startpage"),
    ("https://www.so.com/", PAGE, "organic", "360"),
    ("https://www.sogou.com/", PAGE, "organic", "sogou"),
    ("https://search.daum.net/", PAGE, "organic", "daum"),
    # social networks and their link shims
    ("https://l.facebook.com/", PAGE, "social", "facebook"),
    ("https://lm.facebook.com/l.php?u=https%3A%2F%2Fgear.example.com", PAGE, "social", "facebook"),
    ("https://m.facebook.com/", PAGE, "social", "facebook"),
    ("https://l.instagram.com/", PAGE, "social", "instagram"),
    ("https://t.co/", PAGE, "social", "twitter"),
    ("https://x.com/", PAGE, "social", "twitter"),
    ("https://lnkd.in/", PAGE, "social", "linkedin"),
    ("https://www.linkedin.com/", PAGE, "social", "linkedin"),
    ("https://out.reddit.com/t3_1abc", PAGE, "social", "reddit"),
    ("https://www.reddit.com/", PAGE, "social", "reddit"),
    ("https://www.pinterest.co.uk/", PAGE, "social", "pinterest"),
    ("https://www.pinterest.de/", PAGE, "social", "pinterest"),
    ("https://pin.it/", PAGE, "social", "pinterest"),
    ("https://www.youtube.com/", PAGE, "social", "youtube"),
    ("https://www.tiktok.com/", PAGE, "social", "tiktok"),
    ("https://bsky.app/", PAGE, "social", "bluesky"),
    ("https://news.ycombinator.com/", PAGE, "social", "hackernews"),
    ("android-app://com.facebook.katana/", PAGE, "social", "facebook"),
    # webmail
    ("https://mail.google.com/", PAGE, "email", "gmail"),
    ("android-app://com.google.android.gm/", PAGE, "email", "gmail"),
    ("https://outlook.live.com/", PAGE, "email", "outlook"),
    ("https://mail.yahoo.com/", PAGE, "email", "yahoo-mail"),
    ("https://us.mg5.mail.yahoo.com/", PAGE, "email", "yahoo-mail"),
    # other sites
    ("https://trailblog.example.org/best-tents-2025/", PAGE, "referral", "trailblog.example.org"),
    ("https://www.outdoorforum.net/t/123", PAGE, "referral", "outdoorforum.net"),
    ("https://docs.google.com/document/d/1", PAGE, "referral", "docs.google.com"),
    ("https://news.yahoo.com/", PAGE, "referral", "news.yahoo.com"),
    ("https://google.example.org/", PAGE, "referral", "google.example.org"),
    ("https://googleblog.blogspot.com/", PAGE, "referral", "googleblog.blogspot.com"),
    ("android-app://com.example.reader/", PAGE, "referral", "com.example.reader"),
    # the site itself and nothing at all
    (f"https://{SITE}/categories/tents/", PAGE, "direct", ""),
    (f"https://www.{SITE}/", PAGE, "direct", ""),
    ("", PAGE, "direct", ""),
    (None, PAGE, "direct", ""),
    (None, None, "direct", ""),
    # malformed or meaningless referrers
    ("http://[::1", PAGE, "direct", ""),
    ("not a url", PAGE, "direct", ""),
    ("javascript:alert(1)", PAGE, "direct", ""),
    ("about:blank", PAGE, "direct", ""),
    ("chrome-extension://abcdef/popup.html", PAGE, "direct", ""),
    ("https://", PAGE, "direct", ""),
    ("://www.google.com", PAGE, "direct", ""),
    ("www.google.com/search", PAGE, "organic", "google"),
    ("https://WWW.GOOGLE.COM./", PAGE, "organic", "google"),
    ("https://www.google.com:443/", PAGE, "organic", "google"),
    ("https://exa mple.com/", PAGE, "direct", ""),
]


@pytest.mark.parametrize(("referrer", "page", "channel", "source"), REFERRERS)
def test_referrer_classification(
    referrer: str | None, page: str | None, channel: str, source: str
) -> None:
    """Each real referrer lands in the channel Google Analytics would give it."""
    result = classify_source(referrer, page, site_host=SITE)
    assert (result.channel, result.source) == (channel, source)
    assert result.channel in CHANNELS


def test_referrer_medium_follows_analytics_conventions() -> None:
    """Without tags the medium reads organic, referral, cpc or nothing."""
    assert classify_source("https://www.google.com/", PAGE).medium == "organic"
    assert classify_source("https://t.co/x", PAGE).medium == "referral"
    assert classify_source("https://blog.example.org/", PAGE).medium == "referral"
    assert classify_source(None, PAGE).medium == ""
    assert classify_source(None, PAGE + "?gclid=x").medium == "cpc"


def test_site_host_defaults_to_the_landing_page_host() -> None:
    """A referrer from the page's own host is direct even without site_host."""
    assert classify_source(f"https://{SITE}/guides/x/", PAGE).channel == "direct"
    assert classify_source(f"https://{SITE}/guides/x/", "/products/x/").channel == "referral"


def test_a_subdomain_of_the_site_is_internal_but_the_parent_domain_is_not() -> None:
    """blog.<site> counts as the site; the parent domain linking to a shop is a referral."""
    assert classify_source(f"https://blog.{SITE}/", PAGE, site_host=SITE).channel == "direct"
    parent = classify_source("https://example.com/", PAGE, site_host=SITE)
    assert (parent.channel, parent.source) == ("referral", "example.com")


def test_site_host_may_be_given_as_a_url() -> None:
    """site_host accepts a bare host, a host with port or a full URL."""
    for host in (SITE, f"{SITE}:8000", f"https://{SITE}", f"https://www.{SITE}/"):
        assert classify_source(f"https://{SITE}/", "/x/", site_host=host).channel == "direct"


# (referrer, landing URL, utm mapping sent alongside, channel, source, medium, campaign, click id)
TAGGED = [
    # email tags
    (
        None,
        PAGE + "?utm_source=newsletter&utm_medium=email&utm_campaign=spring-restock",
        None,
        ("email", "newsletter", "email", "spring-restock", ""),
    ),
    (
        None,
        PAGE + "?utm_source=mailchimp&utm_medium=e-mail",
        None,
        ("email", "mailchimp", "e-mail", "", ""),
    ),
    (
        None,
        PAGE + "?utm_source=store&utm_medium=e_mail",
        None,
        ("email", "store", "e_mail", "", ""),
    ),
    (None, PAGE + "?utm_source=klaviyo", None, ("email", "klaviyo", "", "", "")),
    (
        None,
        PAGE + "?utm_source=weekly-newsletter&utm_medium=link",
        None,
        ("email", "weekly-newsletter", "link", "", ""),
    ),
    # paid: medium rules and click ids
    (
        "https://www.google.com/",
        PAGE + "?utm_source=google&utm_medium=cpc&utm_campaign=tents&gclid=EAIaIQobChMI",
        None,
        ("paid", "google", "cpc", "tents", "gclid"),
    ),
    (None, PAGE + "?gclid=EAIaIQobChMI8", None, ("paid", "google", "cpc", "", "gclid")),
    (
        "https://www.google.com/",
        PAGE + "?gbraid=0AAAAA",
        None,
        ("paid", "google", "cpc", "", "gbraid"),
    ),
    (
        "https://www.bing.com/",
        PAGE + "?msclkid=6d1f0e",
        None,
        ("paid", "bing", "cpc", "", "msclkid"),
    ),
    (None, PAGE + "?msclkid=6d1f0e", None, ("paid", "bing", "cpc", "", "msclkid")),
    (None, PAGE + "?ttclid=E.C.P.abc", None, ("paid", "tiktok", "cpc", "", "ttclid")),
    ("https://www.youtube.com/", PAGE + "?gclid=x", None, ("paid", "youtube", "cpc", "", "gclid")),
    (
        None,
        PAGE + "?utm_source=facebook&utm_medium=paid_social",
        None,
        ("paid", "facebook", "paid_social", "", ""),
    ),
    (
        None,
        PAGE + "?utm_source=facebook&utm_medium=paid social",
        None,
        ("paid", "facebook", "paid social", "", ""),
    ),
    (
        None,
        PAGE + "?utm_source=partner&utm_medium=display",
        None,
        ("paid", "partner", "display", "", ""),
    ),
    (
        None,
        PAGE + "?utm_source=criteo&utm_medium=retargeting",
        None,
        ("paid", "criteo", "retargeting", "", ""),
    ),
    (None, PAGE + "?utm_source=bing&utm_medium=ppc", None, ("paid", "bing", "ppc", "", "")),
    (None, PAGE + "?utm_source=ytads&utm_medium=cpv", None, ("paid", "ytads", "cpv", "", "")),
    (
        "https://googleads.g.doubleclick.net/pagead/ads",
        PAGE,
        None,
        ("paid", "google", "cpc", "", ""),
    ),
    # a click id is an ad click even when the manual tags say otherwise (GA auto-tagging wins)
    (
        None,
        PAGE + "?utm_source=newsletter&utm_medium=email&gclid=x",
        None,
        ("paid", "newsletter", "email", "", "gclid"),
    ),
    # fbclid alone is social: Meta adds it to organic shares too
    (
        "https://l.facebook.com/",
        PAGE + "?fbclid=IwAR2xyz",
        None,
        ("social", "facebook", "referral", "", "fbclid"),
    ),
    (None, PAGE + "?fbclid=IwAR2xyz", None, ("social", "facebook", "referral", "", "fbclid")),
    (
        "https://l.instagram.com/",
        PAGE + "?fbclid=PAZXh0bg",
        None,
        ("social", "instagram", "referral", "", "fbclid"),
    ),
    (
        None,
        PAGE + "?fbclid=IwAR2&utm_source=fb&utm_medium=cpc",
        None,
        ("paid", "facebook", "cpc", "", "fbclid"),
    ),
    # social tags, incl. GA's order: a social source beats medium "organic"
    (
        None,
        PAGE + "?utm_source=instagram&utm_medium=social",
        None,
        ("social", "instagram", "social", "", ""),
    ),
    (
        None,
        PAGE + "?utm_source=facebook&utm_medium=organic",
        None,
        ("social", "facebook", "organic", "", ""),
    ),
    (None, PAGE + "?utm_source=ig", None, ("social", "instagram", "", "", "")),
    (
        None,
        PAGE + "?utm_source=l.facebook.com&utm_medium=referral",
        None,
        ("social", "facebook", "referral", "", ""),
    ),
    (None, PAGE + "?utm_source=club&utm_medium=sm", None, ("social", "club", "sm", "", "")),
    # organic tags
    (
        None,
        PAGE + "?utm_source=google&utm_medium=organic",
        None,
        ("organic", "google", "organic", "", ""),
    ),
    (None, PAGE + "?utm_source=google.co.uk", None, ("organic", "google", "", "", "")),
    # anything else that was tagged
    (
        None,
        PAGE + "?utm_source=partner-blog&utm_medium=affiliate",
        None,
        ("referral", "partner-blog", "affiliate", "", ""),
    ),
    (
        None,
        PAGE + "?utm_source=qr-code&utm_medium=print",
        None,
        ("referral", "qr-code", "print", "", ""),
    ),
    (None, PAGE + "?utm_medium=sms", None, ("referral", "", "sms", "", "")),
    # utm overrides the referrer
    (
        "https://www.google.com/",
        PAGE + "?utm_source=newsletter&utm_medium=email",
        None,
        ("email", "newsletter", "email", "", ""),
    ),
    (
        "https://www.google.com/",
        PAGE + "?utm_source=twitter",
        None,
        ("social", "twitter", "", "", ""),
    ),
    # only a campaign name: the referrer still decides the channel
    (
        "https://www.google.com/",
        PAGE + "?utm_campaign=Summer",
        None,
        ("organic", "google", "organic", "summer", ""),
    ),
    # mixed-case, padded and repeated values
    (
        None,
        PAGE + "?UTM_SOURCE=%20Facebook%20&utm_medium=Social&utm_campaign=Spring%20%20Sale",
        None,
        ("social", "facebook", "social", "spring sale", ""),
    ),
    (
        None,
        PAGE + "?utm_source=Google&utm_medium=CPC&GCLID=abc",
        None,
        ("paid", "google", "cpc", "", "gclid"),
    ),
    (
        None,
        PAGE + "?utm_source=NewsLetter&utm_medium=EMAIL",
        None,
        ("email", "newsletter", "email", "", ""),
    ),
    (None, PAGE + "?utm_source=&utm_medium=", None, ("direct", "", "", "", "")),
    # parameters sent alongside (the beacon and the waitlist form) win over the URL's
    (
        "https://www.google.com/",
        "/products/trail-tent/",
        {"utm_source": "Newsletter", "utm_medium": "Email"},
        ("email", "newsletter", "email", "", ""),
    ),
    (
        None,
        PAGE + "?utm_source=a&utm_medium=b",
        {"utm_medium": "cpc"},
        ("paid", "a", "cpc", "", ""),
    ),
    (None, PAGE, {"gclid": "abc"}, ("paid", "google", "cpc", "", "gclid")),
    (None, PAGE, {"utm_source": "  "}, ("direct", "", "", "", "")),
]


@pytest.mark.parametrize(("referrer", "page", "utm", "expected"), TAGGED)
def test_tagged_visits(
    referrer: str | None,
    page: str,
    utm: dict[str, str] | None,
    expected: tuple[str, str, str, str, str],
) -> None:
    """UTM tags and click ids follow Google Analytics' default channel rules."""
    result = classify_source(referrer, page, utm, site_host=SITE)
    got = (result.channel, result.source, result.medium, result.campaign, result.click_id_kind)
    assert got == expected


def test_restock_email_token_is_kept_and_means_email() -> None:
    """The restock email's link token survives, and alone it marks the visit as email."""
    url = f"{PAGE}?{LINK_TOKEN_PARAM}=c1.AbC-9_x"
    alone = classify_source(None, url, site_host=SITE)
    assert (alone.channel, alone.source, alone.engine_token) == ("email", "email", "c1.AbC-9_x")
    webmail = classify_source("https://mail.google.com/", url, site_host=SITE)
    assert (webmail.channel, webmail.source, webmail.engine_token) == (
        "email",
        "gmail",
        "c1.AbC-9_x",
    )
    tagged = classify_source(
        None, url + "&utm_source=store&utm_medium=email&utm_campaign=restock-42", site_host=SITE
    )
    assert (tagged.channel, tagged.campaign, tagged.engine_token) == (
        "email",
        "restock-42",
        "c1.AbC-9_x",
    )
    # A forwarded link posted on a blog is that blog's referral, still attributable.
    blog = classify_source("https://blog.example.org/", url, site_host=SITE)
    assert (blog.channel, blog.engine_token) == ("referral", "c1.AbC-9_x")


def test_a_malformed_token_is_dropped() -> None:
    """Only URL-safe tokens of sane length are kept."""
    for bad in ("<script>", "a" * 300, "a b"):
        source = classify_source(None, PAGE, {LINK_TOKEN_PARAM: bad})
        assert source.engine_token == ""


def test_values_are_bounded_and_clean() -> None:
    """Long or odd values are cut and stripped of control characters."""
    url = PAGE + "?utm_source=" + "x" * 500 + "&utm_campaign=a%00b%0Ac"
    result = classify_source(None, url)
    assert len(result.source) == MAX_VALUE_LENGTH
    assert result.campaign == "abc"


def test_garbage_landing_urls_do_not_raise() -> None:
    """Unparseable page URLs and query strings give a direct visit, never an exception."""
    for page in ("http://[::1/?utm_source=x", "?" + "&".join(f"k{i}=v" for i in range(500)), "%%%"):
        assert classify_source(None, page).channel in CHANNELS


def test_source_is_a_frozen_value() -> None:
    """Source compares by value and cannot be changed."""
    source = classify_source("https://www.google.com/", PAGE)
    assert source == Source("organic", "google", "organic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        source.channel = "paid"  # type: ignore[misc]


# --- bots -----------------------------------------------------------------------------

BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/125.0.6422.175 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; DuckDuckBot-Https/1.1; https://duckduckgo.com/duckduckbot)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
    "+https://openai.com/gptbot)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.6367.60 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/98.0.4758.102 Safari/537.36 Lighthouse",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 "
    "Safari/538.1",
    "Mozilla/5.0 (linux) AppleWebKit/537.36 (KHTML, like Gecko) jsdom/22.1.0",
    "curl/8.5.0",
    "curl/7.81.0",
    "python-requests/2.31.0",
    "Python-urllib/3.11",
    "python-httpx/0.27.0",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "Java/17.0.2",
    "Apache-HttpClient/4.5.14 (Java/17.0.8)",
    "axios/1.6.8",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "undici",
    "Wget/1.21.4",
    "Scrapy/2.11.1 (+https://scrapy.org)",
    "PostmanRuntime/7.37.3",
    "Mozilla/5.0",
    "Mozilla/5.0 (X11)",
    "",
    "   ",
    None,
]

BROWSERS = [
    # Chrome desktop (Windows, macOS, Linux)
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36",
    # Chrome Android
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Mobile Safari/537.36",
    # Safari iOS and macOS, Chrome iOS
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    # Firefox desktop and Android
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
    # Edge
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    # Samsung Internet
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    # Opera
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.0.0 Safari/537.36 OPR/109.0.0.0",
    # in-app browsers: real people reading from social apps
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/21E219 [FBAN/FBIOS;FBAV/458.0.0.34.107;FBBV/584390046;FBDV/iPhone14,2;"
    "FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML,"
    " like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 Instagram 327.0.0.37.103"
    " Android (34/14; 420dpi; 1080x2205; Google/google; Pixel 8; shiba; shiba; en_US; 587617062)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) GSA/312.0.624279463 Mobile/15E148 Safari/604.1",
]


@pytest.mark.parametrize("user_agent", BOTS)
def test_crawlers_automation_and_missing_agents_are_bots(user_agent: str | None) -> None:
    """Crawlers, headless browsers, HTTP libraries and empty agents are dropped."""
    assert is_bot(user_agent)


@pytest.mark.parametrize("user_agent", BROWSERS)
def test_real_browsers_are_not_bots(user_agent: str) -> None:
    """Everyday browsers, including in-app ones, are counted."""
    assert not is_bot(user_agent)


def _detector_corpus() -> list[str]:
    """Build user agents around every crawlerdetect pattern, plus plain browsers."""
    from crawlerdetect.providers.crawlers import data as crawlers

    corpus = list(BROWSERS)
    for pattern in crawlers:
        word = pattern.replace("\\", "").strip("^$")
        corpus.append(f"Mozilla/5.0 (compatible; {word}/1.0; +https://example.com)")
        corpus.append(f"{word.upper()} Mozilla/5.0 (Windows NT 10.0) Chrome/124.0 Safari/537.36")
    for browser in BROWSERS:
        corpus.append(browser.replace("Mobile", "Mobile Yandex"))
        corpus.append(browser + " Ruby")
    return corpus


def test_fast_crawler_matcher_agrees_with_crawlerdetect() -> None:
    """The indexed matcher gives exactly crawlerdetect's answer on every pattern."""
    reference = CrawlerDetect()
    matcher = _crawler_matcher()
    disagreements = [
        ua for ua in _detector_corpus() if matcher.is_crawler(ua) != reference.is_crawler(ua)
    ]
    assert disagreements == []


# --- hashes -----------------------------------------------------------------------------

SALT = bytes(range(32))
CHROME = BROWSERS[0]


def test_visitor_hash_is_stable_keyed_and_fixed_length() -> None:
    """Same inputs give the same id; salt, site, IP and agent each change it."""
    base = visitor_hash(SALT, SITE, "203.0.113.7", CHROME)
    assert len(base) == VISITOR_HASH_LENGTH
    assert all(char in "0123456789abcdef" for char in base)
    assert base == visitor_hash(SALT, SITE, "203.0.113.7", CHROME)
    assert base != visitor_hash(b"another salt", SITE, "203.0.113.7", CHROME)
    assert base != visitor_hash(SALT, "other.example.com", "203.0.113.7", CHROME)
    assert base != visitor_hash(SALT, SITE, "203.0.113.8", CHROME)
    assert base != visitor_hash(SALT, SITE, "203.0.113.7", BROWSERS[1])
    assert "203.0.113.7" not in base


def test_visitor_hash_normalizes_addresses_and_site() -> None:
    """One address has one hash however it is spelled."""
    base = visitor_hash(SALT, SITE, "203.0.113.7", CHROME)
    assert visitor_hash(SALT, SITE.upper(), " ::ffff:203.0.113.7 ", CHROME) == base
    v6 = visitor_hash(SALT, SITE, "2001:db8::1", CHROME)
    assert visitor_hash(SALT, SITE, "2001:0DB8:0000::0001", CHROME) == v6


def test_visitor_hash_fields_cannot_run_together() -> None:
    """Moving text from one field to the next changes the hash."""
    assert visitor_hash(SALT, "ab", "c", CHROME) != visitor_hash(SALT, "a", "bc", CHROME)


def test_visitor_hash_accepts_long_salts_and_refuses_empty_ones() -> None:
    """Salts beyond BLAKE2b's 64-byte key still work; an empty salt is an error."""
    assert len(visitor_hash(b"s" * 100, SITE, "203.0.113.7", CHROME)) == VISITOR_HASH_LENGTH
    with pytest.raises(ValueError):
        visitor_hash(b"", SITE, "203.0.113.7", CHROME)


def test_client_address_hash() -> None:
    """The signup address hash is keyed, fixed length and never shows the address."""
    first = client_address_hash("secret", "198.51.100.23")
    assert len(first) == CLIENT_ADDRESS_HASH_LENGTH
    assert first == client_address_hash("secret", "::ffff:198.51.100.23")
    assert first != client_address_hash("other", "198.51.100.23")
    assert first != client_address_hash("secret", "198.51.100.24")
    assert "198.51.100.23" not in first
    with pytest.raises(ValueError):
        client_address_hash("", "198.51.100.23")
