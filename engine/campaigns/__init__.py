"""Restock campaigns: statuses and transitions, waves sized to the stock, at-most-once sending
through the mail backend with reconciliation from SendGrid's events, and the numbers."""

from __future__ import annotations

from engine.campaigns.emails import (
    REJOIN_PLACEHOLDER,
    TOKEN_PLACEHOLDER,
    personalize,
    read_rejoin_token,
    rejoin_url,
    render_restock,
    tracked_url,
)
from engine.campaigns.events import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EventReport,
    apply_events,
    verify_signature,
)
from engine.campaigns.planning import (
    DetectionReport,
    Waiter,
    WavePlan,
    active_campaign,
    create_campaign,
    detect_restocks,
    plan_wave,
    stock_units,
    waiting_people,
    wave_plan,
)
from engine.campaigns.report import CampaignStats, campaign_stats, rejoin
from engine.campaigns.sending import (
    ReconcileReport,
    SendReport,
    WaveReport,
    advance,
    mark_sent,
    reconcile,
    run_due_waves,
    send_queued,
)
from engine.campaigns.status import (
    ACTIVE,
    STATUSES,
    TRANSITIONS,
    CampaignError,
    allowed_actions,
    transition,
)

__all__ = [
    "ACTIVE",
    "REJOIN_PLACEHOLDER",
    "SIGNATURE_HEADER",
    "STATUSES",
    "TIMESTAMP_HEADER",
    "TOKEN_PLACEHOLDER",
    "TRANSITIONS",
    "CampaignError",
    "CampaignStats",
    "DetectionReport",
    "EventReport",
    "ReconcileReport",
    "SendReport",
    "Waiter",
    "WavePlan",
    "WaveReport",
    "active_campaign",
    "advance",
    "allowed_actions",
    "apply_events",
    "campaign_stats",
    "create_campaign",
    "detect_restocks",
    "mark_sent",
    "personalize",
    "plan_wave",
    "read_rejoin_token",
    "reconcile",
    "rejoin",
    "rejoin_url",
    "render_restock",
    "run_due_waves",
    "send_queued",
    "stock_units",
    "tracked_url",
    "transition",
    "verify_signature",
    "waiting_people",
    "wave_plan",
]
