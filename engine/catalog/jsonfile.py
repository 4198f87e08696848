"""The JSON catalog: a list of products, each with its variants."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.catalog.formats import (
    CatalogFormat,
    ProblemLog,
    ProductRecord,
    VariantRecord,
    clean_html,
    parse_grams,
    parse_money,
    parse_policy,
    parse_quantity,
    parse_status,
    parse_tags,
    register_format,
)

PRODUCT_KEYS = (
    "handle",
    "title",
    "body_html",
    "vendor",
    "type",
    "tags",
    "status",
    "published",
    "seo_title",
    "seo_description",
    "options",
    "images",
    "metafields",
    "variants",
)
VARIANT_KEYS = (
    "sku",
    "options",
    "price",
    "compare_at_price",
    "stock",
    "tracked",
    "policy",
    "barcode",
    "grams",
    "image",
)
WRAPPED = re.compile(r'\s*\{\s*"products"\s*:\s*\[')
SPACE = re.compile(r"\s*")


class Invalid(ValueError):
    """A value of the wrong JSON type or shape."""


def text(value: Any) -> str:
    """Accept a string."""
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {json.dumps(value)[:40]}")
    return value.strip()


def flag(value: Any) -> bool:
    """Accept true or false."""
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {json.dumps(value)[:40]}")
    return value


def number_text(value: Any) -> str:
    """Accept a number or a numeric string, as text for the shared parsers."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"expected a number, got {json.dumps(value)[:40]}")
    return str(value)


def money(value: Any) -> Decimal:
    """Accept a price."""
    return parse_money(number_text(value))


def optional_money(value: Any) -> Decimal | None:
    """Accept a price or null."""
    return None if value is None or value == "" else money(value)


def quantity(value: Any) -> int:
    """Accept a whole number."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return parse_quantity(number_text(value))


def strings(value: Any) -> list[str]:
    """Accept a list of strings."""
    if not isinstance(value, list):
        raise Invalid("expected a list of strings")
    return [text(item) for item in value]


def tags(value: Any) -> list[str]:
    """Accept a list of tags or one comma-separated string."""
    if isinstance(value, str):
        return parse_tags(value)
    return parse_tags(",".join(strings(value)))


def images(value: Any) -> list[dict[str, str]]:
    """Accept image URLs, or objects with ``src`` and an optional ``alt``."""
    if not isinstance(value, list):
        raise Invalid("expected a list of image URLs or {src, alt} objects")
    result: list[dict[str, str]] = []
    for item in value:
        if isinstance(item, str):
            image = {"src": item.strip(), "alt": ""}
        elif isinstance(item, dict) and set(item) <= {"src", "alt"} and "src" in item:
            image = {"src": text(item["src"]), "alt": text(item.get("alt", ""))}
        else:
            raise Invalid("expected a list of image URLs or {src, alt} objects")
        if image["src"] and all(known["src"] != image["src"] for known in result):
            result.append(image)
    return result


def metafields(value: Any) -> dict[str, str | None]:
    """Accept an object of ``namespace.key`` to a value (null or "" removes the key)."""
    if not isinstance(value, dict):
        raise Invalid('expected an object like {"namespace.key": "value"}')
    result: dict[str, str | None] = {}
    for key, item in value.items():
        if not re.fullmatch(r"[^\s.]+\.[^\s]+", key):
            raise Invalid(f"metafield key {key!r} is not 'namespace.key'")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise Invalid(f"metafield {key!r}: expected a string")
        result[key] = None if item is None or item == "" else str(item)
    return result


PRODUCT_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "title": ("title", text),
    "body_html": ("body_html", lambda value: clean_html(text(value))),
    "vendor": ("vendor", text),
    "type": ("product_type", text),
    "tags": ("tags", tags),
    "status": ("status", lambda value: parse_status(text(value))),
    "published": ("published", flag),
    "seo_title": ("seo_title", text),
    "seo_description": ("seo_description", text),
    "options": ("option_names", strings),
    "images": ("images", images),
}
VARIANT_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "price": ("price", money),
    "compare_at_price": ("compare_at_price", optional_money),
    "barcode": ("barcode", lambda value: text(value).removeprefix("'")),
    "grams": ("grams", lambda value: parse_grams(number_text(value))),
    "image": ("image", text),
}


class JsonReader:
    """Turn decoded product objects into records, logging every bad value with its path."""

    def __init__(self, log: ProblemLog) -> None:
        self.log = log

    def take(self, line: int, path: str, value: Any, parser: Callable[[Any], Any]) -> Any:
        """Parse one value, logging a problem (and returning None) when it is bad."""
        try:
            return parser(value)
        except ValueError as exc:
            self.log.add(line, path, str(exc))
            return None

    def product(self, line: int, index: int, item: Any) -> ProductRecord | None:
        """Read one product object."""
        where = f"products[{index}]"
        if not isinstance(item, dict):
            self.log.add(line, where, "expected an object with handle, title and variants")
            return None
        for key in item:
            if key not in PRODUCT_KEYS:
                self.log.add(
                    line, f"{where}.{key}", f"unknown key; known: {', '.join(PRODUCT_KEYS)}"
                )
        handle = item.get("handle")
        if not isinstance(handle, str) or not handle.strip():
            self.log.add(line, f"{where}.handle", "missing; every product needs a handle")
            return None
        record = ProductRecord(line=line, handle=handle.strip())
        for key, (name, parser) in PRODUCT_FIELDS.items():
            if key in item:
                record.fields[name] = self.take(line, f"{where}.{key}", item[key], parser)
        if "metafields" in item:
            record.metafields = (
                self.take(line, f"{where}.metafields", item["metafields"], metafields) or {}
            )
        names = record.fields.get("option_names") or []
        variants = item.get("variants")
        if not isinstance(variants, list) or not variants:
            self.log.add(line, f"{where}.variants", "expected a list with at least one variant")
            return record
        for number, variant in enumerate(variants):
            parsed = self.variant(line, f"{where}.variants[{number}]", variant, names)
            if parsed is not None:
                parsed.fields["position"] = number + 1
                record.variants.append(parsed)
        return record

    def variant(self, line: int, where: str, item: Any, names: list[str]) -> VariantRecord | None:
        """Read one variant object."""
        if not isinstance(item, dict):
            self.log.add(line, where, "expected an object with price and options")
            return None
        for key in item:
            if key not in VARIANT_KEYS:
                self.log.add(
                    line, f"{where}.{key}", f"unknown key; known: {', '.join(VARIANT_KEYS)}"
                )
        sku = item.get("sku")
        if sku is not None and not isinstance(sku, str):
            self.log.add(line, f"{where}.sku", "expected a string or null")
            sku = None
        values = self.take(line, f"{where}.options", item.get("options", []), strings) or []
        if len(values) != len(names) or not all(values):
            self.log.add(
                line,
                f"{where}.options",
                f"expected {len(names)} non-blank value(s), one per product option {names}",
            )
        record = VariantRecord(line=line, sku=(sku or "").strip() or None, option_values=values)
        if "price" not in item:
            self.log.add(line, f"{where}.price", "missing; every variant needs a price")
        for key, (name, parser) in VARIANT_FIELDS.items():
            if key in item:
                record.fields[name] = self.take(line, f"{where}.{key}", item[key], parser)
        if "stock" in item:
            record.stock = self.take(line, f"{where}.stock", item["stock"], quantity)
        if "tracked" in item:
            record.tracked = self.take(line, f"{where}.tracked", item["tracked"], flag)
        if "policy" in item:
            record.policy = self.take(
                line, f"{where}.policy", item["policy"], lambda value: parse_policy(text(value))
            )
        return record


def read_json(path: Path, log: ProblemLog, warnings: list[str]) -> Iterator[ProductRecord]:
    """Read a JSON catalog, one product object at a time (lines counted as it goes)."""
    try:
        source = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        log.add(1, "", "the file is not UTF-8 text; save it as UTF-8")
        return
    decoder = json.JSONDecoder()
    reader = JsonReader(log)
    counted = {"at": 0, "line": 1}

    def line_at(position: int) -> int:
        # Count forward from the last position only: the text is walked once.
        counted["line"] += source.count("\n", counted["at"], position)
        counted["at"] = position
        return counted["line"]

    wrapped = WRAPPED.match(source)
    position = wrapped.end() if wrapped else SPACE.match(source).end()  # type: ignore[union-attr]
    if not wrapped:
        if not source.startswith("[", position):
            log.add(line_at(position), "", 'expected a list of products, or {"products": [...]}')
            return
        position += 1
    index = 0
    while True:
        position = SPACE.match(source, position).end()  # type: ignore[union-attr]
        if source.startswith("]", position) and index == 0:
            position += 1
            break
        try:
            item, end = decoder.raw_decode(source, position)
        except json.JSONDecodeError as exc:
            log.add(exc.lineno, "", f"bad JSON: {exc.msg} (column {exc.colno})")
            return
        record = reader.product(line_at(position), index, item)
        if record is not None:
            yield record
        index += 1
        position = SPACE.match(source, end).end()  # type: ignore[union-attr]
        if source.startswith(",", position):
            position = SPACE.match(source, position + 1).end()  # type: ignore[union-attr]
            if source.startswith("]", position):
                log.add(line_at(position), "", "bad JSON: a comma before ']' (trailing comma)")
                return
            continue
        if source.startswith("]", position):
            position += 1
            break
        log.add(line_at(position), "", "bad JSON: expected ',' or ']' after a product")
        return
    position = SPACE.match(source, position).end()  # type: ignore[union-attr]
    if wrapped:
        if not source.startswith("}", position):
            log.add(line_at(position), "", "bad JSON: expected '}' closing the object")
            return
        position = SPACE.match(source, position + 1).end()  # type: ignore[union-attr]
    if position != len(source):
        log.add(line_at(position), "", "bad JSON: unexpected text after the list of products")


def sniff_json(path: Path, header: list[str]) -> bool:
    """Return True for a ``.json`` file."""
    return path.suffix.lower() == ".json"


JSON = register_format(
    CatalogFormat(
        name="json",
        description="JSON list of products with variants",
        read=read_json,
        sniff=sniff_json,
    )
)
