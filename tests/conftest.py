"""Shared fixtures: an app on SQLite and on PostgreSQL, its client and its CLI runner."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from engine import create_app
from engine.db import Database, get_db

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("ENGINE_TEST_DATABASE_URL", "")


def _postgres_schema_url() -> Iterator[str]:
    """Yield a URL whose connections use a fresh schema, dropped afterwards."""
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("ENGINE_TEST_DATABASE_URL is not set in CI")
        pytest.skip("PostgreSQL tests need ENGINE_TEST_DATABASE_URL (see README)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yield a fresh, empty database URL of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'engine.sqlite3'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def config(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """Return the settings every test app starts from."""
    return {
        "TESTING": True,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret",
        "SITE_URL": "https://shop.test",
        "STORE_URL": "https://checkout.shop.test",
        "CONTENT_DIR": str(tmp_path / "content"),
        "TEMPLATES_DIR": str(REPO / "templates"),
        "OUTPUT_DIR": str(tmp_path / "site"),
        # No scheduler runs beside a test app; tests of /healthz's scheduler check turn it on.
        "HEALTH_REQUIRE_SCHEDULER": False,
    }


@pytest.fixture
def app(config: dict[str, Any]) -> Iterator[Flask]:
    """Create an app with a migrated, empty database."""
    application = create_app(config)
    database = get_db(application)
    database.upgrade()
    yield application
    database.dispose()


@pytest.fixture
def db(app: Flask) -> Database:
    """Return the app's database."""
    return get_db(app)


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    """Yield a session the test commits itself."""
    with db.sessions() as session:
        yield session


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """Return a CLI runner bound to the app."""
    return app.test_cli_runner()
