"""Orders for conversion attribution: a Shopify orders CSV export or the signed orders hook.

An order is stored once, keyed by its name ("#1001") and, when known, the store's id: the
same order imported again, or posted again, changes only its payment and cancellation
status. The buyer's address is kept normalized so it matches a restock email's recipient,
and is removed by ``engine subscribers forget``.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.db import Database, utcnow
from engine.models import (
    Campaign,
    CampaignMessage,
    Order,
    OrderLine,
    PageView,
    Product,
    Subscriber,
    Variant,
)
from engine.waitlist import InvalidEmail, normalize_email

#: Columns of a Shopify orders export this import reads (the export has many more).
REQUIRED_COLUMNS = ("Name", "Email", "Created at", "Lineitem quantity", "Lineitem price")
SKU_COLUMN = "Lineitem sku"
OPTIONAL_COLUMNS = (
    "Id",
    "Financial Status",
    "Currency",
    "Total",
    "Cancelled at",
    "Lineitem name",
)
#: Payment states whose orders are no sale (besides a cancelled order).
NOT_SALES = frozenset({"voided", "refunded"})
#: Most characters kept of a line item's name.
MAX_TITLE = 500


@dataclass(frozen=True)
class LineRecord:
    """One checked line item."""

    sku: str | None
    title: str
    quantity: int
    price: Decimal


@dataclass
class OrderRecord:
    """One checked order, as read from a file row group or a hook body."""

    name: str
    external_id: str | None
    address: str | None
    ordered_at: dt.datetime
    currency: str = ""
    total: Decimal | None = None
    financial_status: str = ""
    cancelled_at: dt.datetime | None = None
    lines: list[LineRecord] = field(default_factory=list)
    line: int = 0


class OrderImportError(ValueError):
    """A file or body has problems; nothing of it was stored. ``errors`` lists them all."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass
class OrderReport:
    """What storing a batch of orders did."""

    orders: int = 0
    lines: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stored: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """Return the one-line summary."""
        return (
            f"{self.orders} order(s), {self.lines} line item(s): created {self.created}, "
            f"updated {self.updated}, unchanged {self.unchanged}"
        )


# --------------------------------------------------------------------------- values


def normalize_address(raw: str) -> str | None:
    """Return the address as subscribers are keyed (see ``normalize_email``), or None if empty."""
    text = raw.strip()
    if not text:
        return None
    try:
        return normalize_email(text).address
    except InvalidEmail:
        # Still matchable by its lower-cased text; an order is never refused for its email.
        return text.lower()[:320]


def parse_order_time(raw: str) -> dt.datetime:
    """Read Shopify's "2026-09-03 10:14:00 -0400" or ISO 8601 with an offset, as UTC."""
    text = raw.strip()
    if not text:
        raise ValueError("is empty")
    parsed: dt.datetime | None = None
    for pattern in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M %z"):
        try:
            parsed = dt.datetime.strptime(text, pattern)
            break
        except ValueError:
            continue
    if parsed is None:
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{raw!r} is not a date and time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{raw!r} has no UTC offset")
    return parsed.astimezone(dt.UTC)


def parse_money(raw: object) -> Decimal:
    """Read a non-negative amount ("12.50" or a JSON number)."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float, Decimal)):
        raise ValueError("must be an amount like 12.50")
    text = str(raw).strip().replace(",", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{raw!r} is not an amount") from None
    if not value.is_finite() or value < 0 or value >= Decimal("1e10"):
        raise ValueError(f"{raw!r} is not an amount")
    return value.quantize(Decimal("0.01"))


def parse_quantity(raw: object) -> int:
    """Read a whole quantity from 1."""
    if isinstance(raw, bool):
        raise ValueError("must be a whole number from 1")
    try:
        value = int(str(raw).strip()) if not isinstance(raw, int) else raw
    except ValueError:
        raise ValueError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{raw!r} must be 1 or more")
    return value


# --------------------------------------------------------------------------- CSV


def read_orders_csv(path: Path) -> list[OrderRecord]:
    """Read a Shopify orders export (one row per line item); raise OrderImportError with lines.

    The order-level columns (Email, Created at, Total, ...) are read from an order's first
    row, as Shopify fills them only there; every row carries the order's Name.
    """
    name = path.name
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise OrderImportError([f"{name}: cannot read the file ({exc.strerror})"]) from None
    errors: list[str] = []
    orders: dict[str, OrderRecord] = {}
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise OrderImportError([f"{name}:1: the file is empty"])
            columns = {title.strip(): index for index, title in enumerate(header)}
            missing = [title for title in (*REQUIRED_COLUMNS, SKU_COLUMN) if title not in columns]
            if missing:
                raise OrderImportError(
                    [
                        f"{name}:1: not a Shopify orders export: missing column(s) "
                        + ", ".join(missing)
                    ]
                )
            end = reader.line_num
            for row in reader:
                start, end = end + 1, reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                _read_row(row, columns, start, name, orders, errors)
        except UnicodeDecodeError as exc:
            raise OrderImportError([f"{name}: not UTF-8 text ({exc.reason})"]) from None
        except csv.Error as exc:
            raise OrderImportError([f"{name}:{reader.line_num}: {exc}"]) from None
    for record in orders.values():
        if not record.lines and not any(e.startswith(f"{name}:{record.line}:") for e in errors):
            errors.append(f"{name}:{record.line}: order {record.name} has no line items")
    if errors:
        raise OrderImportError(errors)
    return list(orders.values())


def _read_row(
    row: list[str],
    columns: Mapping[str, int],
    line: int,
    name: str,
    orders: dict[str, OrderRecord],
    errors: list[str],
) -> None:
    """Check one export row, adding its line item to its order (created from a first row)."""

    def cell(title: str) -> str:
        index = columns.get(title)
        return row[index].strip() if index is not None and index < len(row) else ""

    def problem(column: str, message: str) -> None:
        errors.append(f"{name}:{line}: {column}: {message}")

    order_name = cell("Name")
    if not order_name:
        problem("Name", "is empty (every row names its order)")
        return
    record = orders.get(order_name)
    if record is None:
        try:
            ordered_at = parse_order_time(cell("Created at"))
        except ValueError as exc:
            problem("Created at", str(exc))
            ordered_at = dt.datetime.min.replace(tzinfo=dt.UTC)
        total: Decimal | None = None
        if cell("Total"):
            try:
                total = parse_money(cell("Total"))
            except ValueError as exc:
                problem("Total", str(exc))
        cancelled_at: dt.datetime | None = None
        if cell("Cancelled at"):
            try:
                cancelled_at = parse_order_time(cell("Cancelled at"))
            except ValueError as exc:
                problem("Cancelled at", str(exc))
        record = OrderRecord(
            name=order_name[:255],
            external_id=cell("Id")[:64] or None,
            address=normalize_address(cell("Email")),
            ordered_at=ordered_at,
            currency=cell("Currency")[:3].upper(),
            total=total,
            financial_status=cell("Financial Status").lower()[:30],
            cancelled_at=cancelled_at,
            line=line,
        )
        orders[order_name] = record
    try:
        quantity = parse_quantity(cell("Lineitem quantity"))
    except ValueError as exc:
        problem("Lineitem quantity", str(exc))
        return
    try:
        price = parse_money(cell("Lineitem price"))
    except ValueError as exc:
        problem("Lineitem price", str(exc))
        return
    sku = cell(SKU_COLUMN)[:255] or None
    record.lines.append(LineRecord(sku, cell("Lineitem name")[:MAX_TITLE], quantity, price))


# --------------------------------------------------------------------------- hook body


def order_from_payload(payload: object) -> OrderRecord:
    """Check an orders-hook body; raise OrderImportError listing every problem.

    Keys read: ``id`` and/or ``name``, ``email``, ``created_at``, ``line_items`` (``sku``,
    ``quantity``, ``price``, optional ``title``/``name``), and optionally ``total_price``,
    ``currency``, ``financial_status``, ``cancelled_at``. Other keys are ignored, so a
    store's full order payload can be posted as it is.
    """
    if not isinstance(payload, dict):
        raise OrderImportError(["body: must be a JSON object"])
    errors: list[str] = []
    raw_id = payload.get("id")
    raw_name = payload.get("name")
    external_id = None
    if raw_id is not None:
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id):
            errors.append("id: must be a string or a number")
        else:
            external_id = str(raw_id)[:64]
    if raw_name is not None and (not isinstance(raw_name, str) or not raw_name.strip()):
        errors.append("name: must be a non-empty string")
    order_name = raw_name.strip() if isinstance(raw_name, str) and raw_name.strip() else None
    if order_name is None and external_id is None and not errors:
        errors.append("id or name: one is required")
    email = payload.get("email")
    if email is not None and not isinstance(email, str):
        errors.append("email: must be a string")
    ordered_at = dt.datetime.min.replace(tzinfo=dt.UTC)
    created = payload.get("created_at")
    try:
        ordered_at = parse_order_time(created if isinstance(created, str) else "")
    except ValueError as exc:
        errors.append(f"created_at: {exc}")
    total = None
    if payload.get("total_price") is not None:
        try:
            total = parse_money(payload["total_price"])
        except ValueError as exc:
            errors.append(f"total_price: {exc}")
    cancelled_at = None
    if payload.get("cancelled_at"):
        try:
            cancelled_at = parse_order_time(str(payload["cancelled_at"]))
        except ValueError as exc:
            errors.append(f"cancelled_at: {exc}")
    lines: list[LineRecord] = []
    items = payload.get("line_items")
    if not isinstance(items, list) or not items:
        errors.append("line_items: must be a non-empty list")
        items = []
    for index, item in enumerate(items):
        where = f"line_items[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: must be an object")
            continue
        sku = item.get("sku")
        if sku is not None and not isinstance(sku, str):
            errors.append(f"{where}.sku: must be a string")
            continue
        try:
            quantity = parse_quantity(item.get("quantity"))
        except ValueError as exc:
            errors.append(f"{where}.quantity: {exc}")
            continue
        try:
            price = parse_money(item.get("price"))
        except ValueError as exc:
            errors.append(f"{where}.price: {exc}")
            continue
        title = item.get("title") or item.get("name") or ""
        lines.append(
            LineRecord((sku or "").strip()[:255] or None, str(title)[:MAX_TITLE], quantity, price)
        )
    if errors:
        raise OrderImportError(errors)
    currency = payload.get("currency")
    status = payload.get("financial_status")
    return OrderRecord(
        name=(order_name or str(external_id))[:255],
        external_id=external_id,
        address=normalize_address(email) if isinstance(email, str) else None,
        ordered_at=ordered_at,
        currency=currency[:3].upper() if isinstance(currency, str) else "",
        total=total,
        financial_status=status.lower()[:30] if isinstance(status, str) else "",
        cancelled_at=cancelled_at,
        lines=lines,
    )


# --------------------------------------------------------------------------- storing


#: Orders looked up and inserted per round trip.
STORE_BATCH = 500


def store_orders(session: Session, records: Sequence[OrderRecord], source: str) -> OrderReport:
    """Insert new orders; for ones already stored, update only payment and cancellation status.

    New orders are inserted in batches (Core statements: an export holds many thousands)
    inside a savepoint; when another process stored one of them meanwhile (the same hook
    delivered twice at once), that batch is stored one order at a time instead and the
    order is counted as already stored.
    """
    report = OrderReport(orders=len(records), lines=sum(len(r.lines) for r in records))
    products = _products_by_sku(session, {line.sku for r in records for line in r.lines})
    stored: list[int] = []
    for start in range(0, len(records), STORE_BATCH):
        chunk = records[start : start + STORE_BATCH]
        known = _known_orders(session, chunk)
        fresh: dict[str, OrderRecord] = {}
        taken_ids: set[str] = set()
        for record in chunk:
            existing = known.get(("name", record.name))
            if existing is None and record.external_id is not None:
                existing = known.get(("id", record.external_id))
            if existing is not None:
                _update_order(existing, record, report)
                stored.append(existing.id)
            elif record.name in fresh or record.external_id in taken_ids:
                report.unchanged += 1  # the same order twice in one batch
            else:
                fresh[record.name] = record
                if record.external_id is not None:
                    taken_ids.add(record.external_id)
        if not fresh:
            continue
        try:
            with session.begin_nested():
                stored.extend(_insert_orders(session, list(fresh.values()), source, products))
        except IntegrityError:
            for record in fresh.values():
                stored.append(_store_one(session, record, source, products, report).id)
        else:
            report.created += len(fresh)
    session.flush()
    report.stored = list(dict.fromkeys(stored))
    return report


def _insert_orders(
    session: Session, records: Sequence[OrderRecord], source: str, products: Mapping[str, str]
) -> list[int]:
    """Insert orders and their lines with two multi-row statements; return the new ids."""
    now = utcnow()
    rows = [
        {
            "name": record.name,
            "external_id": record.external_id,
            "address": record.address,
            "ordered_at": record.ordered_at,
            "currency": record.currency,
            "total": record.total,
            "financial_status": record.financial_status,
            "cancelled_at": record.cancelled_at,
            "source": source,
            "created_at": now,
        }
        for record in records
    ]
    ids = dict(
        (name, order_id)
        for order_id, name in session.execute(insert(Order).returning(Order.id, Order.name), rows)
    )
    lines = [
        {
            "order_id": ids[record.name],
            "position": position,
            "sku": line.sku,
            "product_handle": products.get(line.sku) if line.sku else None,
            "title": line.title,
            "quantity": line.quantity,
            "price": line.price,
            "attribution": "",
        }
        for record in records
        for position, line in enumerate(record.lines, start=1)
    ]
    if lines:
        session.execute(insert(OrderLine), lines)
    return [ids[record.name] for record in records]


def _known_orders(session: Session, records: Sequence[OrderRecord]) -> dict[tuple[str, str], Order]:
    """Return the stored orders with these records' names or store ids, keyed both ways."""
    names = {record.name for record in records}
    ids = {record.external_id for record in records if record.external_id is not None}
    condition: ColumnElement[bool] = Order.name.in_(names)
    if ids:
        condition = or_(condition, Order.external_id.in_(ids))
    known: dict[tuple[str, str], Order] = {}
    for order in session.scalars(select(Order).where(condition).order_by(Order.id.desc())):
        known[("name", order.name)] = order
        if order.external_id is not None:
            known[("id", order.external_id)] = order
    return known


def _store_one(
    session: Session,
    record: OrderRecord,
    source: str,
    products: Mapping[str, str],
    report: OrderReport,
) -> Order:
    """Store one order in its own savepoint, or update it when it exists (by now)."""
    existing = _find_order(session, record)
    if existing is None:
        try:
            with session.begin_nested():
                order = _new_order(record, source, products)
                session.add(order)
                session.flush()
        except IntegrityError:
            existing = _find_order(session, record)
            if existing is None:
                raise
        else:
            report.created += 1
            return order
    _update_order(existing, record, report)
    return existing


def _update_order(existing: Order, record: OrderRecord, report: OrderReport) -> None:
    """Take a stored order's new payment and cancellation status from a record; count it."""
    changed = False
    if existing.external_id is None and record.external_id is not None:
        existing.external_id = record.external_id
        changed = True
    if record.financial_status and existing.financial_status != record.financial_status:
        existing.financial_status = record.financial_status
        changed = True
    if record.cancelled_at is not None and existing.cancelled_at != record.cancelled_at:
        existing.cancelled_at = record.cancelled_at
        changed = True
    if changed:
        report.updated += 1
    else:
        report.unchanged += 1


def _find_order(session: Session, record: OrderRecord) -> Order | None:
    """Return the stored order with this name or store id, if any."""
    condition = Order.name == record.name
    if record.external_id is not None:
        condition = or_(condition, Order.external_id == record.external_id)
    return session.scalars(select(Order).where(condition).order_by(Order.id).limit(1)).first()


def _products_by_sku(session: Session, skus: set[str | None]) -> dict[str, str]:
    """Return the product handle of each known SKU."""
    wanted = sorted(sku for sku in skus if sku)
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(Variant.sku, Variant.product_id).where(Variant.sku.in_(chunk))
        ).all()
        if not rows:
            continue
        handles: dict[int, str] = {
            product_id: handle
            for product_id, handle in session.execute(
                select(Product.id, Product.handle).where(
                    Product.id.in_({product_id for _sku, product_id in rows})
                )
            )
        }
        found.update({sku: handles[product_id] for sku, product_id in rows if sku})
    return found


def _new_order(record: OrderRecord, source: str, products: Mapping[str, str]) -> Order:
    """Build an order row with its lines."""
    return Order(
        name=record.name,
        external_id=record.external_id,
        address=record.address,
        ordered_at=record.ordered_at,
        currency=record.currency,
        total=record.total,
        financial_status=record.financial_status,
        cancelled_at=record.cancelled_at,
        source=source,
        lines=[
            OrderLine(
                position=position,
                sku=line.sku,
                product_handle=products.get(line.sku) if line.sku else None,
                title=line.title,
                quantity=line.quantity,
                price=line.price,
                attribution="",
            )
            for position, line in enumerate(record.lines, start=1)
        ],
    )


def import_orders(session: Session, path: str | Path) -> OrderReport:
    """Store the orders of a Shopify orders export, all or nothing (OrderImportError lists why)."""
    records = read_orders_csv(Path(path))
    return store_orders(session, records, "csv")


def forget_orders(session: Session, address: str) -> int:
    """Remove a normalized address from every order (erasure); return how many orders had it.

    The orders stay, with their attribution, as anonymous sales.
    """
    result = session.execute(
        update(Order)
        .where(Order.address == address)
        .values(address=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def is_sale(order: Order) -> bool:
    """Return True unless the order was cancelled, voided or refunded."""
    return order.cancelled_at is None and order.financial_status not in NOT_SALES


def order_summary(report: OrderReport) -> dict[str, Any]:
    """Return the counts of a report as the orders hook answers them."""
    return {
        "orders": report.orders,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
    }


# --------------------------------------------------------------------------- attribution


@dataclass(frozen=True)
class _Sent:
    """A restock email that reached (or left for) a person: the candidate for a sale."""

    message_pk: int
    campaign_id: int
    token: str
    sent_at: dt.datetime
    clicked_at: dt.datetime | None


#: Message statuses that never left: they cannot have led to a sale.
NOT_SENT = ("failed", "skipped")
#: Addresses / tokens per lookup query.
ATTRIBUTION_BATCH = 500


def attribute_orders(
    session: Session,
    since: dt.datetime | None = None,
    *,
    order_ids: Sequence[int] | None = None,
    window_days: float = 7.0,
) -> int:
    """Attribute order lines to the restock emails that led to them; return how many are sales.

    A line is a conversion of a restock email when it buys the email's product (any of
    its variants), the order's address is the recipient's, and the order came after the
    email was sent and within ``window_days`` of it (the latest such email wins). It is
    "direct" when the person clicked the email (a provider click event, or a page view
    carrying the email's ``et`` token) before ordering, "assisted" otherwise. Cancelled,
    voided and refunded orders are no sale. Runs again safely: the lines in scope
    (``since``: ordered then or later; ``order_ids``: those orders; neither: all) are
    recomputed, so late click events and later cancellations are taken into account.
    """
    query = select(OrderLine, Order).join(Order, OrderLine.order_id == Order.id)
    if since is not None:
        query = query.where(Order.ordered_at >= since)
    if order_ids is not None:
        if not order_ids:
            return 0
        query = query.where(Order.id.in_(list(order_ids)))
    rows = session.execute(query.order_by(OrderLine.id)).all()
    window = dt.timedelta(days=window_days)
    wanted = [
        (line, order)
        for line, order in rows
        if line.product_handle and order.address and is_sale(order)
    ]
    sent: dict[tuple[str, str], list[_Sent]] = {}
    addresses = sorted({order.address for _line, order in wanted if order.address})
    earliest = min((order.ordered_at for _line, order in wanted), default=None)
    for start in range(0, len(addresses), ATTRIBUTION_BATCH):
        chunk = addresses[start : start + ATTRIBUTION_BATCH]
        assert earliest is not None
        found = session.execute(
            select(
                Subscriber.address,
                Campaign.product_handle,
                CampaignMessage.id,
                CampaignMessage.campaign_id,
                CampaignMessage.message_id,
                CampaignMessage.sent_at,
                CampaignMessage.clicked_at,
            )
            .join(Campaign, CampaignMessage.campaign_id == Campaign.id)
            .join(Subscriber, CampaignMessage.subscriber_id == Subscriber.id)
            .where(
                Subscriber.address.in_(chunk),
                CampaignMessage.sent_at.is_not(None),
                CampaignMessage.sent_at >= earliest - window,
                CampaignMessage.status.not_in(NOT_SENT),
            )
        )
        for address, handle, pk, campaign_id, token, sent_at, clicked_at in found:
            assert sent_at is not None
            sent.setdefault((address, handle), []).append(
                _Sent(pk, campaign_id, token, sent_at, clicked_at)
            )
    # The email each line is a sale of: the latest one sent before the order, in the window.
    matches: dict[int, _Sent] = {}
    for line, order in wanted:
        assert order.address is not None and line.product_handle is not None
        candidates = [
            email
            for email in sent.get((order.address, line.product_handle), [])
            if email.sent_at <= order.ordered_at <= email.sent_at + window
        ]
        if candidates:
            matches[line.id] = max(candidates, key=lambda email: (email.sent_at, email.message_pk))
    visited = _first_visits(session, {email.token for email in matches.values()})
    now = utcnow()
    conversions = 0
    for line, order in rows:
        email = matches.get(line.id)
        attribution = ""
        if email is not None:
            clicks = [t for t in (email.clicked_at, visited.get(email.token)) if t is not None]
            clicked = any(moment <= order.ordered_at for moment in clicks)
            attribution = "direct" if clicked else "assisted"
            conversions += 1
        values = (
            (email.campaign_id, email.message_pk, attribution)
            if email is not None
            else (None, None, "")
        )
        if (line.campaign_id, line.campaign_message_id, line.attribution) != values:
            line.campaign_id, line.campaign_message_id, line.attribution = values
        line.attributed_at = now
    session.flush()
    return conversions


def _first_visits(session: Session, tokens: set[str]) -> dict[str, dt.datetime]:
    """Return the first page view time of each email link token (``et``) seen on the site."""
    wanted = sorted(tokens)
    first: dict[str, dt.datetime] = {}
    for start in range(0, len(wanted), ATTRIBUTION_BATCH):
        chunk = wanted[start : start + ATTRIBUTION_BATCH]
        rows = session.execute(
            select(PageView.engine_token, func.min(PageView.ts))
            .where(PageView.engine_token.in_(chunk))
            .group_by(PageView.engine_token)
        )
        first.update({token: ts for token, ts in rows if ts is not None})
    return first


def campaign_conversions(session: Session, campaign_id: int) -> dict[str, Any]:
    """Return a campaign's sales: people who converted, of them direct and assisted, revenue.

    A person (one email) counts once, as direct when any of their attributed lines is
    direct; revenue is the price times quantity of the attributed lines (the awaited
    product), not whole order totals.
    """
    rows = session.execute(
        select(
            OrderLine.campaign_message_id,
            OrderLine.attribution,
            OrderLine.price,
            OrderLine.quantity,
        ).where(OrderLine.campaign_id == campaign_id, OrderLine.attribution != "")
    )
    kinds: dict[int | None, set[str]] = {}
    revenue = Decimal("0.00")
    for message_pk, attribution, price, quantity in rows:
        kinds.setdefault(message_pk, set()).add(attribution)
        revenue += price * quantity
    direct = sum(1 for found in kinds.values() if "direct" in found)
    return {
        "converted": len(kinds),
        "direct": direct,
        "assisted": len(kinds) - direct,
        "revenue": revenue,
    }


def attribute_recent_orders(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> int:
    """The attribution job: re-attribute orders of the last window (late click events count)."""
    window_days = float(settings["ATTRIBUTION_WINDOW_DAYS"])
    since = now - dt.timedelta(days=window_days + 1)
    with db.session() as session:
        return attribute_orders(session, since, window_days=window_days)
