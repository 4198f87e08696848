"""The campaigns' scheduled jobs: restock detection, due waves, sending, reconciliation."""

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


def campaign_waves(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> WaveReport:
    """Plan the waves that are due (stock read again, the next people queued)."""
    return run_due_waves(db, settings, now)


def campaign_send(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> SendReport:
    """Send every queued email of sending campaigns, claiming batches so workers never overlap."""
    from engine.mail import make_backend

    backend = make_backend(settings)
    try:
        return send_queued(db, settings, backend)
    finally:
        backend.close()


def campaign_reconcile(
    db: Database, settings: Mapping[str, Any], now: dt.datetime
) -> ReconcileReport:
    """Settle emails of unknown fate from SendGrid's events; queue again what stays unknown."""
    return reconcile(db, settings, now)
