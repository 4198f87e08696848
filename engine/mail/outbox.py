"""The default backend: one ``.eml`` file per recipient in ``<instance>/outbox/``."""

from __future__ import annotations

import email
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from engine.mail.base import (
    DeliveryResult,
    DeliveryStatus,
    MailBackend,
    Message,
    Recipient,
    check_batch,
    custom_args_for,
    recipient_problem,
    register_backend,
    result,
    validate_message,
)
from engine.mail.compose import POLICY, compose


def outbox_dir(settings: Mapping[str, Any]) -> Path:
    """Return the outbox folder: ``MAIL_OUTBOX_DIR`` or ``<instance>/outbox``."""
    configured = settings.get("MAIL_OUTBOX_DIR")
    if configured:
        return Path(configured)
    return Path(settings["INSTANCE_PATH"]) / "outbox"


def read_outbox(folder: Path) -> list[EmailMessage]:
    """Return the messages in an outbox folder, oldest file first."""
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.eml"), key=lambda path: (path.stat().st_mtime_ns, path.name))
    messages = []
    for path in files:
        # An EmailPolicy makes the parser build EmailMessage objects.
        messages.append(
            cast(EmailMessage, email.message_from_bytes(path.read_bytes(), policy=POLICY))
        )
    return messages


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a temp file in the same folder, then a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@register_backend
class OutboxBackend(MailBackend):
    """Write each copy to ``<message id>.eml``; sending the same id again overwrites it.

    The files also carry ``X-Engine-Categories`` and ``X-Engine-Custom-Args`` headers,
    which the other backends hand to the provider instead, so tests and a curious store
    owner can see them.
    """

    name = "outbox"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.folder = outbox_dir(settings)

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[DeliveryResult]:
        """Write one file per recipient."""
        validate_message(message)
        check_batch(recipients)
        self.folder.mkdir(parents=True, exist_ok=True)
        results = []
        for recipient in recipients:
            problem = recipient_problem(recipient)
            if problem:
                results.append(result(recipient, DeliveryStatus.REJECTED, problem))
                continue
            extra = {"X-Engine-Custom-Args": json.dumps(custom_args_for(recipient))}
            if message.categories:
                extra["X-Engine-Categories"] = ", ".join(message.categories)
            data = compose(message, recipient, extra).as_bytes()
            path = self.folder / f"{recipient.message_id}.eml"
            try:
                write_atomically(path, data)
            except OSError as exc:
                results.append(
                    result(recipient, DeliveryStatus.DEFERRED, f"cannot write {path}: {exc}")
                )
                continue
            results.append(result(recipient, DeliveryStatus.ACCEPTED, provider_id=path.name))
        return results
