"""``GET /healthz``: is the service able to do its job right now."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from engine.db import Database, get_db, utcnow

bp = Blueprint("health", __name__)

#: A check: (database, settings, now) -> a JSON-able dict with at least ``"ok": bool``.
HealthCheck = Callable[[Database, Mapping[str, Any], dt.datetime], dict[str, Any]]


def check_database(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Return whether the database answers a query."""
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return {"ok": True}


def check_scheduler(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Return the newest scheduler heartbeat's state and each job's last run."""
    from engine.scheduler import scheduler_status  # APScheduler: imported only when checked

    with db.sessions() as session:
        return scheduler_status(session, settings, now)


def check_mail_queue(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Return the mail queue's backlog; not ok when a due email waited too long."""
    from engine.mailqueue import queue_backlog

    max_delay = float(settings["MAIL_QUEUE_MAX_DELAY_SECONDS"])
    with db.sessions() as session:
        backlog = queue_backlog(session, now)
    return {
        "ok": backlog["oldest_due_seconds"] <= max_delay,
        **backlog,
        "max_delay_seconds": max_delay,
    }


def check_campaigns(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Return campaigns that should be moving but are not; not ok when any is stuck.

    Stuck: a due wave not started, an email due to be sent (or reconciled) and not touched,
    or an in-flight batch whose lease ran out, each for longer than the stuck window.
    """
    from sqlalchemy import or_, select

    from engine.models import Campaign, CampaignMessage

    window = float(settings["CAMPAIGN_STUCK_AFTER_SECONDS"])
    limit = now - dt.timedelta(seconds=window)
    running = ("scheduled", "sending")
    overdue_waves = select(Campaign.id).where(
        Campaign.status.in_(running), Campaign.next_wave_at < limit
    )
    stalled_emails = (
        select(CampaignMessage.campaign_id)
        .join(Campaign, Campaign.id == CampaignMessage.campaign_id)
        .where(
            Campaign.status == "sending",
            or_(
                CampaignMessage.status.in_(("queued", "unknown"))
                & (CampaignMessage.next_attempt_at < limit),
                (CampaignMessage.status == "sending") & (CampaignMessage.leased_until < limit),
            ),
        )
        .distinct()
    )
    with db.sessions() as session:
        stuck = sorted(set(session.scalars(overdue_waves)) | set(session.scalars(stalled_emails)))
    return {"ok": not stuck, "stuck": stuck, "stuck_after_seconds": window}


#: Every check, in order; the response is 503 when any is not ok. A part adds its own with
#: one entry here. "database" goes first: when it
#: fails, the others are reported as not run.
CHECKS: dict[str, HealthCheck] = {
    "database": check_database,
    "scheduler": check_scheduler,
    "mail_queue": check_mail_queue,
    "campaigns": check_campaigns,
}


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Report the database, scheduler, mail queue and campaigns; 503 when something is down."""
    db = get_db()
    settings = current_app.config
    now = utcnow()
    checks: dict[str, Any] = {}
    for name, check in CHECKS.items():
        if name != "database" and not checks["database"]["ok"]:
            checks[name] = {"ok": False, "error": "not checked: the database is unreachable"}
            continue
        try:
            checks[name] = check(db, settings, now)
        except SQLAlchemyError as exc:
            # The class name only: messages can carry the database URL.
            checks[name] = {"ok": False, "error": type(exc).__name__}
    healthy = all(check["ok"] for check in checks.values())
    body = {
        "status": "ok" if healthy else "unavailable",
        "time": now.isoformat(timespec="seconds"),
        "checks": checks,
    }
    response = jsonify(body)
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response
