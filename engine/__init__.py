"""Content-to-inventory engine: SEO pages, waitlists, demand signals and restock email."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.settings import default_instance_path, load_settings

if TYPE_CHECKING:
    from flask import Flask

__version__ = "0.1.0"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create the Flask application; starts no scheduler and writes no pages."""
    from flask import Flask

    instance_path = Path(
        (test_config or {}).get("INSTANCE_PATH") or default_instance_path()
    ).resolve()
    # No Flask static route: /assets/ belongs to the site, and every other path is a page.
    app = Flask(
        __name__,
        instance_path=str(instance_path),
        instance_relative_config=True,
        static_folder=None,
    )
    app.config.update(load_settings(instance_path, overrides=test_config))

    from engine import cli, db, web

    db.init_app(app)
    web.init_app(app)
    cli.init_app(app)
    return app
