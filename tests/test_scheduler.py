"""Scheduled jobs: database leases, failures, heartbeats, /healthz, `engine worker` and `serve`."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from engine import create_app
from engine.db import Database, utcnow
from engine.mail import read_outbox
from engine.mailqueue import enqueue
from engine.models import JobLock, MailMessage, PageView, SchedulerHeartbeat
from engine.scheduler import (
    JOBS,
    JobScheduler,
    ScheduledJob,
    acquire_lease,
    beat,
    mark_stopped,
    release_lease,
    renew_leases,
    run_job,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def settings_of(app: Flask, **overrides: Any) -> dict[str, Any]:
    """Return the app's settings with some replaced."""
    return {**app.config, "TEST_JOB_SECONDS": 60, **overrides}


def lock_of(db: Database, name: str) -> JobLock:
    """Return a job's lease row."""
    with db.session() as session:
        return session.scalars(select(JobLock).where(JobLock.name == name)).one()


def heartbeats(db: Database) -> list[SchedulerHeartbeat]:
    """Return every heartbeat row."""
    with db.session() as session:
        return list(session.scalars(select(SchedulerHeartbeat)))


def clock_at(moment: dt.datetime) -> Callable[[], dt.datetime]:
    """Return a clock stopped at ``moment``."""
    return lambda: moment


def queue_one(db: Database, key: str = "test:1", **extra: Any) -> None:
    """Queue one email."""
    with db.session() as session:
        enqueue(
            session,
            idempotency_key=key,
            to="ann@example.org",
            subject="Back in stock",
            html="<p>It is back.</p>",
            text="It is back.",
            **extra,
        )


class Recorder:
    """A job body that counts its runs and how many overlapped."""

    def __init__(self, seconds: float = 0.0, error: Exception | None = None) -> None:
        self.seconds = seconds
        self.error = error
        self.runs = 0
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    def __call__(self, db: Database, settings: Mapping[str, Any], now: dt.datetime) -> int:
        with self.lock:
            self.runs += 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            time.sleep(self.seconds)
            if self.error is not None:
                raise self.error
            return self.runs
        finally:
            with self.lock:
                self.active -= 1


# --- leases -----------------------------------------------------------------------------------


def test_lease_is_held_until_released_or_expired(db: Database) -> None:
    with db.session() as session:
        assert acquire_lease(session, "job", "a", T0, lease_seconds=60)
    with db.session() as session:
        assert not acquire_lease(
            session, "job", "b", T0 + dt.timedelta(seconds=59), lease_seconds=60
        )
    # a crashed: its lease runs out and b takes the job over
    with db.session() as session:
        assert acquire_lease(session, "job", "b", T0 + dt.timedelta(seconds=61), lease_seconds=60)
    with db.session() as session:
        assert not release_lease(session, "job", "a", T0 + dt.timedelta(seconds=70), "late")
        assert release_lease(session, "job", "b", T0 + dt.timedelta(seconds=75))
    lock = lock_of(db, "job")
    assert lock.owner == "b" and lock.lease_until is None and lock.last_error == ""
    assert lock.last_started_at == T0 + dt.timedelta(seconds=61)
    assert lock.last_finished_at == T0 + dt.timedelta(seconds=75)


def test_held_leases_are_renewed_released_ones_are_not(db: Database) -> None:
    with db.session() as session:
        acquire_lease(session, "one", "me", T0, lease_seconds=60)
        acquire_lease(session, "two", "me", T0, lease_seconds=60)
        acquire_lease(session, "theirs", "them", T0, lease_seconds=60)
        release_lease(session, "two", "me", T0)
    with db.session() as session:
        assert renew_leases(session, "me", T0 + dt.timedelta(seconds=30), 60) == 1
    assert lock_of(db, "one").lease_until == T0 + dt.timedelta(seconds=90)
    assert lock_of(db, "two").lease_until is None
    assert lock_of(db, "theirs").lease_until == T0 + dt.timedelta(seconds=60)
    # a holder stalled past its lease does not get it back by renewing
    with db.session() as session:
        assert renew_leases(session, "them", T0 + dt.timedelta(seconds=61), 60) == 0


def test_two_competing_holders_run_a_job_once(app: Flask, config: dict[str, Any]) -> None:
    # Two Database objects: two connection pools, as two worker processes would have.
    databases = [Database(config["DATABASE_URL"]), Database(config["DATABASE_URL"])]
    body = Recorder(seconds=0.3)
    job = ScheduledJob("contested", "TEST_JOB_SECONDS", body)
    settings = settings_of(app)
    rounds = 4
    outcomes: list[str] = []
    try:
        for _ in range(rounds):
            barrier = threading.Barrier(2)

            def contend(database: Database, owner: str, barrier: threading.Barrier) -> None:
                barrier.wait()
                # force: due or not, only the lease may keep the second one out
                outcomes.append(run_job(database, settings, job, owner, force=True).outcome)

            threads = [
                threading.Thread(target=contend, args=(database, f"worker-{n}", barrier))
                for n, database in enumerate(databases)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        for database in databases:
            database.dispose()
    assert sorted(outcomes) == ["done"] * rounds + ["skipped"] * rounds
    assert body.runs == rounds and body.most_active == 1


def test_a_crashed_holders_expired_lease_is_taken_over(app: Flask, db: Database) -> None:
    body = Recorder()
    job = ScheduledJob("purge", "TEST_JOB_SECONDS", body)
    settings = settings_of(app, SCHEDULER_LEASE_SECONDS=60)
    with db.session() as session:
        assert acquire_lease(session, "purge", "dead", T0, lease_seconds=60)
    early = run_job(db, settings, job, "alive", clock=clock_at(T0 + dt.timedelta(seconds=30)))
    assert early.outcome == "skipped" and body.runs == 0
    later = run_job(db, settings, job, "alive", clock=clock_at(T0 + dt.timedelta(seconds=61)))
    assert later.outcome == "done" and body.runs == 1
    lock = lock_of(db, "purge")
    assert lock.owner == "alive" and lock.lease_until is None
    assert lock.last_finished_at == T0 + dt.timedelta(seconds=61)


def test_a_job_started_recently_elsewhere_waits_for_its_interval(app: Flask, db: Database) -> None:
    body = Recorder()
    job = ScheduledJob("hourly", "TEST_JOB_SECONDS", body)
    settings = settings_of(app, TEST_JOB_SECONDS=3600)
    assert run_job(db, settings, job, "a", clock=clock_at(T0)).outcome == "done"
    half = clock_at(T0 + dt.timedelta(minutes=30))
    assert run_job(db, settings, job, "b", clock=half).outcome == "skipped"
    assert run_job(db, settings, job, "b", clock=half, force=True).outcome == "done"
    due = clock_at(T0 + dt.timedelta(minutes=30 + 55))
    assert run_job(db, settings, job, "a", clock=due).outcome == "done"
    assert body.runs == 3


def test_a_failing_job_is_recorded_and_gives_its_lease_back(app: Flask, db: Database) -> None:
    failing = ScheduledJob("feed", "TEST_JOB_SECONDS", Recorder(error=ValueError("feed is down")))
    settings = settings_of(app)
    run = run_job(db, settings, failing, "w", clock=clock_at(T0))
    assert run.outcome == "failed" and run.error == "ValueError: feed is down"
    lock = lock_of(db, "feed")
    assert lock.last_error == "ValueError: feed is down" and lock.lease_until is None
    working = ScheduledJob("feed", "TEST_JOB_SECONDS", Recorder())
    later = clock_at(T0 + dt.timedelta(minutes=5))
    assert run_job(db, settings, working, "w", clock=later).outcome == "done"
    assert lock_of(db, "feed").last_error == ""


# --- the scheduler ----------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    """Wait until ``condition()`` holds, or fail."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.05)


def test_scheduler_keeps_running_jobs_after_one_fails(app: Flask, db: Database) -> None:
    failing = Recorder(error=RuntimeError("boom"))
    counting = Recorder()
    jobs = (
        ScheduledJob("failing", "TEST_JOB_SECONDS", failing),
        ScheduledJob("counting", "TEST_JOB_SECONDS", counting),
    )
    settings = settings_of(app, TEST_JOB_SECONDS=0.2, SCHEDULER_HEARTBEAT_SECONDS=0.2)
    scheduler = JobScheduler(db, settings, role="serve", jobs=jobs)
    scheduler.start()
    try:
        wait_for(lambda: failing.runs >= 3 and counting.runs >= 3)
        wait_for(lambda: lock_of(db, "failing").last_error == "RuntimeError: boom")
    finally:
        scheduler.stop()
    (row,) = heartbeats(db)
    assert row.owner == scheduler.owner and row.role == "serve" and row.pid == os.getpid()
    assert row.stopped_at is not None
    assert lock_of(db, "counting").lease_until is None
    assert lock_of(db, "counting").last_error == ""
    assert not [t for t in threading.enumerate() if t.name == "APScheduler"]


def test_scheduler_runs_the_registered_jobs_and_skips_switched_off_ones(
    app: Flask, db: Database
) -> None:
    assert [job.name for job in JOBS][:6] == [
        "mail-queue",
        "waitlist-purge",
        "mail-purge",
        "page-views",
        "catalog-feed",
        "attribution",
    ]
    queue_one(db)
    settings = settings_of(
        app,
        WAITLIST_PURGE_INTERVAL_SECONDS=0,
        TRACKING_MAINTENANCE_INTERVAL_SECONDS=0,
        CATALOG_FEED_INTERVAL_SECONDS=0,
        ATTRIBUTION_INTERVAL_SECONDS=0,
        RESTOCK_CAMPAIGNS_INTERVAL_SECONDS=0,
        CAMPAIGN_WAVES_INTERVAL_SECONDS=0,
        CAMPAIGN_RECONCILE_INTERVAL_SECONDS=0,
    )
    scheduler = JobScheduler(db, settings, role="worker")
    assert [job.name for job in scheduler.jobs] == ["mail-queue", "mail-purge"]
    scheduler.start()
    try:
        outbox = Path(app.config["INSTANCE_PATH"]) / "outbox"
        wait_for(lambda: len(read_outbox(outbox)) == 1)
        wait_for(lambda: lock_of(db, "mail-purge").last_finished_at is not None)
    finally:
        scheduler.stop()
    with db.session() as session:
        assert session.scalar(select(MailMessage.status)) == "sent"
        assert session.scalar(select(func.count()).select_from(JobLock)) == 2


def test_create_app_starts_no_scheduler(config: dict[str, Any]) -> None:
    application = create_app(config)
    application.extensions["engine.db"].upgrade()
    response = application.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["checks"]["scheduler"]["state"] == "never"
    assert not [t for t in threading.enumerate() if t.name == "APScheduler"]
    assert heartbeats(application.extensions["engine.db"]) == []
    application.extensions["engine.db"].dispose()


# --- /healthz ---------------------------------------------------------------------------------


def health(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    """Return /healthz's status code and JSON body."""
    response = client.get("/healthz")
    assert response.headers["Cache-Control"] == "no-store"
    return response.status_code, response.get_json()


def test_healthz_without_any_scheduler(app: Flask, client: FlaskClient) -> None:
    status, body = health(client)
    scheduler = body["checks"]["scheduler"]
    assert status == 200 and scheduler["state"] == "never" and scheduler["last_beat_at"] == "never"
    app.config["HEALTH_REQUIRE_SCHEDULER"] = True
    status, body = health(client)
    assert status == 503 and body["status"] == "unavailable"
    assert body["checks"]["scheduler"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True


def test_healthz_follows_the_heartbeat(app: Flask, db: Database, client: FlaskClient) -> None:
    app.config["HEALTH_REQUIRE_SCHEDULER"] = True
    now = utcnow()
    with db.session() as session:
        beat(session, "host:1:aa", now - dt.timedelta(seconds=5), role="worker")
        acquire_lease(session, "mail-queue", "host:1:aa", now, lease_seconds=60)
        release_lease(session, "mail-queue", "host:1:aa", now, "MailError: no route")
    status, body = health(client)
    scheduler = body["checks"]["scheduler"]
    assert status == 200, body
    assert scheduler["state"] == "running" and scheduler["schedulers"] == 1
    assert 4 <= scheduler["age_seconds"] <= 60
    assert scheduler["jobs"]["mail-queue"]["last_error"] == "MailError: no route"
    assert scheduler["jobs"]["mail-queue"]["running"] is False

    # It stopped beating without shutting down: dead, whatever HEALTH_REQUIRE_SCHEDULER says.
    with db.session() as session:
        beat(session, "host:1:aa", now - dt.timedelta(seconds=61))
    app.config["HEALTH_REQUIRE_SCHEDULER"] = False
    status, body = health(client)
    assert status == 503 and body["checks"]["scheduler"]["state"] == "stale"

    # A clean shutdown is not a death; only a required scheduler makes it a 503.
    with db.session() as session:
        mark_stopped(session, "host:1:aa", now)
    status, body = health(client)
    assert status == 200 and body["checks"]["scheduler"]["state"] == "stopped"
    app.config["HEALTH_REQUIRE_SCHEDULER"] = True
    assert health(client)[0] == 503

    # Another scheduler beating makes it healthy again.
    with db.session() as session:
        beat(session, "host:2:bb", utcnow(), role="serve")
    status, body = health(client)
    assert status == 200 and body["checks"]["scheduler"]["state"] == "running"


def test_healthz_reports_the_mail_backlog(app: Flask, db: Database, client: FlaskClient) -> None:
    queue_one(db, "fresh")
    status, body = health(client)
    mail = body["checks"]["mail_queue"]
    assert status == 200 and mail["ok"] is True and mail["queued"] == 1 and mail["due"] == 1
    queue_one(db, "old", not_before=utcnow() - dt.timedelta(hours=2))
    status, body = health(client)
    mail = body["checks"]["mail_queue"]
    assert status == 503 and mail["ok"] is False
    assert mail["oldest_due_seconds"] >= 7200 and mail["max_delay_seconds"] == 600


def test_healthz_skips_the_other_checks_without_a_database(tmp_path: Path) -> None:
    application = create_app(
        {
            "TESTING": True,
            "INSTANCE_PATH": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'db.sqlite3'}",
            "SECRET_KEY": "x",
        }
    )
    status, body = health(application.test_client())
    assert status == 503
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["scheduler"] == {
        "ok": False,
        "error": "not checked: the database is unreachable",
    }


# --- engine worker and engine serve, as an operator runs them -------------------------------


def engine_env(config: Mapping[str, Any]) -> dict[str, str]:
    """Return the environment that points an ``engine`` process at the test's instance."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENGINE_")}
    env.update(
        {
            "ENGINE_INSTANCE_PATH": config["INSTANCE_PATH"],
            "ENGINE_DATABASE_URL": config["DATABASE_URL"],
            "ENGINE_SECRET_KEY": config["SECRET_KEY"],
            "ENGINE_SITE_URL": config["SITE_URL"],
            "ENGINE_CONTENT_DIR": config["CONTENT_DIR"],
            "ENGINE_MAIL_BACKEND": "outbox",
            "ENGINE_MAIL_QUEUE_INTERVAL_SECONDS": "1",
            "ENGINE_SCHEDULER_HEARTBEAT_SECONDS": "1",
        }
    )
    return env


@pytest.fixture
def process_log(tmp_path: Path) -> Iterator[Path]:
    """Yield a file for a child process's output (a pipe could fill up and stall it)."""
    yield tmp_path / "process.log"


def stop(process: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM a process, wait for it, and return its output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return log.read_text(encoding="utf-8", errors="replace")


def outbox_of(config: Mapping[str, Any]) -> Path:
    """Return the instance's outbox folder."""
    return Path(config["INSTANCE_PATH"]) / "outbox"


def test_worker_drains_the_queue_and_stops_cleanly_on_sigterm(
    db: Database, config: dict[str, Any], tmp_path: Path, process_log: Path
) -> None:
    queue_one(db)
    with process_log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "worker"],
            env=engine_env(config),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: len(read_outbox(outbox_of(config))) == 1 or process.poll() is not None)
        wait_for(lambda: bool(heartbeats(db)))
        assert process.poll() is None, process_log.read_text()
    finally:
        output = stop(process, process_log)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert "SIGTERM received" in output and "stopped" in output
    (row,) = heartbeats(db)
    assert row.role == "worker" and row.stopped_at is not None
    assert lock_of(db, "mail-queue").lease_until is None
    with db.session() as session:
        assert session.scalar(select(MailMessage.status)) == "sent"


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_health(port: int) -> tuple[int, dict[str, Any]] | None:
    """Return /healthz's status and body from a running server, None while it is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return None


def start_serve(
    config: Mapping[str, Any], tmp_path: Path, log: Path, *extra: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``engine serve`` and wait until it answers."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", "--port", str(port), *extra],
            env=engine_env(config),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: get_health(port) is not None or process.poll() is not None, 30)
        assert process.poll() is None, log.read_text()
    except BaseException:
        stop(process, log)
        raise
    return process, port


def test_serve_runs_the_mail_job_in_process(
    db: Database, config: dict[str, Any], tmp_path: Path, process_log: Path
) -> None:
    queue_one(db)
    process, port = start_serve(config, tmp_path, process_log)
    try:
        wait_for(lambda: len(read_outbox(outbox_of(config))) == 1)
        wait_for(lambda: (get_health(port) or (0, {}))[0] == 200)
        answer = get_health(port)
        assert answer is not None
        scheduler = answer[1]["checks"]["scheduler"]
        assert scheduler["state"] == "running" and scheduler["schedulers"] == 1
    finally:
        output = stop(process, process_log)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    (row,) = heartbeats(db)
    assert row.role == "serve" and row.stopped_at is not None


def test_serve_without_scheduler_sends_nothing(
    db: Database, config: dict[str, Any], tmp_path: Path, process_log: Path
) -> None:
    queue_one(db)
    process, port = start_serve(config, tmp_path, process_log, "--no-scheduler")
    try:
        time.sleep(3)  # three mail-queue intervals
        answer = get_health(port)
    finally:
        output = stop(process, process_log)
    assert process.returncode == 0, output
    assert read_outbox(outbox_of(config)) == []
    with db.session() as session:
        assert session.scalar(select(MailMessage.status)) == "queued"
    assert heartbeats(db) == []
    # No scheduler anywhere, and HEALTH_REQUIRE_SCHEDULER is on by default.
    assert answer is not None and answer[0] == 503
    assert answer[1]["checks"]["scheduler"]["state"] == "never"


def test_healthz_reports_stuck_campaigns(app: Flask, db: Database, client: FlaskClient) -> None:
    from engine.models import Campaign, CampaignMessage

    now = utcnow()
    long_ago = now - dt.timedelta(hours=1)
    with db.session() as session:
        moving = Campaign(product_handle="tent", status="sending", next_wave_at=now)
        overdue = Campaign(product_handle="bag", status="scheduled", next_wave_at=long_ago)
        paused = Campaign(product_handle="boot", status="paused", next_wave_at=long_ago)
        session.add_all([moving, overdue, paused])
        session.flush()
        fresh = CampaignMessage(
            campaign_id=moving.id, wave=1, message_id="m-fresh", next_attempt_at=now
        )
        session.add(fresh)
        ids = (moving.id, overdue.id)
    status, body = health(client)
    campaigns = body["checks"]["campaigns"]
    # a paused campaign is waiting on purpose; a scheduled one whose wave is an hour late is not
    assert status == 503 and campaigns["stuck"] == [ids[1]]
    with db.session() as session:
        session.get(Campaign, ids[1]).status = "cancelled"  # type: ignore[union-attr]
        session.add(
            CampaignMessage(
                campaign_id=ids[0], wave=1, message_id="m-lost", status="sending",
                leased_until=long_ago,
            )
        )  # fmt: skip
    status, body = health(client)
    assert status == 503 and body["checks"]["campaigns"]["stuck"] == [ids[0]]
    with db.session() as session:
        lost = session.query(CampaignMessage).filter_by(message_id="m-lost").one()
        lost.status = "sent"
    status, body = health(client)
    assert status == 200 and body["checks"]["campaigns"] == {
        "ok": True, "stuck": [], "stuck_after_seconds": 900.0,
    }  # fmt: skip


def test_page_views_job_rolls_up_and_purges(app: Flask, db: Database) -> None:
    from engine.models import PageViewDaily
    from engine.pageviews import read_view, store_page_views, tracking_site

    settings = settings_of(app, TRACKING_RAW_RETENTION_DAYS=30)
    site = tracking_site(settings)
    long_ago = utcnow() - dt.timedelta(days=40)
    view = read_view(
        site, page=f"{settings['SITE_URL']}/products/tent/", referrer="", params={},
        ip="198.51.100.7", user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        now=long_ago,
    )  # fmt: skip
    with db.session() as session:
        store_page_views(session, site, [view])  # type: ignore[list-item]
    job = next(job for job in JOBS if job.name == "page-views")
    run = run_job(db, settings, job, "test", force=True)
    assert run.outcome == "done", run.error
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PageView)) == 0
        daily = session.scalars(select(PageViewDaily)).one()
        assert (daily.day, daily.path, daily.views) == (long_ago.date(), "/products/tent/", 1)
