"""Absolute inventory updates (the inventory webhook): checked whole, then applied in order.

Each item says what a SKU's stock *is* at ``updated_at``, never a delta, so applying one twice
changes nothing, and an item not newer than the variant's stored ``stock_updated_at`` is
ignored: a replayed or out-of-order delivery can neither undo a newer update nor fake a
restock. Every change goes through ``set_stock`` (source "webhook").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from engine.catalog import set_stock
from engine.models import INVENTORY_POLICIES, Variant

#: SKUs looked up per query.
LOOKUP_BATCH = 500
#: Most items one delivery may carry (a bigger sync belongs in the catalog feed).
MAX_ITEMS = 10_000


@dataclass(frozen=True)
class InventoryItem:
    """One checked item: a SKU's absolute stock (and optionally policy) at a moment."""

    sku: str
    available: int
    policy: str | None
    updated_at: dt.datetime


@dataclass(frozen=True)
class ItemError:
    """Why one item of a delivery was refused (``index`` counts from 0)."""

    index: int
    field: str
    message: str
    sku: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the error as the hook answers it."""
        return {"index": self.index, "sku": self.sku, "field": self.field, "message": self.message}


class InventoryPayloadError(ValueError):
    """A delivery is malformed; nothing of it may be applied."""

    def __init__(self, errors: Sequence[ItemError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"item {e.index}: {e.field}: {e.message}" for e in errors))


@dataclass
class InventoryReport:
    """What one delivery did, by SKU."""

    applied: list[str] = field(default_factory=list)
    ignored_stale: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    restocked: list[str] = field(default_factory=list)
    sold_out: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the counts and the SKUs behind them, as the hook answers."""
        return {
            "applied": len(self.applied),
            "ignored_stale": len(self.ignored_stale),
            "unknown": len(self.unknown),
            "restocked": self.restocked,
            "sold_out": self.sold_out,
            "stale_skus": self.ignored_stale,
            "unknown_skus": self.unknown,
        }


def parse_timestamp(value: object) -> dt.datetime:
    """Read an ISO 8601 timestamp with a UTC offset ("Z" accepted); raise ValueError if not."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an ISO 8601 timestamp with a UTC offset")
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        # Without an offset the order of two updates from different clocks is a guess.
        raise ValueError(f"{value!r} has no UTC offset (e.g. 2026-11-25T12:00:00Z)")
    return parsed.astimezone(dt.UTC)


def parse_items(payload: object, now: dt.datetime, tolerance: float) -> list[InventoryItem]:
    """Check a delivery (``{"items": [...]}`` or a bare list) whole; raise InventoryPayloadError.

    ``updated_at`` may not lie further than ``tolerance`` seconds in the future: a clock
    running ahead would otherwise block every later update of that SKU.
    """
    if isinstance(payload, dict):
        if set(payload) - {"items"}:
            unknown = ", ".join(sorted(str(key) for key in set(payload) - {"items"}))
            raise InventoryPayloadError([ItemError(-1, "body", f"unknown key(s): {unknown}")])
        payload = payload.get("items")
    if not isinstance(payload, list):
        raise InventoryPayloadError(
            [ItemError(-1, "items", 'expected {"items": [...]} or a list of items')]
        )
    if len(payload) > MAX_ITEMS:
        raise InventoryPayloadError(
            [ItemError(-1, "items", f"at most {MAX_ITEMS} items per delivery")]
        )
    latest = now + dt.timedelta(seconds=tolerance)
    items: list[InventoryItem] = []
    errors: list[ItemError] = []
    for index, raw in enumerate(payload):
        if not isinstance(raw, dict):
            errors.append(ItemError(index, "item", "must be an object"))
            continue
        before = len(errors)
        sku = raw.get("sku")
        shown = sku if isinstance(sku, str) else None
        unknown_keys = set(raw) - {"sku", "available", "policy", "updated_at"}
        if unknown_keys:
            names = ", ".join(sorted(str(key) for key in unknown_keys))
            errors.append(ItemError(index, "item", f"unknown key(s): {names}", shown))
        if not isinstance(sku, str) or not sku.strip() or len(sku) > 255:
            errors.append(ItemError(index, "sku", "must be a non-empty SKU string", shown))
        available = raw.get("available")
        if isinstance(available, bool) or not isinstance(available, int):
            errors.append(ItemError(index, "available", "must be a whole number", shown))
        elif available < 0:
            # Shopify reports oversold stock as negative; 0 is what "none left" means here.
            available = 0
        policy = raw.get("policy")
        if policy is not None and policy not in INVENTORY_POLICIES:
            choices = " or ".join(INVENTORY_POLICIES)
            errors.append(ItemError(index, "policy", f"must be {choices}", shown))
        updated_at: dt.datetime | None = None
        try:
            updated_at = parse_timestamp(raw.get("updated_at"))
        except ValueError as exc:
            errors.append(ItemError(index, "updated_at", str(exc), shown))
        if updated_at is not None and updated_at > latest:
            errors.append(ItemError(index, "updated_at", "is in the future", shown))
        if len(errors) == before:
            assert isinstance(sku, str) and isinstance(available, int) and updated_at is not None
            items.append(InventoryItem(sku.strip(), available, policy, updated_at))
    if errors:
        raise InventoryPayloadError(errors)
    return items


def apply_items(session: Session, items: Sequence[InventoryItem]) -> InventoryReport:
    """Apply checked items in order through ``set_stock``; stale and unknown SKUs are reported.

    The variants are locked (``FOR UPDATE`` on PostgreSQL; SQLite takes its write lock at
    BEGIN), so two concurrent deliveries for one SKU are compared one after the other.
    """
    report = InventoryReport()
    skus = sorted({item.sku for item in items})
    variants: dict[str, Variant] = {}
    for start in range(0, len(skus), LOOKUP_BATCH):
        chunk = skus[start : start + LOOKUP_BATCH]
        query = (
            select(Variant)
            .where(Variant.sku.in_(chunk))
            .options(selectinload(Variant.product))
            .order_by(Variant.id)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=Variant)
        for row in session.scalars(query):
            if row.sku is not None:
                variants[row.sku] = row
    for item in items:
        variant = variants.get(item.sku)
        if variant is None:
            report.unknown.append(item.sku)
            continue
        stored = variant.stock_updated_at
        if stored is not None and item.updated_at <= stored:
            # Equal counts as seen: a replay of the very same delivery changes nothing.
            report.ignored_stale.append(item.sku)
            continue
        change = set_stock(
            session,
            variant,
            item.available,
            policy=item.policy,
            source="webhook",
            at=item.updated_at,
        )
        report.applied.append(item.sku)
        if change.restocked:
            report.restocked.append(item.sku)
        elif change.sold_out:
            report.sold_out.append(item.sku)
    session.flush()
    return report
