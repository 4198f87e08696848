"""Layered settings: defaults, then ``<instance>/config.toml``, then ``ENGINE_*`` variables."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "ENGINE_"

#: Every setting with its default. Empty strings mean "derived" (see ``resolve``).
DEFAULTS: dict[str, Any] = {
    # Site identity and links
    "SITE_URL": "http://127.0.0.1:8000",
    "SITE_NAME": "Engine Demo Store",
    "SITE_DESCRIPTION": "Outdoor gear, tested on the trail.",
    "SITE_LANGUAGE": "en",
    "STORE_URL": "https://shop.example.com",
    "CURRENCY": "USD",
    "TIMEZONE": "UTC",
    "API_URL": "",
    "ALLOWED_ORIGINS": [],
    "TRUSTED_PROXIES": 0,
    # Storage and files
    "DATABASE_URL": "",
    "CONTENT_DIR": "content",
    "TEMPLATES_DIR": "templates",
    "OUTPUT_DIR": "",
    "PUBLISH_COMMAND": "",
    "PUBLISH_TIMEOUT_SECONDS": 300,
    "SECRET_KEY": "",
    # Pages
    "CATEGORY_PAGE_SIZE": 24,
    "RELATED_PRODUCTS": 4,
    "SITEMAP_MAX_URLS": 50000,
    "BUILD_GENERATIONS_KEPT": 2,
    "BUILD_WORKERS": 0,
    "PRICE_VALID_DAYS": 365,
    "SHIPPING_COUNTRY": "US",
    "RETURN_DAYS": 30,
    "FREE_SHIPPING": True,
    # Shipping and returns as product markup states them (shown on product pages too)
    "SHIPPING_RATE": "4.95",  # charged when FREE_SHIPPING is false, in CURRENCY
    "SHIPPING_HANDLING_DAYS_MIN": 0,
    "SHIPPING_HANDLING_DAYS_MAX": 1,
    "SHIPPING_TRANSIT_DAYS_MIN": 2,
    "SHIPPING_TRANSIT_DAYS_MAX": 5,
    "RETURN_FEES": "free",  # "free" or "customer" (RETURN_DAYS 0 = no returns)
    # Fixed priceValidUntil date (YYYY-MM-DD); empty = Dec 31 of the year PRICE_VALID_DAYS ahead
    "PRICE_VALID_UNTIL": "",
    "HOME_HIGHLIGHTS": 8,
    # Mail
    "MAIL_BACKEND": "outbox",
    "MAIL_FROM": "Engine Demo Store <hello@example.com>",
    "MARKETER_EMAIL": "",
    "COMPANY_ADDRESS": "Engine Demo Store, 1 Example Street, Springfield, USA",
    "SENDGRID_API_KEY": "",
    "SENDGRID_API_HOST": "https://api.sendgrid.com",
    "SENDGRID_WEBHOOK_PUBLIC_KEY": "",
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": 25,
    "SMTP_USERNAME": "",
    "SMTP_PASSWORD": "",
    "SMTP_STARTTLS": False,
    "SMTP_SSL": False,
    "SMTP_TIMEOUT_SECONDS": 30,
    "SENDGRID_TIMEOUT_SECONDS": 30,
    "SENDGRID_SANDBOX": False,
    "MAIL_OUTBOX_DIR": "",
    "MAIL_RETRY_ATTEMPTS": 3,
    "MAIL_RETRY_BASE_SECONDS": 1.0,
    "MAIL_RETRY_MAX_SECONDS": 60.0,
    "MAIL_QUEUE_BATCH_SIZE": 100,
    "MAIL_QUEUE_MAX_ATTEMPTS": 8,
    "MAIL_QUEUE_BACKOFF_SECONDS": 60,
    "MAIL_QUEUE_BACKOFF_MAX_SECONDS": 3600,
    "MAIL_QUEUE_LEASE_SECONDS": 900,
    "MAIL_QUEUE_INTERVAL_SECONDS": 5,  # the mail-queue job; 0 = not scheduled
    "MAIL_QUEUE_MAX_DELAY_SECONDS": 600,  # /healthz: 503 when a due email waits longer
    "MAIL_PURGE_INTERVAL_SECONDS": 86400,  # the mail-purge job
    "MAIL_SENT_RETENTION_DAYS": 30,  # sent emails are deleted this long after sending
    # Hooks and feeds
    "INVENTORY_WEBHOOK_SECRET": "",
    "ORDERS_WEBHOOK_SECRET": "",
    "CATALOG_FEED": "",  # a catalog file path or http(s) URL re-read by the catalog-feed job
    "CATALOG_FEED_INTERVAL_SECONDS": 900,  # the catalog-feed job; 0 = not scheduled
    "CATALOG_FEED_TIMEOUT_SECONDS": 60,  # fetching a feed URL gives up after this
    "HOOK_TOLERANCE_SECONDS": 300,  # a signed hook's timestamp may be this far from our clock
    "HOOK_MAX_BODY_BYTES": 5_000_000,  # larger hook bodies get 413
    "ATTRIBUTION_WINDOW_DAYS": 7,  # an order this long after a restock email can be its sale
    "ATTRIBUTION_INTERVAL_SECONDS": 3600,  # the attribution job (late click events); 0 = off
    # Waitlists (signups, double opt-in, rate limits)
    "WAITLIST_CONSENT_TEXT": (
        "Email me when this product is available. I can unsubscribe at any time."
    ),
    "WAITLIST_MAX_QUANTITY": 10,
    "WAITLIST_UNCONFIRMED_DAYS": 7,
    "WAITLIST_PURGE_INTERVAL_SECONDS": 3600,  # the waitlist-purge job
    "WAITLIST_CONFIRM_RESEND_MINUTES": 60,
    "WAITLIST_CONFIRMATIONS_PER_DAY": 3,
    "WAITLIST_CLIENT_LIMIT": 5,
    "WAITLIST_CLIENT_WINDOW_SECONDS": 60,
    "WAITLIST_ADDRESS_LIMIT": 3,
    "WAITLIST_ADDRESS_WINDOW_SECONDS": 180,
    "WAITLIST_UNSUBSCRIBE_MAILTO": "",
    # Restock campaigns
    "RESTOCK_AUTO_SEND": False,
    "RESTOCK_WAVE_FACTOR": 3.0,
    "RESTOCK_WAVE_INTERVAL_MINUTES": 60,
    "RECONCILE_AFTER_SECONDS": 60,
    "RESTOCK_CAMPAIGNS_INTERVAL_SECONDS": 60,  # the restock-campaigns job (detects restocks)
    "CAMPAIGN_WAVES_INTERVAL_SECONDS": 10,  # the campaign-waves job (due waves, sending)
    "CAMPAIGN_RECONCILE_INTERVAL_SECONDS": 30,  # the campaign-reconcile job
    "CAMPAIGN_BATCH_SIZE": 1000,  # recipients claimed per send call (SendGrid: <= 1,000)
    "CAMPAIGN_LEASE_SECONDS": 600,  # an in-flight batch older than this is of unknown fate
    "CAMPAIGN_MAX_ATTEMPTS": 5,  # deferred sends of one email before it is marked failed
    "CAMPAIGN_MAX_FAILURES": 50,  # permanent failures that pause a campaign...
    "CAMPAIGN_MAX_FAILURE_RATE": 0.2,  # ...when also above this share of those attempted
    "CAMPAIGN_STUCK_AFTER_SECONDS": 900,  # /healthz: 503 when a campaign stalls this long
    # Page views (cookieless tracking)
    "TRACKING_RAW_RETENTION_DAYS": 90,  # raw views are purged after this; roll-ups stay
    "TRACKING_MAINTENANCE_INTERVAL_SECONDS": 3600,  # the page-views job (roll-ups, purges)
    "TRACKING_BATCH_MAX_ROWS": 500,  # most views one group commit writes
    "TRACKING_COMMIT_TIMEOUT_SECONDS": 30.0,  # a view not committed by then answers 503
    # Demand report, restock priority and content tests (see engine/demand.py)
    "DEMAND_REPORT_DAYS": 28,  # `engine demand report` window when --days is not given
    "DEMAND_WAITLIST_CONVERSION": 0.12,  # share of units wanted by people waiting that sell
    "DEMAND_VIEW_TO_ORDER_RATE": 0.01,  # units per product-page view (no signups, no orders)
    "DEMAND_COVER_DAYS": 60,  # the suggested reorder covers this many days of demand
    "DEMAND_RESTOCK_NOW_DAYS": 14,  # days of cover below this: restock_now
    "DEMAND_WATCH_DAYS": 30,  # days of cover below this: watch
    "DEMAND_OVERSTOCK_DAYS": 180,  # days of cover above this: overstocked
    "DEMAND_SCORE_WEIGHT_VIEWS": 0.25,
    "DEMAND_SCORE_WEIGHT_SEARCH": 0.15,  # search impressions
    "DEMAND_SCORE_WEIGHT_SIGNUPS": 0.25,  # new signups in the window
    "DEMAND_SCORE_WEIGHT_WAITLIST": 0.25,  # confirmed people waiting
    "DEMAND_SCORE_WEIGHT_ORDERS": 0.10,  # units ordered in the window
    "DEMAND_TEST_INVEST_PROBABILITY": 0.95,  # P(rate > goal) at or above this: invest
    "DEMAND_TEST_PIVOT_PROBABILITY": 0.05,  # P(rate > goal) at or below this: pivot
    # Web service
    # A page-view request holds its thread until its batch commits: more threads than
    # concurrent beacons, or waitress queues requests (and logs each one).
    "SERVE_THREADS": 64,
    # Scheduler (engine worker, engine serve) and /healthz
    "SCHEDULER_HEARTBEAT_SECONDS": 10,
    "SCHEDULER_HEARTBEAT_MAX_AGE_SECONDS": 60,
    "SCHEDULER_LEASE_SECONDS": 60,  # a job holder that stops renewing loses it after this
    "HEALTH_REQUIRE_SCHEDULER": True,  # /healthz: 503 when no scheduler has ever run
}


class SettingsError(ValueError):
    """A setting has a value of the wrong kind."""


def _coerce(name: str, raw: str, default: Any) -> Any:
    """Turn an environment string into the type of the setting's default."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise SettingsError(f"{ENV_PREFIX}{name}: expected true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            message = f"{ENV_PREFIX}{name}: expected a whole number, got {raw!r}"
            raise SettingsError(message) from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name}: expected a number, got {raw!r}") from None
    if isinstance(default, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def read_config_file(path: Path) -> dict[str, Any]:
    """Read ``config.toml``; unknown keys are kept (the list of settings is open)."""
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    return {key.upper(): value for key, value in data.items()}


def load_settings(
    instance_path: Path,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the settings for an instance folder, layered and with derived values filled."""
    environ = os.environ if environ is None else environ
    settings: dict[str, Any] = dict(DEFAULTS)
    settings.update(read_config_file(instance_path / "config.toml"))
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key.startswith("ENGINE_TEST_"):
            continue
        name = key[len(ENV_PREFIX) :]
        if name == "INSTANCE_PATH":
            continue
        settings[name] = _coerce(name, raw, DEFAULTS.get(name, ""))
    if overrides:
        settings.update(overrides)
    return resolve(settings, instance_path)


def resolve(settings: dict[str, Any], instance_path: Path) -> dict[str, Any]:
    """Fill the derived settings (API URL, origins, database, output folder, secret)."""
    settings["SITE_URL"] = str(settings["SITE_URL"]).rstrip("/")
    settings["API_URL"] = str(settings.get("API_URL") or settings["SITE_URL"]).rstrip("/")
    if not settings.get("ALLOWED_ORIGINS"):
        settings["ALLOWED_ORIGINS"] = [settings["SITE_URL"]]
    if not settings.get("DATABASE_URL"):
        settings["DATABASE_URL"] = f"sqlite:///{instance_path / 'engine.sqlite3'}"
    if not settings.get("OUTPUT_DIR"):
        settings["OUTPUT_DIR"] = str(instance_path / "site")
    if not settings.get("SECRET_KEY"):
        settings["SECRET_KEY"] = instance_secret(instance_path)
    settings["INSTANCE_PATH"] = str(instance_path)
    return settings


def instance_secret(instance_path: Path) -> str:
    """Return the instance's generated secret, creating it once (for the embedded default)."""
    path = instance_path / "secret_key"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    import secrets  # only the first start of an instance makes its key

    instance_path.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    # Write a private temp file, then hard-link it into place: the link either wins
    # whole or fails because another process got there first, never a half-written key.
    tmp = instance_path / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret)
    try:
        os.link(tmp, path)
    except FileExistsError:
        secret = path.read_text(encoding="utf-8").strip()
    finally:
        tmp.unlink()
    return secret


def default_instance_path() -> Path:
    """Return ``ENGINE_INSTANCE_PATH`` or ``./instance``."""
    return Path(os.environ.get("ENGINE_INSTANCE_PATH") or "instance").resolve()


def bundled_path(name: str) -> Path:
    """Return a folder shipped with the package (``theme`` or ``demo``).

    In a wheel the theme and demo content are package data; in a source checkout they
    are the repository's ``templates/`` and ``content/`` folders.
    """
    package = Path(__file__).resolve().parent
    installed = {"theme": package / "theme", "demo_content": package / "demo" / "content"}
    source = {"theme": package.parent / "templates", "demo_content": package.parent / "content"}
    if installed[name].is_dir():
        return installed[name]
    return source[name]


def template_dirs(settings: Mapping[str, Any]) -> list[Path]:
    """Return the template folders in lookup order: the store's ``TEMPLATES_DIR``, the theme."""
    theme = bundled_path("theme")
    folders = []
    override = Path(str(settings.get("TEMPLATES_DIR") or "templates"))
    if override.is_dir() and override.resolve() != theme.resolve():
        folders.append(override)
    folders.append(theme)
    return folders
