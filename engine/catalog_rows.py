"""The catalog rows pages are planned from, read once per build in two plain queries.

Kept apart from ``engine.pages`` (Jinja2, Markdown) and ``engine.models`` (the ORM) so a
build can tell whether anything changed before it imports what planning needs.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: The tables planning reads (``engine.models.Product`` and ``Variant``).
PRODUCT_TABLE = "product"
VARIANT_TABLE = "variant"
PRODUCT_COLUMNS = ("id", "handle", "title", "body_html", "vendor", "product_type", "tags",
                   "status", "published", "seo_title", "seo_description", "option_names",
                   "images")  # fmt: skip
VARIANT_COLUMNS = ("product_id", "id", "sku", "option_values", "price", "compare_at_price",
                   "barcode", "grams", "image", "inventory_tracked", "inventory_policy",
                   "stock", "sellable")  # fmt: skip
#: The variant columns a stock change writes (``engine.catalog.set_stock``): the last ones.
STOCK_COLUMNS = ("stock", "sellable")
_STOCK_START = len(VARIANT_COLUMNS) - len(STOCK_COLUMNS)
assert VARIANT_COLUMNS[_STOCK_START:] == STOCK_COLUMNS


@dataclass
class CatalogRows:
    """The catalog's rows as the database driver returned them (read once per plan)."""

    products: list[tuple[Any, ...]]
    variants: list[tuple[Any, ...]]

    def digest(self) -> str:
        """Return a digest of every row: equal digests mean the same catalog."""
        return self._digests[0]

    def shape_digest(self) -> str:
        """Return a digest of every row without the stock columns (``STOCK_COLUMNS``)."""
        return self._digests[1]

    def stock(self) -> str:
        """Return every variant row's stock and sellable values as text, in row order.

        ``"7,1;0,0;..."``: compact in the manifest and cheap to compare row by row.
        """
        return self._digests[2]

    @functools.cached_property
    def _digests(self) -> tuple[str, str, str]:
        # pickle, not repr: the same values give the same bytes (each row and cell is an
        # object of its own, as the driver made it), at half repr's cost for 10,000 rows.
        shape = hashlib.blake2b(digest_size=16)
        shape.update(pickle.dumps(self.products, protocol=5))
        shape.update(b"\x00")
        shape.update(pickle.dumps([row[:_STOCK_START] for row in self.variants], protocol=5))
        stock = ";".join([f"{row[-2]},{int(bool(row[-1]))}" for row in self.variants])
        full = shape.copy()
        full.update(b"\x00" + stock.encode())
        return full.hexdigest(), shape.hexdigest(), stock


def read_catalog(source: Session | Any) -> CatalogRows:
    """Read every product and variant row in two queries, as plain tuples.

    ``source`` is a SQLAlchemy session, or a ``sqlite3`` connection of its own (the
    embedded database's build path, which does without SQLAlchemy).
    """
    products_sql = f"SELECT {', '.join(PRODUCT_COLUMNS)} FROM {PRODUCT_TABLE} ORDER BY id"
    variants_sql = (
        f"SELECT {', '.join(VARIANT_COLUMNS)} FROM {VARIANT_TABLE} "
        "ORDER BY product_id, position, id"
    )
    if isinstance(source, sqlite3.Connection):
        # One read transaction: both queries see the same catalog.
        source.execute("BEGIN")
        try:
            products = source.execute(products_sql).fetchall()
            variants = source.execute(variants_sql).fetchall()
        finally:
            source.execute("COMMIT")
        return CatalogRows(products, variants)
    source.flush()
    connection = source.connection()
    # Plain driver rows: the ORM's and Core's per-row type processing costs more than
    # everything else in planning a large catalog; columns are decoded by the planner.
    rows = connection.exec_driver_sql(products_sql).fetchall()
    more = connection.exec_driver_sql(variants_sql).fetchall()
    return CatalogRows([tuple(row) for row in rows], [tuple(row) for row in more])


def sqlite_file(url: str) -> str | None:
    """Return the file of a plain ``sqlite:///path`` URL (None for any other database URL)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    path = url[len(prefix) :]
    if not path or path == ":memory:":
        return None
    return path
