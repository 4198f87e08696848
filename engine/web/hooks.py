"""Webhooks: ``POST /hooks/inventory`` and ``POST /hooks/orders`` (signed with a shared secret).

Both check ``X-Engine-Signature`` (see ``engine.signatures``) over the raw body before
reading it: a missing, wrong or stale signature gets 401 and changes nothing; a hook whose
secret is not configured answers 503, so a sender retries instead of dropping the update.
A 2xx answer comes only after the change is committed.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from engine.db import get_db, utcnow
from engine.signatures import SIGNATURE_HEADER, SignatureError, verify_signature

bp = Blueprint("hooks", __name__)


def _error(status: int, message: str, **extra: Any) -> Response:
    """Return a JSON error answer."""
    response = jsonify({"error": message, **extra})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _signed_json(secret_setting: str) -> tuple[Any, Response | None]:
    """Verify the request's signature and parse its body; return (payload, error answer)."""
    settings = current_app.config
    secret = str(settings.get(secret_setting) or "")
    if not secret:
        return None, _error(503, f"{secret_setting} is not set; this hook is off")
    limit = int(settings["HOOK_MAX_BODY_BYTES"])
    if request.content_length is not None and request.content_length > limit:
        return None, _error(413, f"the body is larger than {limit} bytes")
    body = request.get_data(cache=True)
    if len(body) > limit:
        return None, _error(413, f"the body is larger than {limit} bytes")
    try:
        verify_signature(
            secret,
            request.headers.get(SIGNATURE_HEADER),
            body,
            utcnow(),
            float(settings["HOOK_TOLERANCE_SECONDS"]),
        )
    except SignatureError as exc:
        return None, _error(401, str(exc))
    try:
        return json.loads(body), None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, _error(400, f"the body is not JSON: {exc}")


@bp.post("/hooks/inventory")
def inventory_hook() -> Response:
    """Apply absolute stock levels, all items or none; stale and unknown SKUs are reported."""
    from engine.inventory import InventoryPayloadError, apply_items, parse_items

    payload, failure = _signed_json("INVENTORY_WEBHOOK_SECRET")
    if failure is not None:
        return failure
    settings = current_app.config
    try:
        items = parse_items(payload, utcnow(), float(settings["HOOK_TOLERANCE_SECONDS"]))
    except InventoryPayloadError as exc:
        return _error(
            400,
            "the delivery has errors; nothing was applied",
            errors=[error.as_dict() for error in exc.errors],
        )
    with get_db().session() as session:
        report = apply_items(session, items)
    response = jsonify(report.as_dict())
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/hooks/orders")
def orders_hook() -> Response:
    """Store one order (idempotent by its name and id) and attribute it to restock emails."""
    from engine.orders import (
        OrderImportError,
        attribute_orders,
        order_from_payload,
        order_summary,
        store_orders,
    )

    payload, failure = _signed_json("ORDERS_WEBHOOK_SECRET")
    if failure is not None:
        return failure
    try:
        record = order_from_payload(payload)
    except OrderImportError as exc:
        return _error(400, "the order has errors; nothing was stored", errors=exc.errors)
    window = float(current_app.config["ATTRIBUTION_WINDOW_DAYS"])
    with get_db().session() as session:
        report = store_orders(session, [record], "hook")
        conversions = attribute_orders(session, order_ids=report.stored, window_days=window)
    status = "created" if report.created else "updated" if report.updated else "unchanged"
    answer = {"status": status, "order": record.name, **order_summary(report)}
    response = jsonify({**answer, "attributed_lines": conversions})
    response.headers["Cache-Control"] = "no-store"
    return response



@bp.post("/hooks/sendgrid")
def sendgrid_hook() -> Response:
    """Apply a batch of SendGrid Event Webhook events (ECDSA-signed), each once by sg_event_id."""
    from engine.campaigns import SIGNATURE_HEADER as SENDGRID_SIGNATURE
    from engine.campaigns import TIMESTAMP_HEADER as SENDGRID_TIMESTAMP
    from engine.campaigns import apply_events
    from engine.campaigns import verify_signature as verify_sendgrid

    settings = current_app.config
    public_key = str(settings.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or "")
    if not public_key:
        return _error(503, "SENDGRID_WEBHOOK_PUBLIC_KEY is not set; this hook is off")
    limit = int(settings["HOOK_MAX_BODY_BYTES"])
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"the body is larger than {limit} bytes")
    body = request.get_data(cache=True)
    signature = request.headers.get(SENDGRID_SIGNATURE, "")
    timestamp = request.headers.get(SENDGRID_TIMESTAMP, "")
    if not verify_sendgrid(public_key, body, signature, timestamp):
        return _error(401, f"missing or invalid {SENDGRID_SIGNATURE}")
    try:
        events = json.loads(body)
    except ValueError:
        return _error(400, "the body is not JSON")
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        return _error(400, "the body must be a JSON array of event objects")
    with get_db().session() as session:
        report = apply_events(session, settings, events, utcnow())
    response = jsonify(
        {"received": report.received, "duplicates": report.duplicates,
         "suppressed": report.suppressed}
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response
