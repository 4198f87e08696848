"""The campaigns' scheduled jobs: restock detection, due waves and sending, reconciliation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from engine.campaigns.planning import DetectionReport, detect_restocks
from engine.campaigns.sending import (
    ReconcileReport,
    SendReport,
    WaveReport,
    reconcile,
    run_due_waves,
    send_queued,
)
from engine.db import Database


def restock_campaigns(
    db: Database, settings: Mapping[str, Any], now: dt.datetime
) -> DetectionReport:
    """Turn new restocks into campaigns (scheduled, or drafts awaiting approval)."""
    from engine.pages import make_environment

    with db.session() as session:
        return detect_restocks(session, settings, make_environment(settings), now)


def campaign_waves(
    db: Database, settings: Mapping[str, Any], now: dt.datetime
) -> tuple[WaveReport, SendReport]:
    """Plan due waves, then send every queued email of sending campaigns."""
    from engine.mail import make_backend

    waves = run_due_waves(db, settings, now)
    backend = make_backend(settings)
    try:
        sent = send_queued(db, settings, backend)
    finally:
        backend.close()
    return waves, sent


def campaign_reconcile(
    db: Database, settings: Mapping[str, Any], now: dt.datetime
) -> ReconcileReport:
    """Settle emails of unknown fate from SendGrid's events; queue again what stays unknown."""
    return reconcile(db, settings, now)
