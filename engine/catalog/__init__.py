"""The catalog: products and variants, and the one function that sets stock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.db import utcnow
from engine.models import StockTransition, Variant

STOCK_SOURCES = ("import", "cli", "webhook", "feed")


class UnknownSKUError(LookupError):
    """No variant has the SKU given."""


def is_sellable(stock: int, tracked: bool, policy: str) -> bool:
    """Return True when a variant with these inventory facts can be bought now."""
    return (not tracked) or stock > 0 or policy == "continue"


@dataclass(frozen=True)
class StockChange:
    """What one call to ``set_stock`` did."""

    variant_id: int
    stock_before: int | None
    stock_after: int
    was_sellable: bool
    sellable: bool

    @property
    def restocked(self) -> bool:
        """Return True when the variant went from not sellable to sellable."""
        return self.sellable and not self.was_sellable

    @property
    def sold_out(self) -> bool:
        """Return True when the variant went from sellable to not sellable."""
        return self.was_sellable and not self.sellable


def set_stock(
    session: Session,
    variant: Variant,
    stock: int | None = None,
    *,
    tracked: bool | None = None,
    policy: str | None = None,
    source: str,
    at: dt.datetime | None = None,
    new: bool = False,
) -> StockChange:
    """Set a variant's inventory and record a sellable transition in the same transaction.

    Every path that changes stock (import, ``engine stock set``, the inventory webhook,
    the catalog feed) goes through here, so restocks are detected in one place. A new
    variant (``new=True``) counts as not sellable before, so a product's first sellable
    stock (a coming-soon product arriving) is a restock. ``None`` leaves a fact as it is.
    """
    if source not in STOCK_SOURCES:
        raise ValueError(f"unknown stock source {source!r}")
    was_sellable = False if new else bool(variant.sellable)
    before = None if new else variant.stock
    if stock is not None:
        variant.stock = stock
    if tracked is not None:
        variant.inventory_tracked = tracked
    if policy is not None:
        variant.inventory_policy = policy
    variant.stock = variant.stock or 0
    variant.sellable = is_sellable(
        variant.stock, bool(variant.inventory_tracked), variant.inventory_policy or "deny"
    )
    variant.stock_updated_at = at or utcnow()
    change = StockChange(
        variant_id=variant.id,
        stock_before=before,
        stock_after=variant.stock,
        was_sellable=was_sellable,
        sellable=variant.sellable,
    )
    if change.restocked or change.sold_out:
        if variant.id is None:
            session.flush()
        session.add(
            StockTransition(
                variant_id=variant.id,
                product_handle=variant.product.handle,
                sku=variant.sku,
                restock=change.restocked,
                stock_before=before,
                stock_after=variant.stock,
                source=source,
            )
        )
    return change


def variant_by_sku(session: Session, sku: str) -> Variant:
    """Return the variant with this SKU or raise ``UnknownSKUError``."""
    variant = session.scalar(select(Variant).where(Variant.sku == sku))
    if variant is None:
        raise UnknownSKUError(f"no variant has SKU {sku!r}")
    return variant


# The importer uses set_stock, so it is imported once the stock function exists.
from engine.catalog.importer import ImportReport, import_catalog  # noqa: E402

__all__ = [
    "STOCK_SOURCES",
    "ImportReport",
    "StockChange",
    "UnknownSKUError",
    "import_catalog",
    "is_sellable",
    "set_stock",
    "variant_by_sku",
]
