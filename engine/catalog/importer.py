"""Catalog import: upsert products and variants from a file, all or nothing."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from engine.catalog import is_sellable, set_stock
from engine.catalog.formats import (
    FORMATS,
    MAX_LENGTHS,
    CatalogFormat,
    ImportProblem,
    ProblemLog,
    ProductRecord,
    VariantRecord,
    check_handle,
    detect_format,
)
from engine.catalog.jsonfile import JSON
from engine.catalog.plain import PLAIN
from engine.catalog.shopify import SHOPIFY
from engine.db import utcnow
from engine.models import Product, Variant

#: Every reader, registered by importing it (the formats' sniffers do not overlap).
READERS = (SHOPIFY, PLAIN, JSON)

#: Products looked up and written per database round trip.
BATCH_SIZE = 500

PRODUCT_DEFAULTS: dict[str, Any] = {
    "title": "",
    "body_html": "",
    "vendor": "",
    "product_type": "",
    "tags": [],
    "status": "active",
    "published": True,
    "seo_title": "",
    "seo_description": "",
    "option_names": [],
    "images": [],
}
VARIANT_DEFAULTS: dict[str, Any] = {
    "compare_at_price": None,
    "barcode": "",
    "grams": 0,
    "image": "",
    "position": 1,
}


@dataclass
class ImportReport:
    """What an import did (or, with problems or ``dry_run``, would have done)."""

    path: str
    format: str = ""
    dry_run: bool = False
    products: int = 0
    variants: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    restocked: int = 0
    sold_out: int = 0
    archived: int = 0
    rejected: int = 0
    problems: list[ImportProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Return True when the file had no problems."""
        return not self.problems

    @property
    def imported(self) -> bool:
        """Return True when the changes were written (no problems, not a dry run)."""
        return self.ok and not self.dry_run

    def counts(self) -> dict[str, int]:
        """Return the summary counts by name."""
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "restocked": self.restocked,
            "sold out": self.sold_out,
            "archived": self.archived,
            "rejected": self.rejected,
        }

    def summary(self) -> str:
        """Return the one-line summary: created / updated / ... / rejected."""
        return ", ".join(f"{name} {count}" for name, count in self.counts().items())


def import_catalog(
    session: Session,
    path: str | Path,
    fmt: str = "auto",
    dry_run: bool = False,
    prune: bool = False,
    source: str = "import",
) -> ImportReport:
    """Upsert the catalog from a Shopify export, plain CSV or JSON file, all or nothing.

    Runs inside a savepoint of the caller's session: on any problem, or with
    ``dry_run``, the savepoint is rolled back and nothing is written. The caller commits.
    ``source`` names where the stock news came from in the recorded transitions
    ("import", or "feed" for the scheduled ``CATALOG_FEED`` re-read).
    """
    started = time.perf_counter()
    path = Path(path)
    report = ImportReport(path=str(path), dry_run=dry_run)
    log = ProblemLog()
    catalog_format = choose_format(path, fmt, log)
    if catalog_format is None:
        return finish(report, log, started)
    report.format = catalog_format.name
    savepoint = session.begin_nested()
    try:
        writer = CatalogWriter(session, report, log, source)
        records = catalog_format.read(path, log, report.warnings)
        for batch in batched(records, BATCH_SIZE):
            writer.process(batch)
        writer.check_moved_skus()
        if prune and not log:
            writer.prune()
    except BaseException:
        savepoint.rollback()
        raise
    if log or dry_run:
        savepoint.rollback()
    else:
        savepoint.commit()
    return finish(report, log, started)


def choose_format(path: Path, fmt: str, log: ProblemLog) -> CatalogFormat | None:
    """Return the reader for a file (detected when ``fmt`` is "auto"), logging why not."""
    if not path.is_file():
        log.add(0, "", "no such file")
        return None
    if fmt != "auto":
        if fmt not in FORMATS:
            log.add(0, "", f"unknown format {fmt!r}; use auto, {', '.join(FORMATS)}")
        return FORMATS.get(fmt)
    detected = detect_format(path)
    if detected is None:
        log.add(
            1,
            "",
            "cannot tell the format: a Shopify export has Handle and Variant SKU columns,"
            " a plain CSV a handle column, JSON a .json name; or pass --format",
        )
    return detected


def finish(report: ImportReport, log: ProblemLog, started: float) -> ImportReport:
    """Fill the problems into the report; a rejected file reports no changes."""
    report.problems = sorted(log.problems, key=lambda problem: problem.line)
    if report.problems:
        report.rejected = len({problem.line for problem in report.problems})
        for name in ("created", "updated", "unchanged", "restocked", "sold_out", "archived"):
            setattr(report, name, 0)
    report.seconds = time.perf_counter() - started
    return report


def batched(records: Iterable[ProductRecord], size: int) -> Iterator[list[ProductRecord]]:
    """Yield lists of up to ``size`` records, streaming."""
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass
class MovedSku:
    """A SKU the file gives to one product while the catalog has it on another."""

    sku: str
    line: int
    column: str
    holder: str


class CatalogWriter:
    """Check records against the file so far and the database, then write them in batches."""

    def __init__(
        self, session: Session, report: ImportReport, log: ProblemLog, source: str = "import"
    ) -> None:
        self.session = session
        self.source = source
        self.report = report
        self.log = log
        self.now = utcnow()
        self.handles: dict[str, int] = {}
        self.skus: dict[str, int] = {}
        self.moved: list[MovedSku] = []
        column = {"shopify": "Variant SKU", "csv": "sku"}
        self.sku_column = column.get(report.format, "sku")
        self.handle_column = {"shopify": "Handle", "csv": "handle"}.get(report.format, "handle")

    # --- checks that need no database ---

    def check(self, record: ProductRecord) -> bool:
        """Check a record against itself and the rest of the file; return True when clean."""
        before = len(self.log)
        line = record.line
        problem = check_handle(record.handle)
        if problem:
            self.log.add(line, self.handle_column, problem)
        first = self.handles.get(record.handle)
        if first is not None:
            self.log.add(
                line,
                self.handle_column,
                f"{record.handle!r} already appeared on line {first}; a product's rows must be"
                " together and each product listed once",
            )
        else:
            self.handles[record.handle] = line
        for name in ("title", "vendor", "product_type", "seo_title"):
            value = record.fields.get(name)
            if isinstance(value, str) and len(value) > MAX_LENGTHS[name]:
                self.log.add(line, name, f"longer than {MAX_LENGTHS[name]} characters")
        if record.fields.get("title") == "":
            self.log.add(line, "title", "blank; every product needs a title")
        if not record.variants:
            self.log.add(line, "", f"product {record.handle!r} has no variant rows")
        keys: dict[str, int] = {}
        for variant in record.variants:
            self.check_variant(record, variant, keys)
        return len(self.log) == before

    def check_variant(
        self, record: ProductRecord, variant: VariantRecord, keys: dict[str, int]
    ) -> None:
        """Check a variant: unique SKU in the file, unique options in its product, lengths."""
        key = variant.option_key
        if key in keys:
            shown = key or "(no options)"
            self.log.add(
                variant.line,
                "options",
                f"duplicate variant {shown!r} of {record.handle!r} (also on line {keys[key]})",
            )
        keys.setdefault(key, variant.line)
        if len(key) > MAX_LENGTHS["option_key"]:
            self.log.add(variant.line, "options", "option values are too long together")
        if variant.sku is not None:
            if len(variant.sku) > MAX_LENGTHS["sku"]:
                self.log.add(variant.line, self.sku_column, "longer than 255 characters")
            first = self.skus.get(variant.sku)
            if first is not None:
                self.log.add(
                    variant.line,
                    self.sku_column,
                    f"duplicate SKU {variant.sku!r} (already on line {first})",
                )
            else:
                self.skus[variant.sku] = variant.line
        for name in ("barcode", "image"):
            value = variant.fields.get(name)
            if isinstance(value, str) and len(value) > MAX_LENGTHS[name]:
                self.log.add(variant.line, name, f"longer than {MAX_LENGTHS[name]} characters")

    # --- per batch: database checks, then writes while the file is clean ---

    def process(self, batch: list[ProductRecord]) -> None:
        """Check a batch; when the whole file is clean so far, write it."""
        clean = [record for record in batch if self.check(record)]
        self.report.products += len(batch)
        self.report.variants += sum(len(record.variants) for record in batch)
        if not clean:
            return
        existing = self.load_products([record.handle for record in clean])
        holders = self.load_sku_holders(clean)
        plans = [self.plan(record, existing.get(record.handle), holders) for record in clean]
        if self.log:
            return
        self.free_moved_skus(plans, holders)
        additions: list[tuple[Product, VariantRecord]] = []
        for plan in plans:
            additions.extend(self.write(plan))
        if additions:
            # New products get their ids in one flush, new variants in a second, so
            # set_stock can record transitions without flushing once per variant.
            self.session.flush()
            created = [self.new_variant(product, record) for product, record in additions]
            self.session.add_all(created)
            self.session.flush()
            for variant in created:
                # A new variant's first sellable stock is recorded as a restock (that is how
                # a coming-soon product's arrival reaches its waitlist), but the summary's
                # "restocked" counts only variants that were already in the catalog.
                set_stock(
                    self.session, variant, variant.stock, source=self.source, at=self.now, new=True
                )
        self.session.flush()

    def load_products(self, handles: list[str]) -> dict[str, Product]:
        """Return the stored products with these handles, variants loaded."""
        query = (
            select(Product)
            .where(Product.handle.in_(handles))
            .options(selectinload(Product.variants))
        )
        return {product.handle: product for product in self.session.scalars(query)}

    def load_sku_holders(self, records: list[ProductRecord]) -> dict[str, tuple[int, str]]:
        """Return SKU -> (variant id, product handle) for the batch's SKUs already stored."""
        skus = [v.sku for record in records for v in record.variants if v.sku is not None]
        if not skus:
            return {}
        query = (
            select(Variant.sku, Variant.id, Product.handle)
            .join(Product, Variant.product_id == Product.id)
            .where(Variant.sku.in_(skus))
        )
        return {
            sku: (variant_id, handle)
            for sku, variant_id, handle in self.session.execute(query)
            if sku is not None
        }

    def plan(
        self, record: ProductRecord, product: Product | None, holders: dict[str, tuple[int, str]]
    ) -> Plan:
        """Match a record's variants to stored ones and check what needs the database."""
        plan = Plan(record=record, product=product)
        if product is None and "title" not in record.fields:
            self.log.add(record.line, "title", f"new product {record.handle!r} needs a title")
        stored = list(product.variants) if product is not None else []
        by_sku = {variant.sku: variant for variant in stored if variant.sku}
        taken: set[int] = set()
        for variant in record.variants:
            match = by_sku.get(variant.sku) if variant.sku else None
            if match is not None:
                taken.add(id(match))
            plan.matches.append(match)
        by_key = {variant.option_key: variant for variant in stored}
        for index, variant in enumerate(record.variants):
            if plan.matches[index] is None:
                candidate = by_key.get(variant.option_key)
                if candidate is not None and id(candidate) not in taken:
                    taken.add(id(candidate))
                    plan.matches[index] = candidate
        wanted = {variant.option_key for variant in record.variants}
        for kept in stored:
            if id(kept) in taken:
                continue
            name = kept.sku or kept.option_key or "Default Title"
            if kept.option_key in wanted:
                self.log.add(
                    record.line,
                    "options",
                    f"variant {kept.option_key or 'Default Title'!r} of {record.handle!r} is"
                    f" stored with SKU {kept.sku!r}, which the file does not list; give it"
                    " that SKU or other options",
                )
            else:
                self.report.warnings.append(
                    f"{record.handle}: variant {name!r} is not in the file; kept as it is"
                )
        for variant, match in zip(record.variants, plan.matches, strict=True):
            if match is None and "price" not in variant.fields:
                self.log.add(variant.line, "price", "a new variant needs a price")
            holder = holders.get(variant.sku) if variant.sku else None
            if holder is not None and holder[1] != record.handle:
                self.moved.append(
                    MovedSku(variant.sku or "", variant.line, self.sku_column, holder[1])
                )
        return plan

    def free_moved_skus(self, plans: list[Plan], holders: dict[str, tuple[int, str]]) -> None:
        """Take SKUs off other products' variants before this batch gives them out."""
        ids = [
            holders[variant.sku][0]
            for plan in plans
            for variant in plan.record.variants
            if variant.sku in holders and holders[variant.sku][1] != plan.record.handle
        ]
        if ids:
            self.session.execute(
                update(Variant).where(Variant.id.in_(ids)).values(sku=None),
                execution_options={"synchronize_session": "fetch"},
            )

    def check_moved_skus(self) -> None:
        """Refuse SKUs taken from catalog products that the file does not list."""
        for moved in self.moved:
            if moved.holder not in self.handles:
                self.log.add(
                    moved.line,
                    moved.column,
                    f"SKU {moved.sku!r} belongs to product {moved.holder!r} in the catalog,"
                    " which this file does not list",
                )

    def write(self, plan: Plan) -> list[tuple[Product, VariantRecord]]:
        """Create or update one product; return the variants to add to it."""
        record = plan.record
        product = plan.product
        if product is None:
            values = {**PRODUCT_DEFAULTS, **record.fields}
            product = Product(
                handle=record.handle,
                **values,
                metafields=merge_metafields({}, record),
                created_at=self.now,
                updated_at=self.now,
            )
            self.session.add(product)
            self.report.created += 1
            if product.status == "archived":
                self.report.archived += 1
            changed = True
        else:
            was_archived = product.status == "archived"
            changed = assign(product, record.fields)
            metafields = merge_metafields(product.metafields or {}, record)
            if metafields != (product.metafields or {}):
                product.metafields = metafields
                changed = True
            if product.status == "archived" and not was_archived:
                self.report.archived += 1
        additions: list[tuple[Product, VariantRecord]] = []
        renamed = [
            stored
            for wanted, stored in zip(record.variants, plan.matches, strict=True)
            if stored is not None and stored.option_key != wanted.option_key
        ]
        if renamed:
            # Options may swap between variants; park the old keys first so the
            # unique (product, options) constraint never sees two rows with one key (a
            # tab cannot start a real key: option values are stripped).
            for stored in renamed:
                stored.option_key = f"\t{stored.id}"
            self.session.flush()
        for variant, match in zip(record.variants, plan.matches, strict=True):
            if match is None:
                additions.append((product, variant))
                changed = True
                continue
            fields = {
                **variant.fields,
                "sku": variant.sku,
                "option_values": variant.option_values,
                "option_key": variant.option_key,
            }
            changed = assign(match, fields) or changed
            if self.stock_differs(match, variant):
                self.count(
                    set_stock(
                        self.session,
                        match,
                        variant.stock,
                        tracked=variant.tracked,
                        policy=variant.policy,
                        source=self.source,
                        at=self.now,
                    )
                )
                changed = True
        if plan.product is not None:
            if changed:
                product.updated_at = self.now
                self.report.updated += 1
            else:
                self.report.unchanged += 1
        return additions

    def new_variant(self, product: Product, record: VariantRecord) -> Variant:
        """Build a new variant of a flushed product, inventory already as set_stock will set it.

        set_stock (called after the flush, with ``new=True``) then finds nothing left to
        change, so the row is inserted once instead of inserted and updated.
        """
        values = {**VARIANT_DEFAULTS, **record.fields}
        tracked = True if record.tracked is None else record.tracked
        policy = record.policy or "deny"
        stock = record.stock or 0
        return Variant(
            product_id=product.id,
            sku=record.sku,
            option_key=record.option_key,
            option_values=record.option_values,
            **values,
            inventory_tracked=tracked,
            inventory_policy=policy,
            stock=stock,
            sellable=is_sellable(stock, tracked, policy),
            stock_updated_at=self.now,
        )

    @staticmethod
    def stock_differs(variant: Variant, record: VariantRecord) -> bool:
        """Return True when the file changes the variant's stock, tracking or policy."""
        return (
            (record.stock is not None and record.stock != variant.stock)
            or (record.tracked is not None and record.tracked != variant.inventory_tracked)
            or (record.policy is not None and record.policy != variant.inventory_policy)
        )

    def count(self, change: Any) -> None:
        """Count a stock change that crossed between sellable and not."""
        if change.restocked:
            self.report.restocked += 1
        elif change.sold_out:
            self.report.sold_out += 1

    def prune(self) -> None:
        """Archive every catalog product the file does not list."""
        stale = [
            product_id
            for product_id, handle in self.session.execute(
                select(Product.id, Product.handle).where(Product.status != "archived")
            )
            if handle not in self.handles
        ]
        for start in range(0, len(stale), BATCH_SIZE):
            chunk = stale[start : start + BATCH_SIZE]
            self.session.execute(
                update(Product)
                .where(Product.id.in_(chunk))
                .values(status="archived", updated_at=self.now),
                execution_options={"synchronize_session": "fetch"},
            )
        self.report.archived += len(stale)


@dataclass
class Plan:
    """A record and the stored product and variants it updates (None: create)."""

    record: ProductRecord
    product: Product | None
    matches: list[Variant | None] = field(default_factory=list)


def assign(target: Any, values: dict[str, Any]) -> bool:
    """Set attributes that differ; return True when any did (untouched rows stay unwritten)."""
    changed = False
    for name, value in values.items():
        if getattr(target, name) != value:
            setattr(target, name, value)
            changed = True
    return changed


def merge_metafields(stored: dict[str, Any], record: ProductRecord) -> dict[str, Any]:
    """Return the stored metafields with the file's set (None removes; absent keys stay)."""
    merged = dict(stored)
    for key, value in record.metafields.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
