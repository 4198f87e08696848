"""``engine campaigns``: list, show, preview, create, send, pause, resume, cancel, test."""

from __future__ import annotations

import uuid

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from engine.campaigns.emails import REJOIN_PLACEHOLDER, TOKEN_PLACEHOLDER, render_restock
from engine.campaigns.planning import active_campaign, create_campaign, require, wave_plan
from engine.campaigns.report import campaign_stats
from engine.campaigns.sending import advance, send_queued
from engine.campaigns.status import CampaignError, allowed_actions, transition
from engine.cli import fail, needs_schema
from engine.db import get_db, utcnow
from engine.models import Campaign


@click.group("campaigns", help="Restock campaigns.")
def campaigns_group() -> None:
    """Group the campaign commands."""


def _environment():  # type: ignore[no-untyped-def]
    from engine.pages import make_environment

    return make_environment(current_app.config)


@campaigns_group.command("list")
@with_appcontext
@needs_schema
def campaigns_list() -> None:
    """List campaigns, newest first."""
    with get_db().session() as session:
        rows = session.scalars(select(Campaign).order_by(Campaign.id.desc())).all()
        if not rows:
            click.echo("no campaigns yet")
        for c in rows:
            stats = campaign_stats(session, c.id)
            note = f"  ({c.reason})" if c.reason else ""
            click.echo(
                f"{c.id:>5}  {c.status:<9}  {c.product_handle}  "
                f"created {c.created_at:%Y-%m-%d %H:%M}  sent {stats.sent:,}{note}"
            )


@campaigns_group.command("show")
@click.argument("campaign_id", type=int)
@with_appcontext
@needs_schema
def campaigns_show(campaign_id: int) -> None:
    """Show a campaign: status, waves, sent, delivered, opened, clicked, converted, revenue."""
    with get_db().session() as session:
        try:
            c = require(session, campaign_id)
        except CampaignError as exc:
            fail(str(exc))
            return
        stats = campaign_stats(session, campaign_id)
        click.echo(f"campaign {c.id}: {c.product_handle} ({c.origin})")
        click.echo(f"status: {c.status}" + (f" ({c.reason})" if c.reason else ""))
        click.echo(f"skus: {', '.join(c.skus) if c.skus else 'every variant'}")
        if c.next_wave_at and c.status in ("scheduled", "sending"):
            click.echo(f"next wave: {c.next_wave_at:%Y-%m-%d %H:%M} UTC")
        click.echo(f"actions: {', '.join(allowed_actions(c.status)) or 'none'}")
        click.echo("waves:")
        if not stats.waves:
            click.echo("  none yet")
        for number, stock, people, at in stats.waves:
            units = "not limited" if stock is None else f"{stock:,} units"
            click.echo(f"  {number}: {at:%Y-%m-%d %H:%M} UTC, {units}, {people:,} people")
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_status.items())) or "none"
        click.echo(f"emails: {counts}")
        click.echo(f"sent: {stats.sent:,}")
        click.echo(f"delivered: {stats.delivered:,}")
        click.echo(f"opened: {stats.opened:,}")
        click.echo(f"clicked: {stats.clicked:,}")
        click.echo(
            f"bounced: {stats.bounced:,} (blocked, not held against them: {stats.blocked:,})"
        )
        orders = "" if stats.orders_imported else " (no orders imported)"
        click.echo(
            f"converted: {stats.converted:,} (direct {stats.direct:,}, "
            f"assisted {stats.assisted:,}){orders}"
        )
        click.echo(f"revenue: {stats.revenue:,.2f} {current_app.config['CURRENCY']}")
        click.echo(f"conversion rate: {stats.conversion_rate:.1%}")


@campaigns_group.command("preview")
@click.argument("campaign_id", type=int)
@with_appcontext
@needs_schema
def campaigns_preview(campaign_id: int) -> None:
    """Print the real email (subject, text, HTML) and the wave plan; send nothing."""
    settings = current_app.config
    with get_db().session() as session:
        try:
            c = require(session, campaign_id)
            email = render_restock(session, settings, _environment(), c)
        except CampaignError as exc:
            fail(str(exc))
            return
        plan = wave_plan(session, settings, c)
    click.echo(f"plan: {plan.describe()}")
    click.echo(f"subject: {email.subject}")
    click.echo("--- text ---")
    click.echo(email.text)
    click.echo("--- html ---")
    click.echo(email.html)


@campaigns_group.command("create")
@click.argument("sku")
@with_appcontext
@needs_schema
def campaigns_create(sku: str) -> None:
    """Create a draft campaign for a variant's waiters and its product's."""
    from engine.catalog import UnknownSKUError, variant_by_sku

    settings = current_app.config
    with get_db().session() as session:
        try:
            variant = variant_by_sku(session, sku)
            c = create_campaign(
                session, settings, _environment(), variant.product.handle, [sku], utcnow(),
                origin="manual", auto_send=False,
            )  # fmt: skip
        except (UnknownSKUError, CampaignError) as exc:
            fail(str(exc))
            return
        plan = wave_plan(session, settings, c)
        campaign_id = c.id
    click.echo(f"campaign {campaign_id} created as a draft: {plan.describe()}")
    click.echo(f"preview: engine campaigns preview {campaign_id}")
    click.echo(f"send:    engine campaigns send {campaign_id}")


def _act(campaign_id: int, action: str) -> str:
    with get_db().session() as session:
        try:
            c = require(session, campaign_id)
            if action == "send" and c.status == "draft":
                running = active_campaign(session, c.product_handle)
                if running is not None and running.id != c.id:
                    raise CampaignError(
                        f"product {c.product_handle!r} already has campaign {running.id}"
                    )
            status = transition(c, action, utcnow())
            if action in ("send", "resume") and c.next_wave_at is None:
                c.next_wave_at = utcnow()
            if action == "cancel":
                from engine.campaigns.sending import _skip_queued

                _skip_queued(session, c.id, "campaign cancelled")
        except CampaignError as exc:
            fail(str(exc))
            return ""
    return status


@campaigns_group.command("send")
@click.argument("campaign_id", type=int)
@click.option("--schedule-only", is_flag=True, help="Leave the sending to the scheduler.")
@with_appcontext
@needs_schema
def campaigns_send(campaign_id: int, schedule_only: bool) -> None:
    """Approve a draft: rebuild the product's pages, then send the first wave."""
    _act(campaign_id, "send")
    if schedule_only:
        click.echo(f"campaign {campaign_id} scheduled: the scheduler sends its first wave")
        return
    _run_now(campaign_id)


def _run_now(campaign_id: int) -> None:
    from engine.mail import MailError, make_backend

    settings = current_app.config
    db = get_db()
    waves = advance(db, settings, campaign_id, utcnow())
    try:
        backend = make_backend(settings)
    except MailError as exc:
        fail(str(exc))
        return
    try:
        report = send_queued(db, settings, backend, campaign_id=campaign_id)
    finally:
        backend.close()
    with db.session() as session:
        c = require(session, campaign_id)
        status, reason = c.status, c.reason
    click.echo(
        f"campaign {campaign_id}: {status}{f' ({reason})' if reason else ''}; "
        f"waves planned {waves.waves}, queued {waves.queued:,}, sent {report.sent:,}, "
        f"failed {report.failed:,}, deferred {report.deferred:,}, unknown {report.unknown:,}, "
        f"skipped {report.skipped:,}"
    )


@campaigns_group.command("pause")
@click.argument("campaign_id", type=int)
@with_appcontext
@needs_schema
def campaigns_pause(campaign_id: int) -> None:
    """Stop claiming new emails (those in flight finish)."""
    click.echo(f"campaign {campaign_id}: {_act(campaign_id, 'pause')}")


@campaigns_group.command("resume")
@click.argument("campaign_id", type=int)
@with_appcontext
@needs_schema
def campaigns_resume(campaign_id: int) -> None:
    """Carry on a paused campaign: the next due wave and the queued emails go out."""
    click.echo(f"campaign {campaign_id}: {_act(campaign_id, 'resume')}")


@campaigns_group.command("cancel")
@click.argument("campaign_id", type=int)
@with_appcontext
@needs_schema
def campaigns_cancel(campaign_id: int) -> None:
    """Cancel a campaign; people not yet emailed stay on the waitlist."""
    click.echo(f"campaign {campaign_id}: {_act(campaign_id, 'cancel')}")


@campaigns_group.command("test")
@click.argument("campaign_id", type=int)
@click.option("--to", "to", required=True, metavar="EMAIL", help="Where the copy goes.")
@with_appcontext
@needs_schema
def campaigns_test(campaign_id: int, to: str) -> None:
    """Send one real copy of the campaign's email to an address (nobody's signup is touched)."""
    from engine.mail import (
        MANAGE_URL_TOKEN,
        UNSUBSCRIBE_URL_TOKEN,
        MailError,
        Message,
        Recipient,
        make_backend,
    )

    settings = current_app.config
    with get_db().session() as session:
        try:
            c = require(session, campaign_id)
            email = render_restock(session, settings, _environment(), c)
        except CampaignError as exc:
            fail(str(exc))
            return
    home = str(settings["SITE_URL"]) + "/"
    message_id = f"test{uuid.uuid4().hex}"
    recipient = Recipient(
        email=to.strip(),
        substitutions={
            TOKEN_PLACEHOLDER: "test",
            UNSUBSCRIBE_URL_TOKEN: home,
            MANAGE_URL_TOKEN: home,
            REJOIN_PLACEHOLDER: home,
        },
        custom_args={"campaign": str(campaign_id), "kind": "restock-test"},
        message_id=message_id,
    )
    try:
        backend = make_backend(settings)
        message = Message(
            subject=f"[test] {email.subject}", html=email.html, text=email.text,
            sender=str(settings["MAIL_FROM"]), categories=("restock-test",),
        )  # fmt: skip
        (outcome,) = backend.send_batch(message, [recipient])
    except MailError as exc:
        fail(str(exc))
        return
    if not outcome.accepted:
        fail(f"the test copy was not sent ({outcome.status}): {outcome.reason}")
    click.echo(f"test copy of campaign {campaign_id} sent to {to} ({message_id})")
