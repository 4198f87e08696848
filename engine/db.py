"""Database engine, sessions and migrations; the caller of a domain function owns the session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Numeric,
    String,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker

from engine.schema_heads import MIGRATIONS_DIR, scan_heads

if TYPE_CHECKING:
    from alembic.config import Config
    from flask import Flask


def utcnow() -> dt.datetime:
    """Return the current time in UTC (timezone-aware)."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops zones).

    A TypeDecorator, not a DateTime subclass: dialects swap a subclass for their own
    DATETIME type and its conversions would silently never run.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        # Alembic's autogenerate renders this type as UTCDateTime(timezone=True); the zone
        # is always kept, whatever is passed.
        super().__init__(timezone=True)

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        """Refuse naive datetimes; store UTC (without a zone on SQLite)."""
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime; use engine.db.utcnow()")
            value = value.astimezone(dt.UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        """Return the stored time as an aware UTC datetime."""
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


Money = Annotated[Decimal, mapped_column(Numeric(12, 2))]
Timestamp = Annotated[dt.datetime, mapped_column(UTCDateTime())]
Str255 = Annotated[str, mapped_column(String(255))]


class Base(DeclarativeBase):
    """Declarative base for every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


def dialect_insert(dialect_name: str) -> Callable[..., Any]:
    """Return PostgreSQL's or SQLite's ``insert`` (with ON CONFLICT), importing only that one."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL keeps readers off writers' backs and survives a killed process;
            # synchronous=NORMAL is durable against process crashes (not power loss).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # pysqlite's implicit BEGIN is deferred; take the write lock up front so two
            # writers queue on busy_timeout instead of failing on lock upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """The app's engine and session factory, attached with ``init_app``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a session that commits on success and rolls back on error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def alembic_config(self) -> Config:
        """Return an Alembic config bound to this database."""
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        config.attributes["engine"] = self.engine
        return config

    def upgrade(self) -> None:
        """Apply every migration not yet applied."""
        from alembic import command

        command.upgrade(self.alembic_config(), "head")

    def is_current(self) -> bool:
        """Return True when the schema is at the newest migration."""
        heads = scan_heads()
        if heads is None:
            from alembic.script import ScriptDirectory

            heads = set(ScriptDirectory.from_config(self.alembic_config()).get_heads())
        with self.engine.connect() as connection:
            # What Alembic's MigrationContext.get_current_heads reads, without importing it.
            if not inspect(connection).has_table("alembic_version"):
                return False
            current = connection.execute(text("SELECT version_num FROM alembic_version"))
            return {row[0] for row in current} == heads

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def init_app(app: Flask) -> Database:
    """Attach the database to the app and close the request session on teardown."""
    from flask import g

    database = Database(app.config["DATABASE_URL"])
    app.extensions["engine.db"] = database

    @app.teardown_appcontext
    def _close_session(exc: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            if exc is not None:
                session.rollback()
            session.close()

    return database


def get_db(app: Flask | None = None) -> Database:
    """Return the app's database (the current app when none is given)."""
    from flask import current_app

    return (app or current_app).extensions["engine.db"]


def get_session() -> Session:
    """Return the request's (or CLI command's) session; the caller commits."""
    from flask import g

    if "db_session" not in g:
        g.db_session = get_db().sessions()
    return g.db_session
