"""The web service: blueprints for the live preview, the public API, hooks and health."""

from __future__ import annotations

from flask import Flask

from engine.web import health, preview


def init_app(app: Flask) -> None:
    """Register every blueprint."""
    app.register_blueprint(health.bp)
    app.register_blueprint(preview.bp)
