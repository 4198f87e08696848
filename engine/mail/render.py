"""Emails as Jinja template pairs (``emails/<name>.html.j2`` + ``.txt.j2``), CSS inlined."""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2

from engine.mail.base import MailError

if TYPE_CHECKING:
    import css_inline

#: Placeholders the base layout prints for the footer links when the caller passes no URL:
#: a batch renders once and each recipient's own links go in as substitutions.
UNSUBSCRIBE_URL_TOKEN = "-unsubscribe_url-"
MANAGE_URL_TOKEN = "-manage_url-"


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    """Return the one CSS inliner (css_inline is imported on the first email rendered)."""
    import css_inline

    # No network: a stylesheet link in an email template is a mistake, never fetched.
    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


_OVERLAYS: weakref.WeakKeyDictionary[jinja2.Environment, tuple[jinja2.Environment, ...]] = (
    weakref.WeakKeyDictionary()
)
_OVERLAYS_LOCK = threading.Lock()


@dataclass(frozen=True)
class RenderedEmail:
    """A rendered email: one-line subject, inlined HTML, plain text."""

    subject: str
    html: str
    text: str


def _overlays(env: jinja2.Environment) -> tuple[jinja2.Environment, jinja2.Environment]:
    """Return (html, text) views of the environment: same loader, globals and filters.

    The HTML part is always autoescaped and the text part never is, whatever the page
    environment decides from file names; each view has its own template cache.
    """
    with _OVERLAYS_LOCK:
        cached = _OVERLAYS.get(env)
        if cached is None:
            html_env = env.overlay(autoescape=True, cache_size=100)
            text_env = env.overlay(
                autoescape=False, trim_blocks=True, lstrip_blocks=True, cache_size=100
            )
            cached = (html_env, text_env)
            _OVERLAYS[env] = cached
    return cached[0], cached[1]


def render_email(
    env: jinja2.Environment,
    name: str,
    settings: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
) -> RenderedEmail:
    """Render ``emails/<name>.html.j2`` + ``.txt.j2``; the subject is the text's ``subject`` block.

    The layout gets ``store_name``, ``company_address`` and ``site_url`` from the settings;
    ``unsubscribe_url`` and ``manage_url`` default to the substitution placeholders.
    """
    values: dict[str, Any] = {
        "store_name": settings.get("SITE_NAME", ""),
        "company_address": settings.get("COMPANY_ADDRESS", ""),
        "site_url": settings.get("SITE_URL", ""),
        "language": settings.get("SITE_LANGUAGE", "en"),
        "unsubscribe_url": UNSUBSCRIBE_URL_TOKEN,
        "manage_url": MANAGE_URL_TOKEN,
    }
    values.update(context or {})
    html_template, text_template = email_templates(env, name)
    block = text_template.blocks.get("subject")
    if block is None:
        raise MailError(f"emails/{name}.txt.j2 has no {{% block subject %}}")
    subject = " ".join("".join(block(text_template.new_context(values))).split())
    if not subject:
        raise MailError(f"emails/{name}.txt.j2: the subject block is empty")
    values["subject"] = subject
    text = text_template.render(values).strip() + "\n"
    html = _inliner().inline(html_template.render(values))
    return RenderedEmail(subject=subject, html=html, text=text)


def email_templates(env: jinja2.Environment, name: str) -> tuple[jinja2.Template, jinja2.Template]:
    """Return the (HTML, text) templates of an email; a changed file gives new objects."""
    html_env, text_env = _overlays(env)
    try:
        text_template = text_env.get_template(f"emails/{name}.txt.j2")
        html_template = html_env.get_template(f"emails/{name}.html.j2")
    except jinja2.TemplateNotFound as exc:
        raise MailError(f"email template {exc.name} not found") from None
    return html_template, text_template


def unsubscribe_headers(unsubscribe_url: str) -> dict[str, str]:
    """Return the RFC 8058 one-click unsubscribe headers for a recipient."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
