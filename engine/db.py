"""Database engine, sessions and migrations; the caller of a domain function owns the session."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    Connection,
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
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker

from engine.schema_heads import MIGRATIONS_DIR, scan_heads

if TYPE_CHECKING:
    from alembic.config import Config
    from flask import Flask

#: Execution option of a connection that only reads in its next transactions: on SQLite they
#: start with a plain (deferred) ``BEGIN`` and never take the write lock.
READ_ONLY = "engine_read_only"


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


#: Pooled SQLite connections kept open (opened only when threads need them at once), and
#: how many more may be opened for a moment: enough for every thread of ``engine serve``.
SQLITE_POOL_SIZE = 64
SQLITE_POOL_OVERFLOW = 16


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        # A SQLite connection is a file handle and a small cache, but opening one (file,
        # WAL index, pragmas) costs far more than a query: keep one per thread that needs
        # one (up to SQLITE_POOL_SIZE) instead of closing QueuePool's overflow after use.
        database = make_url(url).database
        in_memory = not database or database == ":memory:" or database.startswith("file::memory:")
        pool = (
            {}
            if in_memory
            else {"pool_size": SQLITE_POOL_SIZE, "max_overflow": SQLITE_POOL_OVERFLOW}
        )
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )

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
            # Pages read through a memory map, not a read() call each: an ORM write
            # touches dozens of pages, re-read after every other connection's commit.
            cursor.execute("PRAGMA mmap_size=268435456")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # pysqlite's implicit BEGIN is deferred; take the write lock up front so two
            # writers queue on busy_timeout instead of failing on lock upgrade. A connection
            # marked READ_ONLY reads a snapshot beside the writer (WAL) instead.
            read_only = conn.get_execution_options().get(READ_ONLY)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

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


class DriverStatement:
    """A Core statement that runs on SQLite's own cursor, compiled once; elsewhere as Core.

    Through SQLAlchemy a small INSERT costs some 60-80 µs of Python (parameter
    processing, execution context, result set-up); on the sqlite3 cursor about 10 µs. For
    statements run inside SQLite's write lock on every request that difference is the
    lock's throughput. Parameters are converted as this schema's column types would
    convert them (aware datetimes to UTC text, dicts and lists to JSON); results come
    back as the driver gives them (see ``sqlite_datetime`` for times). ``keys`` are the
    parameters every execution passes; any other bound value must be a literal.
    """

    def __init__(self, statement: Any, keys: list[str]) -> None:
        from sqlalchemy.dialects import sqlite

        self.statement = statement
        self.keys = frozenset(keys)
        compiled = statement.compile(dialect=sqlite.dialect(), column_keys=keys)
        self.sql = compiled.string
        self.order: list[tuple[str, Any]] = []
        for name in compiled.positiontup or ():
            if name in keys:
                self.order.append((name, None))
                continue
            bind = compiled.binds[name]
            if bind.callable is not None or bind.value is None:
                raise ValueError(f"{name!r} is neither passed nor a literal in {self.sql}")
            self.order.append(("", bind.value))

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> Sequence[Any]:
        """Run the statement in the connection's transaction; return the rows as tuples."""
        if params.keys() != self.keys:
            raise ValueError(f"expected the parameters {sorted(self.keys)}, got {sorted(params)}")
        if connection.dialect.name != "sqlite":
            return [tuple(row) for row in connection.execute(self.statement, dict(params))]
        values = tuple(_sqlite_value(params[name]) if name else fixed for name, fixed in self.order)
        driver = connection.connection.driver_connection
        assert driver is not None
        try:
            return list(driver.execute(self.sql, values).fetchall())
        except sqlite3.Error as exc:
            # As SQLAlchemy would raise it: callers catch OperationalError (busy, locked).
            raise DBAPIError.instance(self.sql, values, exc, sqlite3.Error) from exc


def _sqlite_value(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime; use engine.db.utcnow()")
        # SQLAlchemy's SQLite DATETIME text: "YYYY-MM-DD HH:MM:SS.ffffff", microseconds always.
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def sqlite_datetime(value: dt.datetime | str) -> dt.datetime:
    """Return a time read by a ``DriverStatement`` (SQLite gives text) as an aware UTC time."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
