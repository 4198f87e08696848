"""The newest migration revisions, read from the migration scripts as text (no Alembic)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# A migration script's own revision and its parent, as Alembic's template writes them.
_REVISION_LINE = re.compile(
    r"^(down_revision|revision)(?:\s*:[^=\n]*)?\s*=\s*(?:\"([^\"\n]*)\"|'([^'\n]*)'|(None))\s*$",
    re.MULTILINE,
)


def scan_heads(versions: Path | None = None) -> set[str] | None:
    """Return the head revisions from the scripts' ``revision = "..."`` lines, cheaply.

    Reads the files as text (no imports, no Alembic). Returns None when any script is not in
    the plain one-parent form (a merge, a branch label, ...): the caller asks Alembic then.
    """
    folder = versions or MIGRATIONS_DIR / "versions"
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in folder.glob("*.py"):
        found: dict[str, str | None] = {}
        for match in _REVISION_LINE.finditer(path.read_text(encoding="utf-8")):
            name, double, single, _none = match.groups()
            if name in found:
                return None
            value = double if double is not None else single
            found[name] = value
        if set(found) != {"revision", "down_revision"} or not found["revision"]:
            return None
        revisions.add(str(found["revision"]))
        if found["down_revision"] is not None:
            parents.add(found["down_revision"])
    if not revisions or not parents <= revisions:
        return None
    return revisions - parents


def is_current_sqlite(connection: Any) -> bool:
    """Return True when a ``sqlite3`` connection's database is at the newest migration.

    What ``engine.db.Database.is_current`` checks, on the driver's own connection; False
    also when the heads cannot be read cheaply (the caller then asks Alembic).
    """
    heads = scan_heads()
    if heads is None:
        return False
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
    ).fetchone()
    if found is None:
        return False
    current = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return {row[0] for row in current} == heads
