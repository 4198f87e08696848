"""Catalog file formats: the records every reader yields, problems, value parsers, the registry."""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from engine.models import INVENTORY_POLICIES, PRODUCT_STATUSES

#: Cells longer than this are refused; a larger one is almost always an unclosed quote.
MAX_CELL_CHARS = 10 * 1024 * 1024

#: Column limits of the tables (longer values are problems, not database errors).
MAX_LENGTHS = {
    "handle": 255,
    "title": 500,
    "vendor": 255,
    "product_type": 255,
    "seo_title": 500,
    "sku": 255,
    "barcode": 64,
    "image": 2000,
    "option_key": 765,
}

HANDLE_PATTERN = re.compile(r"[^\W_][\w-]*\Z")
CENT = Decimal("0.01")


@dataclass(frozen=True, order=True)
class ImportProblem:
    """One thing wrong with an import file: where (physical line, column) and what."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        parts = [str(self.line)] if self.line else []
        if self.column:
            parts.append(self.column)
        parts.append(self.message)
        return ": ".join(parts)

    def located(self, path: str | Path) -> str:
        """Return ``file:line: column: message`` as an editor's error list shows it."""
        return f"{path}:{self}" if self.line else f"{path}: {self}"


class ProblemLog:
    """Collects every problem of one import (all of them are reported, not just the first)."""

    def __init__(self) -> None:
        self.problems: list[ImportProblem] = []

    def add(self, line: int, column: str, message: str) -> None:
        """Record a problem at a physical line and column ("" when no column applies)."""
        self.problems.append(ImportProblem(line, column, message))

    def __bool__(self) -> bool:
        return bool(self.problems)

    def __len__(self) -> int:
        return len(self.problems)


@dataclass
class VariantRecord:
    """A variant as a file describes it; ``fields`` holds only the columns the file has."""

    line: int
    sku: str | None
    option_values: list[str]
    fields: dict[str, Any] = field(default_factory=dict)
    stock: int | None = None
    tracked: bool | None = None
    policy: str | None = None

    @property
    def option_key(self) -> str:
        """Return the key that identifies the variant within its product when it has no SKU."""
        return option_key(self.option_values)


@dataclass
class ProductRecord:
    """A product as a file describes it; absent columns leave the stored value as it is."""

    line: int
    handle: str
    fields: dict[str, Any] = field(default_factory=dict)
    metafields: dict[str, str | None] = field(default_factory=dict)
    variants: list[VariantRecord] = field(default_factory=list)


def option_key(values: list[str]) -> str:
    """Return the option key of a variant's option values (``""`` for a product without options)."""
    return " / ".join(values)


# --- value parsers: each returns the value or raises ValueError with a user-facing message ---


def parse_money(text: str) -> Decimal:
    """Parse a price like ``12.5`` into a Decimal rounded to cents."""
    cleaned = text.strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(
            f"{text!r} is not a number (use a dot for decimals and no thousands separators)"
        ) from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a price (must be 0 or more)")
    if value >= Decimal("1e10"):
        raise ValueError(f"{text!r} is too large for a price")
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def parse_quantity(text: str) -> int:
    """Parse a whole number of units (negative stock is allowed: oversold)."""
    cleaned = text.strip()
    if not re.fullmatch(r"[+-]?\d{1,9}", cleaned):
        raise ValueError(f"{text!r} is not a whole number")
    return int(cleaned)


def parse_grams(text: str) -> int:
    """Parse a weight in grams (Shopify writes ``250`` or ``250.0``)."""
    cleaned = text.strip()
    if not cleaned:
        return 0
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number of grams") from None
    if not value.is_finite() or value < 0 or value >= Decimal("1e9"):
        raise ValueError(f"{text!r} is not a number of grams")
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


TRUE_WORDS = {"true", "yes", "1", "y"}
FALSE_WORDS = {"false", "no", "0", "n"}


def parse_bool(text: str) -> bool:
    """Parse TRUE/FALSE (also yes/no and 1/0, any case)."""
    cleaned = text.strip().lower()
    if cleaned in TRUE_WORDS:
        return True
    if cleaned in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r} is not TRUE or FALSE")


def parse_status(text: str) -> str:
    """Parse a product status: active, draft or archived (blank means active)."""
    cleaned = text.strip().lower() or "active"
    if cleaned not in PRODUCT_STATUSES:
        raise ValueError(f"unknown status {text!r}; use one of: {', '.join(PRODUCT_STATUSES)}")
    return cleaned


def parse_policy(text: str) -> str:
    """Parse an inventory policy: deny or continue (blank means deny)."""
    cleaned = text.strip().lower() or "deny"
    if cleaned not in INVENTORY_POLICIES:
        raise ValueError(f"unknown inventory policy {text!r}; use deny or continue")
    return cleaned


def parse_tags(text: str) -> list[str]:
    """Split comma-separated tags, trimmed, empty ones and repeats dropped."""
    tags: list[str] = []
    for raw in text.split(","):
        tag = raw.strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def clean_html(html: str) -> str:
    """Sanitize a product description (scripts, handlers and ``javascript:`` URLs go)."""
    from engine.content import sanitize_html

    return sanitize_html(html) if html.strip() else ""


def check_handle(handle: str) -> str | None:
    """Return what is wrong with a handle, or None when it can be used in a URL."""
    if len(handle) > MAX_LENGTHS["handle"]:
        return f"longer than {MAX_LENGTHS['handle']} characters"
    if not HANDLE_PATTERN.match(handle):
        return f"{handle!r} is not a handle (letters, digits, '-' and '_' only)"
    return None


# --- reading CSV with physical line numbers ---


@dataclass
class CsvRow:
    """One CSV record: the physical line it starts on and its cells by (stripped) header name."""

    line: int
    cells: dict[str, str]


class NotUTF8Error(ValueError):
    """A line of a text file is not valid UTF-8."""

    def __init__(self, line: int, byte: int) -> None:
        super().__init__(f"line {line} is not UTF-8")
        self.line = line
        self.byte = byte


def utf8_lines(handle: IO[bytes]) -> Iterator[str]:
    """Decode a binary file line by line, so a bad byte is reported on its own line."""
    for number, raw in enumerate(handle, start=1):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotUTF8Error(number, raw[exc.start]) from None


@contextmanager
def open_csv(path: Path, log: ProblemLog) -> Iterator[tuple[list[str], Iterator[CsvRow]]]:
    """Open a UTF-8 CSV (BOM, CRLF, quoted multi-line cells) and stream its records.

    Yields the header and an iterator of rows; bad quoting, bad encoding and rows of the
    wrong width are logged with the physical line where the record starts.
    """
    if csv.field_size_limit() < MAX_CELL_CHARS:
        csv.field_size_limit(MAX_CELL_CHARS)
    with path.open("rb") as handle:
        reader = csv.reader(utf8_lines(handle), strict=True)
        state = {"end": 0}

        def records() -> Iterator[tuple[int, list[str]]]:
            while True:
                start = state["end"] + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    state["end"] = reader.line_num
                    log.add(start, "", describe_csv_error(str(exc)))
                    continue
                except NotUTF8Error as exc:
                    log.add(
                        exc.line,
                        "",
                        f"not UTF-8 text (byte 0x{exc.byte:02x}); export or save the file as UTF-8",
                    )
                    return
                state["end"] = reader.line_num
                if cells and any(cell.strip() for cell in cells):
                    yield start, cells

        rows = records()
        first = next(rows, None)
        if first is None:
            header: list[str] = []
            if not log:
                log.add(1, "", "the file is empty (no header row)")
        else:
            header = [name.strip() for name in first[1]]
            seen: set[str] = set()
            for name in header:
                if name and name in seen:
                    log.add(first[0], name, "this column appears twice in the header")
                seen.add(name)

        def body() -> Iterator[CsvRow]:
            width = len(header)
            for line, cells in rows:
                if len(cells) != width:
                    log.add(
                        line,
                        "",
                        f"the row has {len(cells)} cells but the header has {width}"
                        " (a stray comma or quote?)",
                    )
                    continue
                yield CsvRow(line, dict(zip(header, cells, strict=True)))

        yield header, body()


def describe_csv_error(message: str) -> str:
    """Turn the csv module's error into advice a store owner can act on."""
    if "unexpected end of data" in message or "field larger than field limit" in message:
        return "a quoted cell starting on this line is never closed (unterminated quote)"
    if "expected after" in message:
        return 'broken quoting: a quote must close a cell (write "" for a quote inside one)'
    if "NUL" in message or "null byte" in message:
        return "the line contains a NUL byte; is this really a CSV file?"
    return f"unreadable CSV: {message}"


def read_header(path: Path) -> list[str]:
    """Return the stripped header row of a CSV file (empty when unreadable)."""
    try:
        with path.open("rb") as handle:
            first = next(csv.reader(utf8_lines(handle)), [])
    except (NotUTF8Error, csv.Error):
        return []
    return [name.strip() for name in first]


# --- the registry ---


Reader = Callable[[Path, ProblemLog, list[str]], Iterator[ProductRecord]]
Sniffer = Callable[[Path, list[str]], bool]


@dataclass(frozen=True)
class CatalogFormat:
    """A catalog file format: how to recognise a file and how to read it into records."""

    name: str
    description: str
    read: Reader
    sniff: Sniffer


FORMATS: dict[str, CatalogFormat] = {}


def register_format(catalog_format: CatalogFormat) -> CatalogFormat:
    """Add a format to the registry (detection tries formats in registration order)."""
    FORMATS[catalog_format.name] = catalog_format
    return catalog_format


def detect_format(path: Path) -> CatalogFormat | None:
    """Return the format a file is in, from its extension and header, or None."""
    header = [] if path.suffix.lower() == ".json" else read_header(path)
    for catalog_format in FORMATS.values():
        if catalog_format.sniff(path, header):
            return catalog_format
    return None
