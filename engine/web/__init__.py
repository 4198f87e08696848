"""The web service: blueprints for the live preview, the public API, hooks and health."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from engine.web import api, events, health, hooks, preview, rejoin, subscriber


def init_app(app: Flask) -> None:
    """Register every blueprint (the page-view routes also in front of Flask)."""
    app.register_blueprint(health.bp)
    app.register_blueprint(preview.bp)
    app.register_blueprint(api.bp)
    events.init_app(app)
    app.register_blueprint(subscriber.bp)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(rejoin.bp)
    # Last: the client address must be resolved before any route, the fast ones included.
    trust_proxies(app)


def trust_proxies(app: Flask) -> None:
    """Read the client address from ``X-Forwarded-For`` only behind ``TRUSTED_PROXIES`` hops.

    With 0 (the default) the header is ignored: anyone could write it, and rate limits
    and client hashes would then be keyed by whatever a client claims.
    """
    hops = int(app.config.get("TRUSTED_PROXIES") or 0)
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
