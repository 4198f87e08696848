"""The plain catalog CSV: one row per variant, lower-case column names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.catalog.formats import (
    CatalogFormat,
    CsvRow,
    ProblemLog,
    ProductRecord,
    VariantRecord,
    clean_html,
    open_csv,
    parse_bool,
    parse_grams,
    parse_money,
    parse_policy,
    parse_quantity,
    parse_status,
    parse_tags,
    register_format,
)

#: Product columns, read from a product's first row: column -> (field, parser).
PRODUCT_COLUMNS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "title": ("title", str.strip),
    "body_html": ("body_html", clean_html),
    "vendor": ("vendor", str.strip),
    "type": ("product_type", str.strip),
    "tags": ("tags", parse_tags),
    "status": ("status", parse_status),
    "published": ("published", lambda text: parse_bool(text) if text.strip() else True),
    "seo_title": ("seo_title", str.strip),
    "seo_description": ("seo_description", str.strip),
}

#: Variant columns, read from every row: column -> (field, parser).
VARIANT_COLUMNS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "price": ("price", parse_money),
    "compare_at_price": ("compare_at_price", lambda t: parse_money(t) if t.strip() else None),
    "barcode": ("barcode", lambda t: t.strip().removeprefix("'").strip()),
    "grams": ("grams", parse_grams),
    "variant_image": ("image", str.strip),
}

OPTION_COLUMNS = tuple(f"option{i}_{part}" for i in (1, 2, 3) for part in ("name", "value"))
OTHER_COLUMNS = ("handle", "sku", "stock", "tracked", "policy", "image", "image_alt")
KNOWN_COLUMNS = (
    *OTHER_COLUMNS[:2],
    *PRODUCT_COLUMNS,
    *OPTION_COLUMNS,
    *VARIANT_COLUMNS,
    *OTHER_COLUMNS[2:],
)


class PlainReader:
    """Stream a plain catalog CSV into product records."""

    def __init__(self, header: list[str], log: ProblemLog) -> None:
        self.header = set(header)
        self.log = log

    def parse(self, row: CsvRow, column: str, parser: Callable[[str], Any]) -> Any:
        """Parse a cell, logging a problem (and returning None) when it is bad."""
        try:
            return parser(row.cells.get(column, ""))
        except ValueError as exc:
            self.log.add(row.line, column, str(exc))
            return None

    def records(self, rows: Iterator[CsvRow]) -> Iterator[ProductRecord]:
        """Group consecutive rows by handle and yield one record per product."""
        current: ProductRecord | None = None
        names: list[str] | None = None
        for row in rows:
            handle = row.cells.get("handle", "").strip()
            if not handle:
                self.log.add(row.line, "handle", "blank; every row needs its product's handle")
                continue
            if current is None or handle != current.handle:
                if current is not None:
                    yield current
                current = ProductRecord(line=row.line, handle=handle)
                names = self.product(current, row)
            self.image(current, row)
            current.variants.append(self.variant(row, names, len(current.variants) + 1))
        if current is not None:
            yield current

    def product(self, record: ProductRecord, row: CsvRow) -> list[str] | None:
        """Read the product columns of a product's first row; return its option names.

        A blank ``title`` there means the rows update variants only (as in Shopify's
        format): product columns are not read and the stored ones stay.
        """
        if "title" in self.header and not row.cells["title"].strip():
            return None
        for column, (name, parser) in PRODUCT_COLUMNS.items():
            if column in self.header:
                record.fields[name] = self.parse(row, column, parser)
        names = [row.cells.get(f"option{i}_name", "").strip() for i in (1, 2, 3)]
        while names and not names[-1]:
            names.pop()
        for i, name in enumerate(names, start=1):
            if not name:
                self.log.add(row.line, f"option{i}_name", "blank, but a later option is named")
        if "option1_name" in self.header:
            record.fields["option_names"] = names
        if "image" in self.header:
            record.fields["images"] = []
        return names

    def image(self, record: ProductRecord, row: CsvRow) -> None:
        """Add a row's product image (each distinct URL once, in file order)."""
        src = row.cells.get("image", "").strip()
        images: list[dict[str, str]] = record.fields.get("images", [])
        if src and all(image["src"] != src for image in images):
            images.append({"src": src, "alt": row.cells.get("image_alt", "").strip()})

    def check_options(self, row: CsvRow, names: list[str], values: list[str]) -> None:
        """Log option values that do not fit the product's option names."""
        for i in range(max(len(names), len(values))):
            column = f"option{i + 1}_value"
            if i >= len(names):
                self.log.add(
                    row.line,
                    column,
                    f"{values[i]!r} given but option{i + 1}_name is blank on the product's"
                    " first row",
                )
            elif i >= len(values) or not values[i]:
                self.log.add(row.line, column, f"blank, but the product has option {names[i]!r}")

    def variant(self, row: CsvRow, names: list[str] | None, position: int) -> VariantRecord:
        """Read the variant columns of a row."""
        values = [row.cells.get(f"option{i}_value", "").strip() for i in (1, 2, 3)]
        while values and not values[-1]:
            values.pop()
        if names is not None:
            self.check_options(row, names, values)
        variant = VariantRecord(
            line=row.line, sku=row.cells.get("sku", "").strip() or None, option_values=values
        )
        for column, (name, parser) in VARIANT_COLUMNS.items():
            if column not in self.header:
                continue
            if column == "price" and not row.cells[column].strip():
                self.log.add(row.line, column, "blank; every variant needs a price")
                continue
            variant.fields[name] = self.parse(row, column, parser)
        variant.fields["position"] = position
        if "stock" in self.header:
            variant.stock = self.parse(
                row, "stock", lambda t: parse_quantity(t) if t.strip() else 0
            )
        if "tracked" in self.header:
            variant.tracked = self.parse(
                row, "tracked", lambda t: parse_bool(t) if t.strip() else True
            )
        if "policy" in self.header:
            variant.policy = self.parse(row, "policy", parse_policy)
        return variant


def read_plain(path: Path, log: ProblemLog, warnings: list[str]) -> Iterator[ProductRecord]:
    """Read a plain catalog CSV."""
    with open_csv(path, log) as (header, rows):
        if not header:
            return
        unknown = [name for name in header if name not in KNOWN_COLUMNS]
        for name in unknown:
            log.add(1, name, f"unknown column; known: {', '.join(KNOWN_COLUMNS)}")
        if "handle" not in header:
            log.add(1, "handle", "missing from the header")
        if unknown or "handle" not in header:
            return
        yield from PlainReader(header, log).records(rows)


def sniff_plain(path: Path, header: list[str]) -> bool:
    """Return True for a CSV with the plain format's ``handle`` column."""
    return path.suffix.lower() != ".json" and "handle" in header


PLAIN = register_format(
    CatalogFormat(
        name="csv",
        description="plain catalog CSV (one row per variant)",
        read=read_plain,
        sniff=sniff_plain,
    )
)
