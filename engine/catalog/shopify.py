"""Shopify product CSV exports, read as Shopify writes them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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

QTY = "Variant Inventory Qty"

#: Product columns read from a product's first row: column -> (field, parser).
PRODUCT_COLUMNS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "Title": ("title", str.strip),
    "Body (HTML)": ("body_html", clean_html),
    "Vendor": ("vendor", str.strip),
    "Type": ("product_type", str.strip),
    "Tags": ("tags", parse_tags),
    "Published": ("published", lambda text: parse_bool(text) if text.strip() else False),
    "Status": ("status", parse_status),
    "SEO Title": ("seo_title", str.strip),
    "SEO Description": ("seo_description", str.strip),
}

#: Columns whose non-blank value makes a row a variant row (the rest are image-only rows).
VARIANT_MARKERS = (
    "Option1 Value",
    "Option2 Value",
    "Option3 Value",
    "Variant SKU",
    "Variant Price",
    "Variant Compare At Price",
    QTY,
    "Variant Barcode",
    "Variant Image",
)

#: ``Label (product.metafields.namespace.key)``, the header newer exports write, in any language.
METAFIELD_HEADER = re.compile(r".*\(product\.metafields\.([^\s().]+)\.([^\s()]+)\)\s*\Z")

#: Older exports' Google Shopping columns, stored under the app's real metafield keys.
GOOGLE_SHOPPING = "Google Shopping / "
GOOGLE_NAMESPACE = "mm-google-shopping"


def metafield_columns(header: list[str]) -> dict[str, str]:
    """Map each metafield column of a header to its ``namespace.key``."""
    columns: dict[str, str] = {}
    for name in header:
        match = METAFIELD_HEADER.match(name)
        if match:
            columns[name] = f"{match.group(1)}.{match.group(2)}"
        elif name.startswith(GOOGLE_SHOPPING):
            label = name[len(GOOGLE_SHOPPING) :].strip().lower()
            columns[name] = f"{GOOGLE_NAMESPACE}.{re.sub(r'[^a-z0-9]+', '_', label).strip('_')}"
    return columns


def is_shopify_header(header: list[str]) -> bool:
    """Return True for a Shopify product CSV header (Handle plus Variant SKU or Option1 Value)."""
    names = set(header)
    return "Handle" in names and ("Variant SKU" in names or "Option1 Value" in names)


@dataclass
class ProductRows:
    """The consecutive rows of one handle, turned into a record as they arrive."""

    record: ProductRecord
    option_names: list[str] | None
    images: list[tuple[int, int, dict[str, str]]] = field(default_factory=list)


class ShopifyReader:
    """Stream a Shopify export into product records, logging every bad cell."""

    def __init__(self, header: list[str], log: ProblemLog) -> None:
        self.header = set(header)
        self.log = log
        self.metafields = metafield_columns(header)
        self.has_qty = QTY in self.header
        self.has_images = "Image Src" in self.header

    def records(self, rows: Iterator[CsvRow]) -> Iterator[ProductRecord]:
        """Group consecutive rows by handle and yield one record per product."""
        current: ProductRows | None = None
        for row in rows:
            handle = row.cells.get("Handle", "").strip()
            if not handle:
                self.log.add(row.line, "Handle", "blank; every row needs its product's handle")
                continue
            if current is None or handle != current.record.handle:
                if current is not None:
                    yield self.finish(current)
                current = self.start(row, handle)
            self.add_row(current, row, first=row.line == current.record.line)
        if current is not None:
            yield self.finish(current)

    def cell(self, row: CsvRow, column: str) -> str:
        """Return a cell's text ("" when the column is missing)."""
        return row.cells.get(column, "")

    def parse(self, row: CsvRow, column: str, parser: Callable[[str], Any]) -> Any:
        """Parse a cell, logging a problem (and returning None) when it is bad."""
        try:
            return parser(self.cell(row, column))
        except ValueError as exc:
            self.log.add(row.line, column, str(exc))
            return None

    def start(self, row: CsvRow, handle: str) -> ProductRows:
        """Begin a product at its first row; a blank Title there means "variants only"."""
        record = ProductRecord(line=row.line, handle=handle)
        names: list[str] | None = None
        if self.cell(row, "Title").strip():
            for column, (name, parser) in PRODUCT_COLUMNS.items():
                if column in self.header:
                    record.fields[name] = self.parse(row, column, parser)
            names = [
                self.cell(row, f"Option{i} Name").strip()
                for i in (1, 2, 3)
                if self.cell(row, f"Option{i} Name").strip()
            ]
            if names == ["Title"] and self.cell(row, "Option1 Value").strip() == "Default Title":
                names = []
            if any(f"Option{i} Name" in self.header for i in (1, 2, 3)):
                record.fields["option_names"] = names
            for column, key in self.metafields.items():
                value = self.cell(row, column).strip()
                record.metafields[key] = value or None
        return ProductRows(record=record, option_names=names)

    def add_row(self, rows: ProductRows, row: CsvRow, *, first: bool) -> None:
        """Add a row's variant and image to its product."""
        src = self.cell(row, "Image Src").strip()
        if src:
            position = self.parse(
                row, "Image Position", lambda t: parse_quantity(t) if t.strip() else 0
            )
            alt = self.cell(row, "Image Alt Text").strip()
            rows.images.append((position or 0, len(rows.images), {"src": src, "alt": alt}))
        if first or any(self.cell(row, column).strip() for column in VARIANT_MARKERS):
            rows.record.variants.append(self.variant(rows, row))

    def variant(self, rows: ProductRows, row: CsvRow) -> VariantRecord:
        """Read the variant columns of a row."""
        values = [self.cell(row, f"Option{i} Value").strip() for i in (1, 2, 3)]
        while values and not values[-1]:
            values.pop()
        names = rows.option_names
        if names == [] and values == ["Default Title"]:
            values = []
        if names is not None:
            for i in range(max(len(names), len(values))):
                column = f"Option{i + 1} Value"
                if i >= len(names):
                    self.log.add(
                        row.line,
                        column,
                        f"{values[i]!r} given but the product has no Option{i + 1} Name",
                    )
                elif i >= len(values) or not values[i]:
                    self.log.add(
                        row.line, column, f"blank, but the product has option {names[i]!r}"
                    )
        sku = self.cell(row, "Variant SKU").strip() or None
        variant = VariantRecord(line=row.line, sku=sku, option_values=values)
        fields = variant.fields
        if "Variant Price" in self.header:
            if self.cell(row, "Variant Price").strip():
                fields["price"] = self.parse(row, "Variant Price", parse_money)
            else:
                self.log.add(row.line, "Variant Price", "blank; every variant needs a price")
        if "Variant Compare At Price" in self.header:
            fields["compare_at_price"] = self.parse(
                row, "Variant Compare At Price", lambda t: parse_money(t) if t.strip() else None
            )
        if "Variant Barcode" in self.header:
            # Shopify prefixes numeric barcodes with an apostrophe so spreadsheets keep
            # their leading zeros; the apostrophe is not part of the barcode.
            fields["barcode"] = self.cell(row, "Variant Barcode").strip().removeprefix("'").strip()
        if "Variant Grams" in self.header:
            fields["grams"] = self.parse(row, "Variant Grams", parse_grams)
        if "Variant Image" in self.header:
            fields["image"] = self.cell(row, "Variant Image").strip()
        if "Variant Inventory Tracker" in self.header:
            # Blank means Shopify does not track the quantity: always sellable.
            variant.tracked = bool(self.cell(row, "Variant Inventory Tracker").strip())
        if "Variant Inventory Policy" in self.header:
            variant.policy = self.parse(row, "Variant Inventory Policy", parse_policy)
        if self.has_qty:
            variant.stock = self.parse(row, QTY, lambda t: parse_quantity(t) if t.strip() else 0)
        return variant

    def finish(self, rows: ProductRows) -> ProductRecord:
        """Complete a product: images in position order, variant positions."""
        record = rows.record
        if self.has_images and "title" in record.fields:
            images: list[dict[str, str]] = []
            seen: set[str] = set()
            for _position, _order, image in sorted(
                rows.images, key=lambda item: (item[0] or 10**9, item[1])
            ):
                if image["src"] not in seen:
                    seen.add(image["src"])
                    images.append(image)
            record.fields["images"] = images
        for position, variant in enumerate(record.variants, start=1):
            variant.fields["position"] = position
        return record


def read_shopify(path: Path, log: ProblemLog, warnings: list[str]) -> Iterator[ProductRecord]:
    """Read a Shopify product CSV export."""
    with open_csv(path, log) as (header, rows):
        if not header:
            return
        if "Handle" not in header:
            log.add(1, "Handle", "missing from the header; is this a Shopify product export?")
            return
        reader = ShopifyReader(header, log)
        if not reader.has_qty:
            warnings.append(
                f"no '{QTY}' column (stores with several locations export none): stock is"
                " left as it was and new variants start at 0"
            )
        yield from reader.records(rows)


def sniff_shopify(path: Path, header: list[str]) -> bool:
    """Return True for a CSV whose header is Shopify's."""
    return path.suffix.lower() != ".json" and is_shopify_header(header)


SHOPIFY = register_format(
    CatalogFormat(
        name="shopify",
        description="Shopify product CSV export",
        read=read_shopify,
        sniff=sniff_shopify,
    )
)
