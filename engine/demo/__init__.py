"""The bundled demo store: an outdoor-gear catalog and its Markdown, seeded and built.

``engine demo`` imports ``products.csv`` (a Shopify product export shipped beside this
module) into an instance that holds no other catalog, points ``CONTENT_DIR`` at the
bundled demo content when the working directory has no content of its own, builds the
site and serves it.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from engine.models import Product
from engine.settings import ENV_PREFIX, bundled_path, read_config_file

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from engine.catalog.importer import ImportReport
    from engine.publish import BuildReport

#: The demo catalog, a Shopify product CSV export (package data).
DEMO_CATALOG = Path(__file__).resolve().parent / "products.csv"

#: Products per category page in the demo: small enough that the footwear category
#: shows pagination with the demo's 40 products.
DEMO_CATEGORY_PAGE_SIZE = 9

#: Settings ``engine demo`` writes into ``<instance>/config.toml`` when it seeds a fresh
#: instance, so later ``engine build`` and ``engine serve`` show the same site.
PERSISTED = ("CONTENT_DIR", "CATEGORY_PAGE_SIZE")

#: Settings ``engine demo`` derives from ``--host`` and ``--port`` for its own run.
URL_SETTINGS = ("SITE_URL", "API_URL", "ALLOWED_ORIGINS")


class DemoError(Exception):
    """The demo store cannot be seeded into this instance."""


@dataclass
class DemoSetup:
    """What seeding and building the demo did."""

    imported: ImportReport | None  # None: the demo catalog was already there, kept as it is
    build: BuildReport
    signups: int = 0  # demo waitlist signups added (0 when they were all there already)


def demo_handles(path: Path = DEMO_CATALOG) -> set[str]:
    """Return the product handles of the demo catalog."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {row["Handle"] for row in csv.DictReader(handle) if row.get("Handle")}


def catalog_handles(session: Session) -> set[str]:
    """Return the handles of every product in the instance's catalog."""
    return set(session.scalars(select(Product.handle)))


def check_catalog(session: Session, path: Path = DEMO_CATALOG) -> bool:
    """Return True when the catalog is empty; raise DemoError when it holds other products."""
    present = catalog_handles(session)
    foreign = sorted(present - demo_handles(path))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise DemoError(
            f"this instance already holds another catalog ({len(foreign)} product(s) that are "
            f"not the demo's: {shown}); run the demo in a fresh instance, for example "
            "ENGINE_INSTANCE_PATH=demo-instance engine demo"
        )
    return not present


def seed_demo(session: Session, path: Path = DEMO_CATALOG) -> ImportReport | None:
    """Import the demo catalog unless it is already here; refuse a foreign catalog.

    A catalog that already holds every demo product is kept as it is, so stock changed
    while exploring the demo (``engine stock set``) survives a restart.
    """
    from engine.catalog import import_catalog

    check_catalog(session, path)
    if catalog_handles(session) >= demo_handles(path):
        return None
    report = import_catalog(session, path, fmt="shopify")
    if not report.ok:
        problems = "; ".join(problem.located(path) for problem in report.problems[:5])
        raise DemoError(f"the bundled demo catalog did not import: {problems}")
    return report


def build_demo(
    session: Session, settings: Mapping[str, Any], *, out: Path | None = None
) -> DemoSetup:
    """Seed the demo catalog and waitlists, build the site; never runs ``PUBLISH_COMMAND``."""
    from engine.db import utcnow
    from engine.demo.campaign import seed_campaign
    from engine.demo.signups import seed_signups
    from engine.demo.traffic import seed_traffic
    from engine.publish import build_site

    imported = seed_demo(session)
    signups = seed_signups(session, settings, utcnow())
    seed_traffic(session, settings, utcnow())
    seed_campaign(session, settings, utcnow())  # a finished restock campaign (once)
    # The demo store must not be deployed to wherever this instance publishes its site.
    settings = {**settings, "PUBLISH_COMMAND": ""}
    build = build_site(session, settings, out=out)
    return DemoSetup(imported=imported, build=build, signups=signups)


def explicit_settings(instance_path: Path, environ: Mapping[str, str] | None = None) -> set[str]:
    """Return the names of settings set in ``<instance>/config.toml`` or ``ENGINE_*`` variables."""
    environ = os.environ if environ is None else environ
    names = set(read_config_file(instance_path / "config.toml"))
    names.update(
        key[len(ENV_PREFIX) :]
        for key in environ
        if key.startswith(ENV_PREFIX) and not key.startswith(f"{ENV_PREFIX}TEST_")
    )
    return names


def demo_config(settings: Mapping[str, Any], explicit: set[str]) -> dict[str, Any]:
    """Return the settings a fresh demo instance needs that nobody set explicitly.

    ``CONTENT_DIR`` points at the bundled demo content only when the configured content
    folder does not exist, so a source checkout (whose ``content/`` is the demo content)
    or a store's own folder is used as it is.
    """
    values: dict[str, Any] = {}
    if "CONTENT_DIR" not in explicit and not Path(str(settings["CONTENT_DIR"])).is_dir():
        values["CONTENT_DIR"] = str(bundled_path("demo_content"))
    if "CATEGORY_PAGE_SIZE" not in explicit:
        values["CATEGORY_PAGE_SIZE"] = DEMO_CATEGORY_PAGE_SIZE
    return values


def serving_url(host: str, port: int) -> str:
    """Return ``http://H:P`` for a listening address (IPv6 hosts in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def demo_urls(
    host: str, port: int, settings: Mapping[str, Any], explicit: set[str]
) -> dict[str, Any]:
    """Return SITE_URL, API_URL and ALLOWED_ORIGINS for a demo served on ``host:port``.

    Each setting set explicitly wins; the others follow the usual derivation (API_URL
    from SITE_URL, ALLOWED_ORIGINS from SITE_URL) with SITE_URL defaulting to ``http://H:P``.
    """
    here = serving_url(host, port)
    site = str(settings["SITE_URL"]).rstrip("/") if "SITE_URL" in explicit else here
    api = str(settings["API_URL"]).rstrip("/") if "API_URL" in explicit else site
    origins = list(settings["ALLOWED_ORIGINS"]) if "ALLOWED_ORIGINS" in explicit else [site]
    return {"SITE_URL": site, "API_URL": api, "ALLOWED_ORIGINS": origins}


def _toml_value(value: Any) -> str:
    """Return a TOML literal for a string or a whole number."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"cannot write {value!r} to config.toml")
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_demo_config(instance_path: Path, values: Mapping[str, Any]) -> list[str]:
    """Add settings to ``<instance>/config.toml`` that it does not set yet; return their names.

    The keys go at the top of the file, where they stay top-level keys even if the file
    ends in a TOML table; the file is replaced atomically.
    """
    path = instance_path / "config.toml"
    present = read_config_file(path)
    new = {name: value for name, value in values.items() if name.upper() not in present}
    if not new:
        return []
    lines = ["# Written by `engine demo` when it seeded this instance with the demo store."]
    lines += [f"{name.lower()} = {_toml_value(value)}" for name, value in new.items()]
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    text = "\n".join(lines) + "\n" + ("\n" + old if old else "")
    instance_path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".toml", dir=instance_path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return list(new)
