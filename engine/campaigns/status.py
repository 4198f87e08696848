"""A campaign's statuses and the one table of legal transitions between them."""

from __future__ import annotations

import datetime as dt

from engine.models import Campaign

STATUSES = ("draft", "scheduled", "sending", "paused", "finished", "cancelled")
#: A campaign in one of these holds its product: a new restock starts no second campaign.
ACTIVE = ("draft", "scheduled", "sending", "paused")

#: (action, from status) -> to status. Anything not listed is refused.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("send", "draft"): "scheduled",  # approved: the first wave goes out when due
    ("start", "scheduled"): "sending",  # the first wave is planned
    ("start", "sending"): "sending",  # a later wave
    ("pause", "scheduled"): "paused",
    ("pause", "sending"): "paused",
    ("resume", "paused"): "sending",  # the next due wave (or the first) goes out
    ("finish", "scheduled"): "finished",  # nobody left to tell, or sold out again
    ("finish", "sending"): "finished",
    ("finish", "paused"): "finished",
    ("cancel", "draft"): "cancelled",
    ("cancel", "scheduled"): "cancelled",
    ("cancel", "sending"): "cancelled",
    ("cancel", "paused"): "cancelled",
}


class CampaignError(ValueError):
    """Something a marketer asked of a campaign that cannot be done; the message says why."""


def allowed_actions(status: str) -> list[str]:
    """Return the actions a campaign in this status accepts."""
    return sorted({action for action, source in TRANSITIONS if source == status})


def transition(campaign: Campaign, action: str, now: dt.datetime, reason: str = "") -> str:
    """Apply an action to a campaign by the table, or raise ``CampaignError``; return the status."""
    target = TRANSITIONS.get((action, campaign.status))
    if target is None:
        allowed = ", ".join(allowed_actions(campaign.status)) or "none (it is over)"
        raise CampaignError(
            f"campaign {campaign.id} is {campaign.status}: cannot {action} it (allowed: {allowed})"
        )
    campaign.status = target
    campaign.updated_at = now
    if reason or target in ("scheduled", "sending"):
        campaign.reason = reason
    if target == "sending" and campaign.started_at is None:
        campaign.started_at = now
    if target in ("finished", "cancelled"):
        campaign.finished_at = now
        campaign.next_wave_at = None
    return target
