"""Factories for campaign tests: products with variants, confirmed waiting people."""

from __future__ import annotations

import datetime as dt
import secrets
from decimal import Decimal

from sqlalchemy.orm import Session

from engine.catalog import set_stock
from engine.models import Product, Signup, Subscriber, Variant

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def product(session: Session, handle: str = "trail-tent", skus: tuple[str, ...] = ("TENT-1",),
            stock: int = 0) -> Product:  # fmt: skip
    """Add an active product whose variants start with ``stock`` units (sold out at 0)."""
    item = Product(handle=handle, title=handle.replace("-", " ").title(), option_names=["Size"])
    session.add(item)
    for position, sku in enumerate(skus, start=1):
        variant = Variant(
            product=item, sku=sku, option_key=sku, option_values=[sku] if len(skus) > 1 else [],
            position=position, price=Decimal("129.00"), inventory_tracked=True,
            inventory_policy="deny",
        )  # fmt: skip
        session.add(variant)
        set_stock(session, variant, stock, source="import", new=True)
    session.flush()
    return item


def waiting(session: Session, handle: str, count: int, sku: str = "", quantity: int = 1,
            start: int = 0, status: str = "confirmed") -> list[Subscriber]:  # fmt: skip
    """Add ``count`` people waiting for a product (or a SKU), the earliest first."""
    people = []
    for number in range(start, start + count):
        address = f"person{number}@example.org"
        subscriber = Subscriber(address=address, email=address, token_key=secrets.token_hex(6))
        session.add(subscriber)
        session.flush()
        add_signup(session, subscriber, handle, sku, quantity, T0 + dt.timedelta(minutes=number),
                   status)  # fmt: skip
        people.append(subscriber)
    return people


def add_signup(session: Session, subscriber: Subscriber, handle: str, sku: str, quantity: int,
               at: dt.datetime, status: str = "confirmed") -> Signup:  # fmt: skip
    """Add one signup for a person."""
    signup = Signup(
        subscriber_id=subscriber.id, product_handle=handle, sku=sku, status=status,
        quantity=quantity, signed_up_at=at, pending_since=at, consent_version="v1",
        consent_at=at, confirmed_at=at if status == "confirmed" else None,
    )  # fmt: skip
    session.add(signup)
    session.flush()
    return signup
