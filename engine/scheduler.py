"""Scheduled jobs (APScheduler 3) whose effects are made safe by leases in the database.

Every scheduler (``engine worker``, or the one inside ``engine serve``) fires every registered
job on its interval, but a run does nothing until it has taken the job's lease in
``job_lock`` with one conditional UPDATE. So however many processes share the database, one
job never runs twice at once, and a job another process started less than 90 % of its
interval ago is skipped. The holder renews its lease with every heartbeat; a holder that
dies loses it ``SCHEDULER_LEASE_SECONDS`` later. Each scheduler writes a heartbeat row that
``/healthz`` reads. The app factory never starts a scheduler.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_SCHEDULER_STARTED, SchedulerEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler, SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from engine.campaigns.jobs import (
    campaign_reconcile,
    campaign_send,
    campaign_waves,
    restock_campaigns,
)
from engine.db import Database, utcnow
from engine.feed import refresh_catalog_feed
from engine.mail import make_backend
from engine.mailqueue import DrainReport, drain, purge_sent
from engine.models import JobLock, SchedulerHeartbeat
from engine.orders import attribute_recent_orders
from engine.pageviews import Maintenance, maintain
from engine.waitlist import PurgeReport, purge_unconfirmed

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
JobFunction = Callable[[Database, Mapping[str, Any], dt.datetime], object]

#: A run is skipped when the job started elsewhere less than this share of its interval ago,
#: so N schedulers run an hourly job about once an hour, not N times; the slack keeps one
#: scheduler's own slightly early or late firings from skipping themselves.
DUE_FRACTION = 0.9
#: Heartbeat rows of schedulers gone longer than this are deleted.
HEARTBEAT_ROWS_KEPT = dt.timedelta(days=7)
#: Longest error text kept in ``job_lock.last_error``.
MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class ScheduledJob:
    """A job: its name (the lease's key), the setting with its interval in seconds, its work.

    A ``shared`` job runs in every scheduler at once, without a lease: its work claims what
    it does row by row (sending a campaign's emails), so overlapping runs split the work.
    """

    name: str
    interval_setting: str
    run: JobFunction
    shared: bool = False

    def interval(self, settings: Mapping[str, Any]) -> float:
        """Return the seconds between runs (0 or less: not scheduled)."""
        return float(settings[self.interval_setting])


def send_queued_mail(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> DrainReport:
    """Send the due messages of the mail queue through the ``MAIL_BACKEND``."""
    return drain(db, settings, make_backend(settings))


def purge_waitlists(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> PurgeReport:
    """Delete signups left unconfirmed for ``WAITLIST_UNCONFIRMED_DAYS``."""
    with db.session() as session:
        return purge_unconfirmed(session, now, days=int(settings["WAITLIST_UNCONFIRMED_DAYS"]))


def maintain_page_views(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> Maintenance:
    """Roll up finished days of page views; purge raw views, salts and visits past retention."""
    with db.session() as session:
        return maintain(session, settings, now)


def purge_sent_mail(db: Database, settings: Mapping[str, Any], now: dt.datetime) -> int:
    """Delete emails sent more than ``MAIL_SENT_RETENTION_DAYS`` ago."""
    retention = dt.timedelta(days=float(settings["MAIL_SENT_RETENTION_DAYS"]))
    with db.session() as session:
        return purge_sent(session, retention)


#: Every job a scheduler runs. Adding one is one line: a name, the setting that holds its
#: interval in seconds (add it to DEFAULTS), and a function(db, settings, now) that opens
#: and commits its own sessions.
JOBS: tuple[ScheduledJob, ...] = (
    ScheduledJob("mail-queue", "MAIL_QUEUE_INTERVAL_SECONDS", send_queued_mail),
    ScheduledJob("waitlist-purge", "WAITLIST_PURGE_INTERVAL_SECONDS", purge_waitlists),
    ScheduledJob("mail-purge", "MAIL_PURGE_INTERVAL_SECONDS", purge_sent_mail),
    ScheduledJob("page-views", "TRACKING_MAINTENANCE_INTERVAL_SECONDS", maintain_page_views),
    ScheduledJob("catalog-feed", "CATALOG_FEED_INTERVAL_SECONDS", refresh_catalog_feed),
    ScheduledJob("attribution", "ATTRIBUTION_INTERVAL_SECONDS", attribute_recent_orders),
    ScheduledJob("restock-campaigns", "RESTOCK_CAMPAIGNS_INTERVAL_SECONDS", restock_campaigns),
    ScheduledJob("campaign-waves", "CAMPAIGN_WAVES_INTERVAL_SECONDS", campaign_waves),
    ScheduledJob("campaign-send", "CAMPAIGN_WAVES_INTERVAL_SECONDS", campaign_send, shared=True),
    ScheduledJob("campaign-reconcile", "CAMPAIGN_RECONCILE_INTERVAL_SECONDS", campaign_reconcile),
)


def new_owner() -> str:
    """Return a name for one scheduler, unique across hosts and restarts."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(4)}"


def acquire_lease(
    session: Session,
    name: str,
    owner: str,
    now: dt.datetime,
    *,
    lease_seconds: float,
    min_gap_seconds: float = 0.0,
) -> bool:
    """Take a job's lease when nobody holds it and it started ``min_gap_seconds`` ago or more.

    One conditional UPDATE decides: PostgreSQL re-checks the WHERE clause after waiting for
    a concurrent taker's row lock, SQLite lets one writer in at a time, so exactly one of
    several concurrent takers gets ``rowcount`` 1.
    """
    dialect = session.get_bind().dialect.name
    insert_row = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert_row(JobLock)
        .values(name=name, owner="", last_error="")
        .on_conflict_do_nothing(index_elements=["name"])
    )
    taken = session.execute(
        update(JobLock)
        .where(
            JobLock.name == name,
            or_(JobLock.lease_until.is_(None), JobLock.lease_until < now),
            or_(
                JobLock.last_started_at.is_(None),
                JobLock.last_started_at <= now - dt.timedelta(seconds=min_gap_seconds),
            ),
        )
        .values(
            owner=owner,
            lease_until=now + dt.timedelta(seconds=lease_seconds),
            last_started_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(taken.rowcount) == 1  # type: ignore[attr-defined]


def release_lease(
    session: Session, name: str, owner: str, now: dt.datetime, error: str = ""
) -> bool:
    """Give a job's lease back and record the run; False when another owner took it meanwhile."""
    released = session.execute(
        update(JobLock)
        .where(JobLock.name == name, JobLock.owner == owner, JobLock.lease_until.is_not(None))
        .values(lease_until=None, last_finished_at=now, last_error=error[:MAX_ERROR_LENGTH])
        .execution_options(synchronize_session=False)
    )
    return int(released.rowcount) == 1  # type: ignore[attr-defined]


def renew_leases(session: Session, owner: str, now: dt.datetime, lease_seconds: float) -> int:
    """Extend every lease this owner still holds; return how many."""
    renewed = session.execute(
        update(JobLock)
        .where(JobLock.owner == owner, JobLock.lease_until >= now)
        .values(lease_until=now + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return int(renewed.rowcount)  # type: ignore[attr-defined]


def beat(session: Session, owner: str, now: dt.datetime, role: str = "worker") -> None:
    """Record that a scheduler is alive now; forget schedulers gone for a week."""
    updated = session.execute(
        update(SchedulerHeartbeat)
        .where(SchedulerHeartbeat.owner == owner)
        .values(beat_at=now, stopped_at=None)
        .execution_options(synchronize_session=False)
    )
    if int(updated.rowcount) == 0:  # type: ignore[attr-defined]
        session.execute(
            insert(SchedulerHeartbeat).values(
                owner=owner,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                role=role,
                started_at=now,
                beat_at=now,
            )
        )
    session.execute(
        delete(SchedulerHeartbeat)
        .where(SchedulerHeartbeat.beat_at < now - HEARTBEAT_ROWS_KEPT)
        .execution_options(synchronize_session=False)
    )


def mark_stopped(session: Session, owner: str, now: dt.datetime) -> None:
    """Record that a scheduler shut down cleanly (it is not dead, just gone)."""
    session.execute(
        update(SchedulerHeartbeat)
        .where(SchedulerHeartbeat.owner == owner)
        .values(stopped_at=now)
        .execution_options(synchronize_session=False)
    )


def _iso(value: dt.datetime | None) -> str | None:
    """Return a timestamp as ISO 8601 (UTC), or None."""
    return value.isoformat(timespec="seconds") if value is not None else None


def scheduler_status(
    session: Session, settings: Mapping[str, Any], now: dt.datetime
) -> dict[str, Any]:
    """Return the ``/healthz`` scheduler check: heartbeat state, its age, and each job's last run.

    States: ``running`` (a scheduler beat within ``SCHEDULER_HEARTBEAT_MAX_AGE_SECONDS``),
    ``stale`` (one that never shut down cleanly stopped beating: dead), ``stopped`` (every
    scheduler shut down cleanly), ``never``. Not ok when stale, and when stopped or never
    while ``HEALTH_REQUIRE_SCHEDULER`` is on.
    """
    max_age = float(settings["SCHEDULER_HEARTBEAT_MAX_AGE_SECONDS"])
    rows = session.scalars(
        select(SchedulerHeartbeat).order_by(SchedulerHeartbeat.beat_at.desc())
    ).all()
    live = [row for row in rows if row.stopped_at is None]
    fresh = [row for row in live if (now - row.beat_at).total_seconds() <= max_age]
    if fresh:
        state = "running"
    elif live:
        state = "stale"
    elif rows:
        state = "stopped"
    else:
        state = "never"
    required = bool(settings["HEALTH_REQUIRE_SCHEDULER"])
    ok = state == "running" or (state in ("stopped", "never") and not required)
    newest = live[0] if live else rows[0] if rows else None
    jobs = {
        lock.name: {
            "running": lock.lease_until is not None and lock.lease_until >= now,
            "last_started_at": _iso(lock.last_started_at),
            "last_finished_at": _iso(lock.last_finished_at),
            "last_error": lock.last_error,
        }
        for lock in session.scalars(select(JobLock).order_by(JobLock.name))
    }
    return {
        "ok": ok,
        "state": state,
        "schedulers": len(fresh),
        "last_beat_at": _iso(newest.beat_at) if newest else "never",
        "age_seconds": round((now - newest.beat_at).total_seconds(), 1) if newest else None,
        "max_age_seconds": max_age,
        "required": required,
        "jobs": jobs,
    }


@dataclass(frozen=True)
class JobRun:
    """What one firing of a job did: ``done``, ``failed`` or ``skipped`` (lease not taken)."""

    name: str
    outcome: str
    seconds: float = 0.0
    error: str = ""
    result: object = None


def run_job(
    db: Database,
    settings: Mapping[str, Any],
    job: ScheduledJob,
    owner: str,
    *,
    clock: Clock = utcnow,
    force: bool = False,
) -> JobRun:
    """Run a job once if its lease can be taken (``force``: even if it ran recently); never raise.

    A failure is logged and kept in ``job_lock.last_error``; the scheduler carries on.
    """
    now = clock()
    if job.shared:
        return _run_body(db, settings, job, now)  # no lease, nothing kept in job_lock
    lease = float(settings["SCHEDULER_LEASE_SECONDS"])
    gap = 0.0 if force else max(0.0, job.interval(settings)) * DUE_FRACTION
    try:
        with db.session() as session:
            taken = acquire_lease(
                session, job.name, owner, now, lease_seconds=lease, min_gap_seconds=gap
            )
    except SQLAlchemyError as exc:
        log.warning("job %s not run: the database is unavailable (%s)", job.name, exc)
        return JobRun(job.name, "skipped", error=str(exc))
    if not taken:
        return JobRun(job.name, "skipped")
    run = _run_body(db, settings, job, now)
    error, seconds = run.error, run.seconds
    try:
        with db.session() as session:
            kept = release_lease(session, job.name, owner, clock(), error)
        if not kept:
            log.warning(
                "job %s ran %.1f s and outlived its lease (held by another scheduler now)",
                job.name,
                seconds,
            )
    except SQLAlchemyError as exc:
        # The lease runs out by itself; only this run's record is lost.
        log.warning("job %s: could not record the run (%s)", job.name, exc)
    log.debug("job %s %s in %.2f s", job.name, run.outcome, seconds)
    return run


def _run_body(
    db: Database, settings: Mapping[str, Any], job: ScheduledJob, now: dt.datetime
) -> JobRun:
    """Run a job's work once; a failure is logged and returned, never raised."""
    started = time.monotonic()
    try:
        value = job.run(db, settings, now)
    except Exception as exc:
        log.exception("job %s failed", job.name)
        error = f"{type(exc).__name__}: {exc}"
        return JobRun(job.name, "failed", time.monotonic() - started, error)
    return JobRun(job.name, "done", time.monotonic() - started, result=value)


class JobScheduler:
    """An APScheduler running the registered jobs under database leases, with a heartbeat."""

    def __init__(
        self,
        db: Database,
        settings: Mapping[str, Any],
        *,
        role: str,
        blocking: bool = False,
        jobs: Sequence[ScheduledJob] = JOBS,
    ) -> None:
        self.db = db
        self.settings = settings
        self.role = role
        self.owner = new_owner()
        self._stop_lock = threading.Lock()
        self._stopping = False
        executors = {
            "default": ThreadPoolExecutor(max(1, len(jobs))),
            # Its own thread, so long jobs never delay the heartbeat and lease renewal.
            "heartbeat": ThreadPoolExecutor(1),
        }
        job_defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        kind = BlockingScheduler if blocking else BackgroundScheduler
        self.scheduler: BaseScheduler = kind(
            executors=executors, job_defaults=job_defaults, timezone=dt.UTC
        )
        start = dt.datetime.now(dt.UTC)
        self.scheduler.add_job(
            self.heartbeat,
            IntervalTrigger(seconds=float(settings["SCHEDULER_HEARTBEAT_SECONDS"])),
            id="heartbeat",
            name="heartbeat",
            executor="heartbeat",
            next_run_time=start,
        )
        self.jobs: list[ScheduledJob] = []
        for job in jobs:
            interval = job.interval(settings)
            if interval <= 0:
                log.info("job %s is off (%s is 0)", job.name, job.interval_setting)
                continue
            # Every job fires at start: the lease's last start decides whether it is due, so
            # restarts more often than a job's interval cannot starve it.
            self.scheduler.add_job(
                run_job,
                IntervalTrigger(seconds=interval),
                args=(db, settings, job, self.owner),
                id=job.name,
                name=job.name,
                next_run_time=start,
            )
            self.jobs.append(job)

    def heartbeat(self) -> None:
        """Record this scheduler as alive and renew the leases of the jobs it is running."""
        now = utcnow()
        try:
            with self.db.session() as session:
                beat(session, self.owner, now, self.role)
                renew_leases(
                    session, self.owner, now, float(self.settings["SCHEDULER_LEASE_SECONDS"])
                )
        except SQLAlchemyError as exc:
            log.warning("scheduler heartbeat not recorded: %s", exc)

    def start(self) -> None:
        """Start the jobs (a blocking scheduler returns only after ``stop``)."""
        names = ", ".join(job.name for job in self.jobs) or "none"
        log.info("scheduler %s starting; jobs: %s", self.owner, names)
        self.scheduler.start()

    def stop(self, wait: bool = True) -> None:
        """Stop firing jobs, let running ones finish (``wait``), and record a clean stop."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        try:
            # Paused first, so the loop cannot fire anything into executors being shut down.
            self.scheduler.pause()
            self.scheduler.shutdown(wait=wait)
        except SchedulerNotRunningError:
            pass
        try:
            with self.db.session() as session:
                mark_stopped(session, self.owner, utcnow())
        except SQLAlchemyError as exc:
            log.warning("scheduler stop not recorded: %s", exc)
        log.info("scheduler %s stopped", self.owner)


def run_worker(db: Database, settings: Mapping[str, Any]) -> None:
    """Run the scheduler in the foreground until SIGTERM or SIGINT, then stop cleanly."""
    worker = JobScheduler(db, settings, role="worker", blocking=True)
    stopper: list[threading.Thread] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopper:
            log.info("still stopping: waiting for running jobs to finish")
            return
        log.info("%s received: stopping after running jobs finish", signal.Signals(signum).name)
        # shutdown() takes the scheduler's locks, which this (main) thread may hold right now.
        thread = threading.Thread(target=worker.stop, name="scheduler-stop")
        stopper.append(thread)
        thread.start()

    def install_handlers(_event: SchedulerEvent) -> None:
        # Only once the scheduler runs: a stop before that would find nothing to stop, and
        # the scheduler would then start and never return.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    worker.scheduler.add_listener(install_handlers, EVENT_SCHEDULER_STARTED)
    try:
        worker.start()
    finally:
        for thread in stopper:
            thread.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
