"""Markdown content with YAML front matter, and the HTML sanitizer all copy passes through."""

from __future__ import annotations

import re

import nh3

#: Formatting a store's copy may use; everything else is unwrapped (its text kept).
ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "p", "br", "hr", "div", "span",
        "h1", "h2", "h3", "h4", "h5", "h6",
        "ul", "ol", "li", "dl", "dt", "dd",
        "a", "img", "figure", "figcaption",
        "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td", "colgroup", "col",
        "strong", "em", "b", "i", "u", "s", "del", "ins", "mark", "small", "sub", "sup",
        "abbr", "cite", "q", "kbd", "code", "pre", "blockquote",
        "details", "summary", "section",
    }
)  # fmt: skip

#: Elements removed together with everything inside them, so no script or style text
#: survives as visible page text.
DROPPED_WITH_CONTENT: frozenset[str] = frozenset(
    {
        "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet",
        "template", "noscript", "noembed", "noframes", "svg", "math", "canvas",
        "title", "textarea", "select", "option", "head",
    }
)  # fmt: skip

_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title", "id", "class"},
    "img": {"src", "alt", "width", "height"},
    "abbr": {"title"},
    "ol": {"start", "reversed", "class"},
    "li": {"id", "class"},
    "th": {"colspan", "rowspan", "scope", "style"},
    "td": {"colspan", "rowspan", "style"},
    "col": {"span"},
    "colgroup": {"span"},
    "code": {"class"},
    "sup": {"class"},
    "hr": {"class"},
    "section": {"class"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "del": {"cite", "datetime"},
    "ins": {"cite", "datetime"},
}
_ATTRIBUTE_VALUES: dict[str, dict[str, set[str]]] = {
    "img": {"loading": {"lazy", "eager"}},
}
_URL_SCHEMES = {"http", "https", "mailto", "tel"}
# Classes and ids Markdown itself produces (code languages, footnotes); any other id could
# clash with the page's own ids (a form target, for example), any other class with the theme.
_SAFE_CLASS = re.compile(r"(language-[A-Za-z0-9_+-]+|footnote[a-z-]*|footnotes[a-z-]*)")
_SAFE_ID = re.compile(r"fn(ref)?[0-9]+(:[0-9]+)?")
# After sanitizing, tag names are lowercase and "<" is escaped in text and attribute values,
# so this only meets real h1 tags.
_H1 = re.compile(r"<(/?)h1(?=[\s>])")


def _filter_attribute(element: str, attribute: str, value: str) -> str | None:
    """Keep only the ids and classes Markdown generates; pass other allowed values."""
    if attribute == "class":
        kept = [name for name in value.split() if _SAFE_CLASS.fullmatch(name)]
        return " ".join(kept) or None
    if attribute == "id":
        return value if _SAFE_ID.fullmatch(value) else None
    return value


def sanitize_html(html: str) -> str:
    """Return ``html`` reduced to safe formatting, with every ``<h1>`` demoted to ``<h2>``."""
    cleaned = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes=_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        tag_attribute_values=_ATTRIBUTE_VALUES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener",
        strip_comments=True,
        filter_style_properties={"text-align"},
    )
    # Each page owns its single <h1> (the product or page title).
    return _H1.sub(r"<\1h2", cleaned)
