"""Markdown content with YAML front matter, and the HTML sanitizer all copy passes through.

``load_content`` reads ``products/``, ``categories/``, ``comparisons/``, ``guides/`` and
``pages/`` (``<slug>.md`` each) plus ``assets/``, validates every file's front matter and
reports every problem at once as ``file:line: message``. ``check_references`` then checks
the handles the files name against the catalog.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nh3

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from yaml.nodes import Node, ScalarNode

# The Markdown and YAML parsers are imported by the functions that parse: a build whose
# content is unchanged takes the parsed content from its cache and never needs them.

#: Formatting a store's copy may use; everything else is unwrapped (its text kept).
ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "p", "br", "hr", "div", "span", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
        "li", "dl", "dt", "dd", "a", "img", "figure", "figcaption", "table", "caption",
        "thead", "tbody", "tfoot", "tr", "th", "td", "colgroup", "col", "strong", "em", "b",
        "i", "u", "s", "del", "ins", "mark", "small", "sub", "sup", "abbr", "cite", "q",
        "kbd", "code", "pre", "blockquote", "details", "summary", "section",
    }
)  # fmt: skip

#: Elements removed together with everything inside them, so no script or style text
#: survives as visible page text.
DROPPED_WITH_CONTENT: frozenset[str] = frozenset(
    {
        "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet",
        "template", "noscript", "noembed", "noframes", "svg", "math", "canvas", "title",
        "textarea", "select", "option", "head",
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


@functools.cache
def _cleaner() -> nh3.Cleaner:
    """Return the one sanitizer, built once (building it costs more than cleaning a page)."""
    return nh3.Cleaner(
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


def sanitize_html(html: str) -> str:
    """Return ``html`` reduced to safe formatting, with every ``<h1>`` demoted to ``<h2>``."""
    # Each page owns its single <h1> (the product or page title).
    return _H1.sub(r"<\1h2", _cleaner().clean(html))


@functools.cache
def _markdown() -> MarkdownIt:
    """Return the one shared Markdown parser (CommonMark, tables, strikethrough, footnotes)."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.footnote import footnote_plugin

    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).use(footnote_plugin)


# Text that Markdown would only split into paragraphs: no markup characters, no line that
# could open a block (list, heading underline, code indent) and no hard-break spaces.
_PLAIN_TEXT = re.compile(r"(?:[^\W_]|[ ,.;:?!'()/%$@+=\n-])*")
_BLOCK_START = re.compile(r"^(?:[ +=-]|[0-9]+[.)])|[ ]$", re.MULTILINE)


def render_markdown(text: str) -> str:
    """Render Markdown (raw HTML allowed) to sanitized HTML."""
    text = text.strip("\n")
    if not text.strip():
        return ""
    if _PLAIN_TEXT.fullmatch(text) and not _BLOCK_START.search(text):
        # Plain prose (most FAQ answers) renders to the same bytes without the parser,
        # which costs far more than everything else in loading a file.
        paragraphs = re.split(r"\n\n+", text)
        return "".join(f"<p>{paragraph}</p>\n" for paragraph in paragraphs)
    return sanitize_html(_markdown().render(text))


# --- errors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentError:
    """One problem in one content file."""

    file: str  # path relative to CONTENT_DIR, e.g. "products/tent.md"
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ContentErrors(Exception):
    """Every problem found in the content, raised at once."""

    def __init__(self, errors: list[ContentError]) -> None:
        self.errors = sorted(errors, key=_error_order)
        super().__init__("\n".join(str(error) for error in self.errors))


def _error_order(error: ContentError) -> tuple[str, int, str]:
    """Sort errors as an editor walks the files: by file, then line."""
    return (error.file, error.line, error.message)


# --- documents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One validated Markdown file."""

    kind: str  # "product" | "category" | "comparison" | "guide" | "page"
    slug: str  # file stem
    source: str  # path relative to CONTENT_DIR
    meta: dict[str, Any]  # validated front matter (dates as date, price as Decimal)
    html: str  # sanitized HTML from the Markdown body
    digest: str  # sha256 hex of the file bytes
    lines: dict[str, int]  # front-matter key path -> line, e.g. "products.1": 5

    def line(self, path: str) -> int:
        """Return the line of a front-matter key path, or 1 when it has none."""
        return self.lines.get(path, 1)


@dataclass(frozen=True)
class Content:
    """Everything under CONTENT_DIR, validated."""

    products: dict[str, Document] = field(default_factory=dict)
    categories: dict[str, Document] = field(default_factory=dict)
    comparisons: dict[str, Document] = field(default_factory=dict)
    guides: dict[str, Document] = field(default_factory=dict)
    pages: dict[str, Document] = field(default_factory=dict)
    assets: dict[str, Path] = field(default_factory=dict)  # "/assets/x.svg" -> file
    digest: str = hashlib.sha256().hexdigest()  # of all files read

    def coming_soon(self) -> set[str]:
        """Return the handles declared as coming-soon products."""
        return {
            handle
            for handle, document in self.products.items()
            if document.meta.get("status") == "coming-soon"
        }


#: Folder name -> document kind.
KINDS: dict[str, str] = {
    "products": "product",
    "categories": "category",
    "comparisons": "comparison",
    "guides": "guide",
    "pages": "page",
}
ASSETS_FOLDER = "assets"
#: First path segments a plain page may not take (the service's routes and page families).
RESERVED_SLUGS: frozenset[str] = frozenset(
    {
        "api", "hooks", "waitlist", "unsubscribe", "admin", "healthz", "products",
        "categories", "compare", "guides", "assets",
    }
)  # fmt: skip
#: Comparison rows the engine fills from catalog data; other rows name product attributes.
BUILTIN_COMPARISON_ROWS: tuple[str, ...] = ("price", "availability", "brand", "options", "weight")
HANDLE_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_ASSET_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_CLOSING_FENCE = re.compile(r"^---[ \t]*$", re.MULTILINE)
_MAX_DEPTH = 4


def is_handle(value: str) -> bool:
    """Return True when ``value`` is a valid handle or slug (a-z, 0-9, inner hyphens)."""
    return HANDLE_PATTERN.fullmatch(value) is not None


def _ignored(name: str) -> bool:
    """Return True for hidden files and editor leftovers, which are never content."""
    return name.startswith((".", "#")) or name.endswith("~")


# --- reading one file --------------------------------------------------------------------

_Invalid = object()  # a field value that failed validation (its error is already recorded)


class _File:
    """The state of reading one file: its errors and the line of every front-matter path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[ContentError] = []
        self.lines: dict[str, int] = {}
        self.raw: dict[str, str] = {}  # scalar path -> its text as written
        self.offset = 1  # file line of the front matter's first line, minus one

    def error(self, line: int, message: str) -> None:
        """Record a problem at ``line``."""
        self.errors.append(ContentError(self.source, line, message))

    def at(self, path: str, message: str) -> None:
        """Record a problem at the line of a front-matter path."""
        self.error(self.lines.get(path, 1), message)

    def node_line(self, node: Node) -> int:
        """Return the file line where ``node`` starts."""
        return self.offset + node.start_mark.line + 1

    def value(self, node: Node, path: str, depth: int = 0) -> Any:
        """Turn a YAML node into plain values, noting each path's line."""
        from yaml.nodes import MappingNode, ScalarNode, SequenceNode

        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if depth >= _MAX_DEPTH:
            self.at(path, f"'{path}' is nested too deeply")
            return _Invalid
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                item_path = f"{path}.{index}"
                self.lines[item_path] = self.node_line(item)
                items.append(self.value(item, item_path, depth + 1))
            return items
        assert isinstance(node, MappingNode)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = self.node_line(key_node)
            if not (isinstance(key_node, ScalarNode) and key_node.tag.endswith(":str")):
                self.error(line, "field names must be plain text")
                continue
            name = key_node.value
            key_path = f"{path}.{name}" if path else name
            if name in mapping:
                self.error(line, f"'{key_path}' is given twice")
                continue
            self.lines[key_path] = line
            mapping[name] = self.value(value_node, key_path, depth + 1)
        return mapping

    def scalar(self, node: ScalarNode, path: str) -> Any:
        """Construct one scalar the way YAML's safe loader would, keeping numbers exact."""
        self.raw[path] = node.value
        tag = node.tag.rsplit(":", 1)[-1]
        if tag == "str":
            return node.value
        if tag == "float":
            # Decimal from the text as written: "19.90" stays 19.90, never 19.899999...
            try:
                return Decimal(node.value.replace("_", ""))
            except InvalidOperation:
                return _Invalid if path == "price" else node.value
        import yaml

        try:
            return yaml.SafeLoader("").construct_object(node)
        except (yaml.YAMLError, ValueError):
            self.error(self.node_line(node), f"'{path}': '{node.value}' is not a valid {tag}")
            return _Invalid


def _split_front_matter(text: str, file: _File) -> tuple[str | None, str]:
    """Return the front matter's YAML (None when the file has none) and the Markdown body."""
    first_end = text.find("\n")
    first_line = text if first_end < 0 else text[:first_end]
    if first_line.rstrip() != "---":
        return None, text
    match = _CLOSING_FENCE.search(text, first_end + 1) if first_end >= 0 else None
    if match is None:
        file.error(1, "front matter starts with '---' but has no closing '---' line")
        return None, ""
    body_start = match.end() + 1
    return text[first_end + 1 : match.start()], text[body_start:]


def _parse_front_matter(yaml_text: str, file: _File) -> dict[str, Any] | None:
    """Parse front matter YAML into a mapping, or record why it cannot be read."""
    import yaml
    from yaml.nodes import MappingNode

    try:
        root = yaml.compose(yaml_text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = file.offset + (mark.line + 1 if mark is not None else 1)
        problem = exc.problem or exc.context or "cannot be read"
        context = exc.context_mark
        if (
            exc.problem
            and exc.context
            and context is not None
            and context.line != getattr(mark, "line", None)
        ):
            # Where the unfinished construct began is usually where the mistake is.
            problem += f" ({exc.context} on line {file.offset + context.line + 1})"
        file.error(line, f"bad YAML: {problem}")
        return None
    except yaml.YAMLError as exc:
        file.error(file.offset + 1, f"bad YAML: {exc}")
        return None
    if root is None:
        return {}
    if not isinstance(root, MappingNode):
        file.error(file.node_line(root), "front matter must be 'field: value' lines")
        return None
    values = file.value(root, "")
    assert isinstance(values, dict)
    return values



# --- field checks ------------------------------------------------------------------------

_Check = Callable[[_File, str, Any], Any]


def _text(file: _File, path: str, value: Any) -> Any:
    """Check a non-empty string."""
    if value is _Invalid:
        return value
    if not isinstance(value, str):
        if value is None:
            file.at(path, f"'{path}' is empty")
        else:
            file.at(path, f"'{path}' must be text; put it in quotes")
        return _Invalid
    if not value.strip():
        file.at(path, f"'{path}' is empty")
        return _Invalid
    return value.strip()


def _handle(file: _File, path: str, value: Any) -> Any:
    """Check a product handle or a slug."""
    value = _text(file, path, value)
    if value is not _Invalid and not is_handle(value):
        file.at(path, f"'{value}' is not a valid handle: use lowercase letters, digits, hyphens")
        return _Invalid
    return value


def _list_of(check: _Check) -> _Check:
    """Return a check for a list whose items each pass ``check`` and are distinct."""

    def check_list(file: _File, path: str, value: Any) -> Any:
        if value is _Invalid:
            return value
        if isinstance(value, str | int):  # a lone item where a list was meant
            file.at(path, f"'{path}' must be a list ('- item' lines)")
            return _Invalid
        if not isinstance(value, list):
            file.at(path, f"'{path}' must be a list ('- item' lines)")
            return _Invalid
        items: list[Any] = []
        seen: set[Any] = set()  # a category may list thousands of handles
        for index, item in enumerate(value):
            item_path = f"{path}.{index}"
            checked = check(file, item_path, item)
            if checked is _Invalid:
                continue
            if checked in seen:
                file.at(item_path, f"'{checked}' is listed twice in '{path}'")
                continue
            seen.add(checked)
            items.append(checked)
        return items

    return check_list


def _date(file: _File, path: str, value: Any) -> Any:
    """Check a calendar date (YYYY-MM-DD)."""
    if value is _Invalid:
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    file.at(path, f"'{path}' must be a date like 2025-09-01")
    return _Invalid


def _price(file: _File, path: str, value: Any) -> Any:
    """Check a price: a number of at least 0."""
    if isinstance(value, bool) or value is _Invalid or value is None:
        amount = None
    elif isinstance(value, int | Decimal):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            amount = None
    else:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raw = file.raw.get(path, "")
        file.at(path, f"'{path}' must be a number of at least 0 like 49.90, not '{raw}'")
        return _Invalid
    return amount


def _status(file: _File, path: str, value: Any) -> Any:
    """Check a product status: only "coming-soon" may be declared."""
    if value != "coming-soon":
        file.at(path, "'status' can only be 'coming-soon' (leave it out for catalog products)")
        return _Invalid
    return value


def _faq(file: _File, path: str, value: Any) -> Any:
    """Check FAQ items: each a mapping with a question and a Markdown answer."""
    if value is _Invalid:
        return value
    if not isinstance(value, list):
        file.at(path, "'faq' must be a list of '- question: ...' / '  answer: ...' items")
        return _Invalid
    items = []
    for index, item in enumerate(value):
        item_path = f"{path}.{index}"
        if not isinstance(item, dict):
            file.at(item_path, f"'{item_path}' must have a question and an answer")
            continue
        unknown = sorted(set(item) - {"question", "answer"})
        for name in unknown:
            file.at(
                f"{item_path}.{name}",
                f"unknown field '{name}' in a faq item; known: answer, question",
            )
        missing = [name for name in ("question", "answer") if name not in item]
        for name in missing:
            file.at(item_path, f"'{item_path}' has no {name}")
        if missing or unknown:
            continue
        question = _text(file, f"{item_path}.question", item["question"])
        answer = _text(file, f"{item_path}.answer", item["answer"])
        if question is not _Invalid and answer is not _Invalid:
            items.append({"question": question, "answer": answer})
    return items


def _attributes(file: _File, path: str, value: Any) -> Any:
    """Check a product's spec table: names mapped to single values, kept as written."""
    if value is _Invalid:
        return value
    if not isinstance(value, dict):
        file.at(path, "'attributes' must be 'name: value' lines")
        return _Invalid
    table: dict[str, str] = {}
    for name, item in value.items():
        item_path = f"{path}.{name}"
        raw = file.raw.get(item_path)
        # The text as written ("1.20 kg", "yes"), not YAML's reading of it (1.2, True).
        if raw is None or item is _Invalid or item is None or not raw.strip():
            file.at(item_path, f"attribute '{name}' needs a single value")
            continue
        table[name.strip()] = raw.strip()
    return table


#: Fields of a ``demand_test`` (see engine/experiments.py) and their defaults.
DEMAND_TEST_FIELDS = ("products", "goal", "min_visitors", "window_days", "start")
DEMAND_TEST_METRICS = ("signups_per_visitor",)
DEMAND_TEST_DEFAULTS: dict[str, Any] = {"min_visitors": 100, "window_days": 28}


def _count(file: _File, path: str, value: Any, least: int) -> Any:
    """Check a whole number of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        file.at(path, f"'{path}' must be a whole number of at least {least}")
        return _Invalid
    return value


def _demand_test(file: _File, path: str, value: Any) -> Any:
    """Check a content test: products, goal (metric, rate), min_visitors, window_days, start."""
    if value is _Invalid:
        return value
    if not isinstance(value, dict):
        file.at(path, f"'{path}' must be 'name: value' lines ({', '.join(DEMAND_TEST_FIELDS)})")
        return _Invalid
    spec: dict[str, Any] = dict(DEMAND_TEST_DEFAULTS)
    ok = True
    for name in sorted(set(value) - set(DEMAND_TEST_FIELDS)):
        known = ", ".join(sorted(DEMAND_TEST_FIELDS))
        file.at(f"{path}.{name}", f"unknown field '{name}' in {path}; known: {known}")
        ok = False
    for name in ("goal", "start"):
        if name not in value:
            file.at(path, f"'{path}' needs '{name}'")
            ok = False
    if "products" in value:
        spec["products"] = _HANDLES(file, f"{path}.products", value["products"])
    if "start" in value:
        spec["start"] = _date(file, f"{path}.start", value["start"])
    for name, least in (("min_visitors", 1), ("window_days", 1)):
        if name in value:
            spec[name] = _count(file, f"{path}.{name}", value[name], least)
    goal = value.get("goal")
    if goal is not None:
        goal_path = f"{path}.goal"
        if not isinstance(goal, dict) or "rate" not in goal:
            file.at(goal_path, f"'{goal_path}' needs 'rate' (and 'metric': signups_per_visitor)")
            ok = False
        else:
            for name in sorted(set(goal) - {"metric", "rate"}):
                file.at(f"{goal_path}.{name}", f"unknown field '{name}'; known: metric, rate")
                ok = False
            metric = goal.get("metric", DEMAND_TEST_METRICS[0])
            if metric not in DEMAND_TEST_METRICS:
                file.at(
                    f"{goal_path}.metric",
                    f"unknown metric '{metric}'; known: {', '.join(DEMAND_TEST_METRICS)}",
                )
                ok = False
            rate = goal["rate"]
            if isinstance(rate, bool) or not isinstance(rate, int | Decimal) or not 0 < rate < 1:
                file.at(f"{goal_path}.rate", f"'{goal_path}.rate' must be a number between 0 and 1")
                ok = False
            else:
                spec["goal"] = {"metric": metric, "rate": Decimal(rate)}
    if not ok or any(item is _Invalid for item in spec.values()):
        return _Invalid
    return spec


_TEXTS = _list_of(_text)
_HANDLES = _list_of(_handle)

#: Per kind: field -> (check, required).
FIELDS: dict[str, dict[str, tuple[_Check, bool]]] = {
    "product": {
        "status": (_status, False),
        "title": (_text, False),
        "description": (_text, False),
        "price": (_price, False),
        "image": (_text, False),
        "image_alt": (_text, False),
        "brand": (_text, False),
        "category": (_handle, False),
        "available_from": (_date, False),
        "replaced_by": (_handle, False),
        "faq": (_faq, False),
        "attributes": (_attributes, False),
        "related": (_HANDLES, False),
        "demand_test": (_demand_test, False),
    },
    "category": {
        "title": (_text, True),
        "description": (_text, True),
        "types": (_TEXTS, False),
        "tags": (_TEXTS, False),
        "products": (_HANDLES, False),
        "image": (_text, False),
    },
    "comparison": {
        "products": (_HANDLES, True),
        "title": (_text, False),
        "description": (_text, True),
        "attributes": (_TEXTS, False),
    },
    "guide": {
        "title": (_text, True),
        "description": (_text, True),
        "products": (_HANDLES, False),
        "demand_test": (_demand_test, False),
    },
    "page": {
        "title": (_text, True),
        "description": (_text, True),
    },
}
_COMING_SOON_ONLY = ("price", "category", "available_from", "demand_test")


def _check_fields(kind: str, values: dict[str, Any], file: _File) -> dict[str, Any]:
    """Validate front matter against its kind's fields; return the clean values."""
    fields = FIELDS[kind]
    meta: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            known = ", ".join(sorted(fields))
            file.at(name, f"unknown field '{name}'; known: {known}")
            continue
        check, _required = fields[name]
        checked = check(file, name, value)
        if checked is not _Invalid:
            meta[name] = checked
    for name, (_check, required) in fields.items():
        if required and name not in values:
            file.error(1, f"missing required field '{name}'")
    return meta


def _check_kind(
    kind: str, slug: str, meta: dict[str, Any], values: dict[str, Any], file: _File
) -> None:
    """Apply the rules that tie one file's fields together."""
    if kind == "product":
        coming_soon = meta.get("status") == "coming-soon"
        if coming_soon:
            if "title" not in meta and "title" not in file.lines:
                file.at("status", "a coming-soon product needs a 'title'")
            if "replaced_by" in meta:
                file.at("replaced_by", "a coming-soon product cannot be 'replaced_by' another")
        elif "status" not in file.lines:
            for name in _COMING_SOON_ONLY:
                if name in file.lines:
                    file.at(
                        name,
                        f"'{name}' is only for coming-soon products "
                        "(add status: coming-soon, or set it in the catalog)",
                    )
        if meta.get("replaced_by") == slug:
            file.at("replaced_by", "a product cannot be replaced by itself")
        for index, handle in enumerate(meta.get("related", [])):
            if handle == slug:
                file.at(f"related.{index}", "a product cannot be related to itself")
    elif kind == "comparison":
        listed = values.get("products")
        if isinstance(listed, list) and len(listed) != 2:
            file.at("products", f"a comparison compares exactly 2 products, not {len(listed)}")
    elif kind == "page" and slug in RESERVED_SLUGS:
        reserved = ", ".join(sorted(RESERVED_SLUGS))
        file.error(
            1, f"page slug '{slug}' is reserved; choose another file name (reserved: {reserved})"
        )


def _read_document(kind: str, slug: str, source: str, data: bytes) -> tuple[Document, _File]:
    """Parse and validate one Markdown file; its problems are on the returned ``_File``."""
    file = _File(source)
    digest = hashlib.sha256(data).hexdigest()
    meta: dict[str, Any] = {}
    html = ""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        file.error(line, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8")
        text = None
    if text is not None:
        text = text.replace("\r\n", "\n")
        if not is_handle(slug):
            file.error(
                1,
                f"file name '{slug}.md' is not a valid {_SLUG_WORD[kind]}: use "
                "lowercase letters, digits and hyphens",
            )
        yaml_text, body = _split_front_matter(text, file)
        if yaml_text is not None:
            values = _parse_front_matter(yaml_text, file)
        else:  # no front matter at all, or an unclosed one (already reported)
            values = None if file.errors else {}
        if values is not None:
            meta = _check_fields(kind, values, file)
            _check_kind(kind, slug, meta, values, file)
        if not file.errors:
            html = render_markdown(body)
            for item in meta.get("faq", ()):
                item["answer_html"] = render_markdown(item["answer"])
    document = Document(kind, slug, source, meta, html, digest, file.lines)
    return document, file


_SLUG_WORD = {kind: "slug" for kind in KINDS.values()} | {"product": "handle"}


# --- the whole folder --------------------------------------------------------------------


def _walk_files(folder: Path) -> Iterator[Path]:
    """Yield every file under ``folder`` in sorted order, skipping hidden ones."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if not _ignored(name))
        for name in sorted(files):
            if not _ignored(name):
                yield Path(root, name)


def _file_digest(path: Path) -> str:
    """Return the sha256 hex digest of a file, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_content(content_dir: Path) -> Content:
    """Read and validate everything under ``content_dir``; raise ContentErrors listing all."""
    content_dir = Path(content_dir)
    if not content_dir.exists():
        return Content()
    if not content_dir.is_dir():
        raise ContentErrors([ContentError(str(content_dir), 1, "is not a folder")])
    errors: list[ContentError] = []
    digests: list[tuple[str, str]] = []
    documents: dict[str, dict[str, Document]] = {kind: {} for kind in KINDS.values()}
    assets: dict[str, Path] = {}
    known_folders = ", ".join(sorted([*KINDS, ASSETS_FOLDER]))

    for entry in sorted(content_dir.iterdir()):
        if _ignored(entry.name) or not entry.is_dir():
            continue  # a README or notes next to the folders are not content
        if entry.name not in KINDS and entry.name != ASSETS_FOLDER:
            errors.append(
                ContentError(entry.name, 1, f"unknown folder; content folders are: {known_folders}")
            )

    for folder, kind in KINDS.items():
        base = content_dir / folder
        if not base.is_dir():
            continue
        # Plain strings and scandir here: pathlib's overhead shows at 100,000 files.
        with os.scandir(base) as scan:
            entries = sorted((item for item in scan if not _ignored(item.name)),
                             key=lambda item: item.name)  # fmt: skip
        for item in entries:
            source = f"{folder}/{item.name}"
            slug, suffix = os.path.splitext(item.name)
            if item.is_dir():
                errors.append(ContentError(source, 1, f"folders are not read in {folder}/"))
                continue
            if suffix != ".md":
                message = f"only <{_SLUG_WORD[kind]}>.md files are read in {folder}/"
                errors.append(ContentError(source, 1, message))
                continue
            with open(item.path, "rb") as handle:
                data = handle.read()
            document, file = _read_document(kind, slug, source, data)
            errors.extend(file.errors)
            digests.append((source, document.digest))
            documents[kind][slug] = document

    base = content_dir / ASSETS_FOLDER
    if base.is_dir():
        for path in _walk_files(base):
            relative = path.relative_to(base).as_posix()
            source = f"{ASSETS_FOLDER}/{relative}"
            if not all(_ASSET_SEGMENT.fullmatch(part) for part in relative.split("/")):
                errors.append(
                    ContentError(
                        source,
                        1,
                        "rename it: asset names may use letters, digits, '.', '_' and '-' only",
                    )
                )
                continue
            assets[f"/{source}"] = path
            digests.append((source, _file_digest(path)))

    content = Content(
        products=documents["product"],
        categories=documents["category"],
        comparisons=documents["comparison"],
        guides=documents["guide"],
        pages=documents["page"],
        assets=assets,
        digest=_content_digest(digests),
    )
    errors.extend(_check_across_files(content))
    if errors:
        raise ContentErrors(errors)
    return content


def _content_digest(digests: list[tuple[str, str]]) -> str:
    """Return one digest over every file's path and digest."""
    total = hashlib.sha256()
    for source, digest in sorted(digests):
        total.update(f"{source}\0{digest}\n".encode())
    return total.hexdigest()


def _check_across_files(content: Content) -> list[ContentError]:
    """Check what ties content files together, without the catalog."""
    errors: list[ContentError] = []
    for document in content.products.values():
        category = document.meta.get("category")
        if category is not None and category not in content.categories:
            known = ", ".join(sorted(content.categories)) or "none yet"
            errors.append(
                ContentError(
                    document.source,
                    document.line("category"),
                    f"unknown category '{category}'; categories: {known}",
                )
            )
    pairs: dict[frozenset[str], Document] = {}
    for document in content.comparisons.values():
        products = document.meta.get("products", [])
        if len(products) != 2:
            continue
        first, second = products
        pair = frozenset(products)
        earlier = pairs.setdefault(pair, document)
        if earlier is not document:
            errors.append(
                ContentError(
                    document.source,
                    document.line("products"),
                    f"compares the same products as {earlier.source}; one comparison per pair",
                )
            )
        for alias in (f"{first}-vs-{second}", f"{second}-vs-{first}"):
            other = content.comparisons.get(alias)
            # The same pair under two slugs is reported above; this is a different pair.
            if other is not None and frozenset(other.meta.get("products", ())) != pair:
                errors.append(
                    ContentError(
                        other.source,
                        1,
                        f"slug '{alias}' is the redirect of {document.source}; rename one",
                    )
                )
    return errors


# --- references to the catalog -----------------------------------------------------------


def check_references(content: Content, catalog_handles: set[str]) -> list[ContentError]:
    """Return an error for each product handle the content names that does not exist."""
    coming_soon = content.coming_soon()
    known = catalog_handles | coming_soon
    errors: list[ContentError] = []

    def check(document: Document, path: str, handle: str) -> bool:
        if handle in known:
            return True
        errors.append(
            ContentError(document.source, document.line(path), f"unknown product '{handle}'")
        )
        return False

    def check_list(document: Document, name: str) -> None:
        for index, handle in enumerate(document.meta.get(name, ())):
            check(document, f"{name}.{index}", handle)

    for handle, document in content.products.items():
        if handle not in catalog_handles and handle not in coming_soon:
            errors.append(
                ContentError(
                    document.source,
                    1,
                    f"no catalog product '{handle}'; add status: coming-soon to declare one",
                )
            )
        if "replaced_by" in document.meta:
            check(document, "replaced_by", document.meta["replaced_by"])
        check_list(document, "related")
    for document in content.categories.values():
        check_list(document, "products")
    for document in content.guides.values():
        check_list(document, "products")
    for document in (*content.products.values(), *content.guides.values()):
        tested = document.meta.get("demand_test", {}).get("products", ())
        for index, handle in enumerate(tested):
            check(document, f"demand_test.products.{index}", handle)
    for document in content.comparisons.values():
        check_list(document, "products")
        products = [h for h in document.meta.get("products", ()) if h in known]
        for index, row in enumerate(document.meta.get("attributes", ())):
            if row in BUILTIN_COMPARISON_ROWS:
                continue  # filled from catalog data when the page is planned
            for handle in products:
                product = content.products.get(handle)
                if product is None or row not in product.meta.get("attributes", {}):
                    errors.append(
                        ContentError(
                            document.source,
                            document.line(f"attributes.{index}"),
                            f"row '{row}' has no value for '{handle}'; add '{row}: ...' under "
                            f"attributes in products/{handle}.md",
                        )
                    )
    return sorted(errors, key=_error_order)
