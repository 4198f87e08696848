"""The SMTP backend: one connection per batch, one transaction per recipient."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from engine.mail.base import (
    DeliveryResult,
    DeliveryStatus,
    MailBackend,
    MailError,
    Message,
    Recipient,
    register_backend,
    result,
    screen_batch,
)
from engine.mail.compose import compose, envelope_address


def _reply_text(reply: bytes | str) -> str:
    """Return a server reply as one line of text."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _refusal(recipient: Recipient, stage: str, code: int, reply: bytes | str) -> DeliveryResult:
    """Map an SMTP refusal to a result: 4xx may pass (deferred), 5xx will not (rejected)."""
    status = DeliveryStatus.DEFERRED if 400 <= code < 500 else DeliveryStatus.REJECTED
    return result(recipient, status, f"SMTP {stage} refused: {code} {_reply_text(reply)}")


@register_backend
class SMTPBackend(MailBackend):
    """Send through an SMTP server (``SMTP_HOST``, ``SMTP_PORT``, ``SMTP_*``)."""

    name = "smtp"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.host = str(settings.get("SMTP_HOST") or "127.0.0.1")
        self.port = int(settings.get("SMTP_PORT") or 25)
        self.username = str(settings.get("SMTP_USERNAME") or "")
        self.password = str(settings.get("SMTP_PASSWORD") or "")
        self.use_ssl = bool(settings.get("SMTP_SSL"))
        self.starttls = bool(settings.get("SMTP_STARTTLS"))
        self.timeout = float(settings.get("SMTP_TIMEOUT_SECONDS") or 30)
        if self.use_ssl and self.starttls:
            raise MailError("SMTP_SSL and SMTP_STARTTLS exclude each other; set one")

    def connect(self) -> smtplib.SMTP:
        """Open an authenticated connection."""
        context = ssl.create_default_context()
        connection: smtplib.SMTP
        if self.use_ssl:
            connection = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=context
            )
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            connection.ehlo()
            if self.starttls:
                connection.starttls(context=context)
                connection.ehlo()
            if self.username:
                connection.login(self.username, self.password)
        except BaseException:
            connection.close()
            raise
        return connection

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[DeliveryResult]:
        """Send each recipient's copy over one connection."""
        results, pending = screen_batch(message, recipients)
        if pending:
            self._send_pending(message, recipients, pending, results)
        return [item for item in results if item is not None]

    def _send_pending(
        self,
        message: Message,
        recipients: Sequence[Recipient],
        pending: list[int],
        results: list[DeliveryResult | None],
    ) -> None:
        """Fill ``results`` for the sendable recipients."""
        where = f"{self.host}:{self.port}"
        try:
            connection = self.connect()
        except smtplib.SMTPAuthenticationError as exc:
            reason = f"SMTP login to {where} refused ({exc.smtp_code}); check SMTP_USERNAME"
            self._defer(recipients, pending, results, reason)
            return
        except (OSError, smtplib.SMTPException) as exc:
            self._defer(recipients, pending, results, f"cannot connect to SMTP {where}: {exc}")
            return
        sender = envelope_address(message.sender)
        try:
            for position, index in enumerate(pending):
                recipient = recipients[index]
                data = compose(message, recipient).as_bytes()
                outcome, broken = self._send_one(connection, sender, recipient, data)
                results[index] = outcome
                if broken:
                    # Nothing after this recipient was attempted; it is safe to retry.
                    rest = pending[position + 1 :]
                    self._defer(recipients, rest, results, f"SMTP connection to {where} lost")
                    return
        finally:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()

    def _send_one(
        self, connection: smtplib.SMTP, sender: str, recipient: Recipient, data: bytes
    ) -> tuple[DeliveryResult, bool]:
        """Run one MAIL/RCPT/DATA transaction; return its result and whether the link broke."""
        lost = f"SMTP connection to {self.host}:{self.port} lost"
        try:
            code, reply = connection.mail(sender)
            if code != 250:
                connection.rset()
                return _refusal(recipient, "sender", code, reply), False
            code, reply = connection.rcpt(recipient.email)
            if code not in (250, 251):
                connection.rset()
                return _refusal(recipient, "recipient", code, reply), False
        except (OSError, smtplib.SMTPServerDisconnected):
            return result(recipient, DeliveryStatus.DEFERRED, lost), True
        try:
            code, reply = connection.data(data)
        except smtplib.SMTPDataError as exc:
            # DATA itself was refused (no 354): the message body never went out.
            refusal = _refusal(recipient, "data", exc.smtp_code, exc.smtp_error)
            try:
                connection.rset()
            except (OSError, smtplib.SMTPException):
                return refusal, True
            return refusal, False
        except (OSError, smtplib.SMTPServerDisconnected):
            # The body may have reached the server before the link broke.
            reason = f"{lost} after the message data was sent; it may have been accepted"
            return result(recipient, DeliveryStatus.UNKNOWN, reason), True
        if code != 250:
            try:
                connection.rset()
            except (OSError, smtplib.SMTPException):
                return _refusal(recipient, "message", code, reply), True
            return _refusal(recipient, "message", code, reply), False
        return result(recipient, DeliveryStatus.ACCEPTED, provider_id=_reply_text(reply)), False

    @staticmethod
    def _defer(
        recipients: Sequence[Recipient],
        indexes: list[int],
        results: list[DeliveryResult | None],
        reason: str,
    ) -> None:
        """Mark recipients as not sent, safe to retry."""
        for index in indexes:
            results[index] = result(recipients[index], DeliveryStatus.DEFERRED, reason)
