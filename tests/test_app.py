"""The app factory, settings layering, migrations and health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import create_engine, text

from engine import create_app
from engine.db import Base, Database, scan_heads
from engine.settings import SettingsError, load_settings


def test_factory_uses_test_config(app: Flask) -> None:
    assert app.config["TESTING"] is True
    assert app.config["SITE_URL"] == "https://shop.test"


def test_derived_settings_follow_site_url(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={}, overrides={"SITE_URL": "https://a.test/"})
    assert settings["SITE_URL"] == "https://a.test"
    assert settings["API_URL"] == "https://a.test"
    assert settings["ALLOWED_ORIGINS"] == ["https://a.test"]
    assert settings["DATABASE_URL"] == f"sqlite:///{tmp_path / 'engine.sqlite3'}"
    assert settings["OUTPUT_DIR"] == str(tmp_path / "site")


def test_settings_layer_file_then_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'site_name = "From file"\ncurrency = "EUR"\ncategory_page_size = 10\n', encoding="utf-8"
    )
    environ = {"ENGINE_CURRENCY": "GBP", "ENGINE_RESTOCK_AUTO_SEND": "yes"}
    settings = load_settings(tmp_path, environ=environ)
    assert settings["SITE_NAME"] == "From file"
    assert settings["CURRENCY"] == "GBP"
    assert settings["CATEGORY_PAGE_SIZE"] == 10
    assert settings["RESTOCK_AUTO_SEND"] is True


def test_bad_environment_value_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ENGINE_CATEGORY_PAGE_SIZE"):
        load_settings(tmp_path, environ={"ENGINE_CATEGORY_PAGE_SIZE": "many"})


def test_secret_is_generated_once_per_instance(tmp_path: Path) -> None:
    first = load_settings(tmp_path, environ={})["SECRET_KEY"]
    second = load_settings(tmp_path, environ={})["SECRET_KEY"]
    assert first == second and len(first) == 64


def test_migrations_match_the_models(app: Flask, db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    assert db.is_current()


def test_scanned_heads_are_alembics_heads(db: Database) -> None:
    script = ScriptDirectory.from_config(db.alembic_config())
    assert scan_heads() == set(script.get_heads())


def test_scan_gives_up_on_scripts_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "0001_a.py").write_text('revision = "0001"\ndown_revision = None\n')
    (tmp_path / "0002_b.py").write_text("revision = '0002'\ndown_revision = '0001'\n")
    assert scan_heads(tmp_path) == {"0002"}
    merge = 'revision = "0003"\ndown_revision = ("0001", "0002")\n'
    (tmp_path / "0003_merge.py").write_text(merge)
    assert scan_heads(tmp_path) is None


def test_stale_schema_is_not_current(db: Database) -> None:
    update = text("UPDATE alembic_version SET version_num = :version")
    with db.engine.begin() as connection:
        head = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        connection.execute(update, {"version": "0001"})
    try:
        assert not db.is_current()
    finally:
        with db.engine.begin() as connection:
            connection.execute(update, {"version": head})
    assert db.is_current()
    with db.engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    assert not db.is_current()


def test_healthz_ok(client: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["checks"]["database"]["ok"] is True


def test_healthz_503_when_database_unreachable(tmp_path: Path) -> None:
    app = create_app(
        {
            "TESTING": True,
            "INSTANCE_PATH": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'db.sqlite3'}",
            "SECRET_KEY": "x",
        }
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"]["ok"] is False


def test_db_upgrade_command(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_factory_leaves_an_empty_database_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    create_app({"INSTANCE_PATH": str(tmp_path), "DATABASE_URL": url, "SECRET_KEY": "x"})
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT name FROM sqlite_master").fetchall() == []
    engine.dispose()


def test_no_route_shadows_site_pages(app: Flask) -> None:
    prefixes = ("/api/", "/hooks/", "/waitlist/", "/unsubscribe/", "/admin/", "/healthz")
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("preview."):
            continue
        assert rule.rule.startswith(prefixes), f"{rule.rule} is outside the reserved prefixes"


def test_example_config_names_only_known_settings(tmp_path: Path) -> None:
    from engine.settings import DEFAULTS, read_config_file

    example = Path(__file__).resolve().parent.parent / "instance" / "config.example.toml"
    values = read_config_file(example)
    assert values and set(values) <= set(DEFAULTS)
    (tmp_path / "config.toml").write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_settings(tmp_path, environ={})["SITE_NAME"] == "Example Store"
