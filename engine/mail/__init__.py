"""Mail: one batch-capable interface and its backends (outbox, SMTP, SendGrid), chosen by
``MAIL_BACKEND``; email rendering from Jinja template pairs in ``templates/emails/``."""

from __future__ import annotations

from engine.mail import outbox, sendgrid, smtp  # noqa: F401  (each registers its backend)
from engine.mail.base import (
    BACKENDS,
    MESSAGE_ID_ARG,
    DeliveryResult,
    DeliveryStatus,
    MailBackend,
    MailError,
    Message,
    Recipient,
    make_backend,
    register_backend,
)
from engine.mail.outbox import outbox_dir, read_outbox
from engine.mail.render import (
    MANAGE_URL_TOKEN,
    UNSUBSCRIBE_URL_TOKEN,
    RenderedEmail,
    render_email,
    unsubscribe_headers,
)

__all__ = [
    "BACKENDS",
    "MANAGE_URL_TOKEN",
    "MESSAGE_ID_ARG",
    "UNSUBSCRIBE_URL_TOKEN",
    "DeliveryResult",
    "DeliveryStatus",
    "MailBackend",
    "MailError",
    "Message",
    "Recipient",
    "RenderedEmail",
    "make_backend",
    "outbox_dir",
    "read_outbox",
    "register_backend",
    "render_email",
    "unsubscribe_headers",
]
