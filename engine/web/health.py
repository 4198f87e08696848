"""``GET /healthz``: is the service able to do its job right now."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from engine.db import get_db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Report the database's reachability; 503 when something is down."""
    checks: dict[str, Any] = {}
    healthy = True
    try:
        with get_db().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except SQLAlchemyError as exc:
        healthy = False
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    body = {"status": "ok" if healthy else "unavailable", "checks": checks}
    response = jsonify(body)
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response
