"""The SendGrid backend: v3 Mail Send, up to 1,000 personalizations per request."""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

from engine.mail.base import (
    DeliveryResult,
    DeliveryStatus,
    MailBackend,
    MailError,
    Message,
    Recipient,
    Sleep,
    custom_args_for,
    register_backend,
    result,
    screen_batch,
    split_address,
)

if TYPE_CHECKING:
    from python_http_client.exceptions import HTTPError

log = logging.getLogger(__name__)

#: SendGrid's per-request limits: personalizations, and recipients (to + cc + bcc).
MAX_PERSONALIZATIONS = 1000
#: Requests stay well under SendGrid's 30 MB; a bigger batch is split in halves.
MAX_REQUEST_BYTES = 20_000_000

_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")


class _Outcome:
    """The fate of one request: the same for every personalization in it."""

    def __init__(
        self,
        status: DeliveryStatus,
        reason: str = "",
        provider_id: str | None = None,
        retry_after: float | None = None,
        bad_personalizations: dict[int, str] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.provider_id = provider_id
        self.retry_after = retry_after
        self.bad_personalizations = bad_personalizations or {}


def split_requests(recipients: Sequence[Recipient], limit: int) -> list[list[int]]:
    """Split recipient indexes into requests of at most ``limit``, no address twice in one."""
    requests: list[list[int]] = []
    current: list[int] = []
    addresses: set[str] = set()
    for index, recipient in enumerate(recipients):
        address = recipient.email.lower()
        if len(current) >= limit or address in addresses:
            requests.append(current)
            current, addresses = [], set()
        current.append(index)
        addresses.add(address)
    if current:
        requests.append(current)
    return requests


def error_messages(body: bytes | str | None) -> tuple[str, dict[int, str]]:
    """Return SendGrid's error messages joined, and those naming one personalization."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        errors = json.loads(body or "")["errors"]
    except (ValueError, KeyError, TypeError):
        return (" ".join((body or "").split())[:500] or "no error message"), {}
    messages: list[str] = []
    by_index: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        text = str(error.get("message") or "").strip()
        field = str(error.get("field") or "")
        messages.append(f"{field}: {text}" if field else text)
        match = _PERSONALIZATION_FIELD.match(field)
        if match:
            by_index[int(match.group(1))] = text
    if len(by_index) != len(messages):
        by_index = {}  # some error concerns the whole request
    return ("; ".join(messages) or "no error message"), by_index


def _contact(value: str) -> dict[str, str]:
    """Return a SendGrid email object for ``"Name <a@b.c>"``."""
    name, address = split_address(value)
    return {"email": address, "name": name} if name else {"email": address}


@register_backend
class SendGridBackend(MailBackend):
    """POST batches to ``SENDGRID_API_HOST`` + ``/v3/mail/send`` with the sendgrid library.

    429 waits for ``X-RateLimit-Reset`` and 500/502/503 back off exponentially, both
    within ``MAIL_RETRY_ATTEMPTS``; a 504 or a timeout after the request left means the
    batch may have been accepted, so it is reported UNKNOWN and never retried here.
    """

    name = "sendgrid"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        api_key = str(settings.get("SENDGRID_API_KEY") or "")
        if not api_key:
            raise MailError("MAIL_BACKEND is sendgrid but SENDGRID_API_KEY is empty")
        self.host = str(settings.get("SENDGRID_API_HOST") or "https://api.sendgrid.com")
        self.host = self.host.rstrip("/")
        self.timeout = float(settings.get("SENDGRID_TIMEOUT_SECONDS") or 30)
        self.sandbox = bool(settings.get("SENDGRID_SANDBOX"))
        self.retries = int(settings.get("MAIL_RETRY_ATTEMPTS", 3))
        self.retry_base = float(settings.get("MAIL_RETRY_BASE_SECONDS", 1.0))
        self.retry_max = float(settings.get("MAIL_RETRY_MAX_SECONDS", 60.0))
        # Imported here: the sendgrid library is slow to import and only this backend uses it.
        from sendgrid import SendGridAPIClient

        self.client = SendGridAPIClient(api_key, host=self.host)
        # The library sets no timeout: without one a stalled connection blocks forever.
        self.client.client.timeout = self.timeout
        self.sleep: Sleep = time.sleep
        self.clock = time.time
        self.requests_made = 0

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[DeliveryResult]:
        """Send in as few requests as SendGrid's limits allow."""
        results, sendable = screen_batch(message, recipients)
        chosen = [recipients[index] for index in sendable]
        for request in split_requests(chosen, MAX_PERSONALIZATIONS):
            batch = [chosen[i] for i in request]
            for i, outcome in zip(request, self._send_request(message, batch), strict=True):
                results[sendable[i]] = outcome
        return [item for item in results if item is not None]

    def payload(self, message: Message, recipients: Sequence[Recipient]) -> dict[str, Any]:
        """Return the v3 Mail Send body for one request."""
        personalizations = []
        for recipient in recipients:
            to = {"email": recipient.email}
            if recipient.name:
                to["name"] = recipient.name
            personalization: dict[str, Any] = {
                "to": [to],
                "custom_args": custom_args_for(recipient),
            }
            if recipient.headers:
                personalization["headers"] = dict(recipient.headers)
            if recipient.substitutions:
                personalization["substitutions"] = dict(recipient.substitutions)
            personalizations.append(personalization)
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": _contact(message.sender),
            "subject": message.subject,
            # SendGrid requires text/plain before text/html.
            "content": [
                {"type": "text/plain", "value": message.text},
                {"type": "text/html", "value": message.html},
            ],
            # Our own List-Unsubscribe headers must not be replaced by SendGrid's.
            "tracking_settings": {"subscription_tracking": {"enable": False}},
        }
        if message.reply_to:
            body["reply_to"] = _contact(message.reply_to)
        if message.headers:
            body["headers"] = dict(message.headers)
        if message.categories:
            body["categories"] = list(message.categories)
        if self.sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    def _send_request(
        self, message: Message, recipients: Sequence[Recipient], depth: int = 0
    ) -> list[DeliveryResult]:
        """Send one request's worth; split it when the body is too big."""
        body = self.payload(message, recipients)
        if len(recipients) > 1 and len(json.dumps(body)) > MAX_REQUEST_BYTES:
            half = len(recipients) // 2
            return self._send_request(message, recipients[:half], depth) + self._send_request(
                message, recipients[half:], depth
            )
        outcome = self._post(body)
        if outcome.bad_personalizations and depth == 0:
            # One bad address must not sink the other 999: refuse those it named, send
            # the rest once more.
            named = outcome.bad_personalizations
            keep = [r for i, r in enumerate(recipients) if i not in named]
            retried = iter(self._send_request(message, keep, depth + 1) if keep else [])
            return [
                result(r, DeliveryStatus.REJECTED, f"SendGrid refused it: {named[i]}")
                if i in named
                else next(retried)
                for i, r in enumerate(recipients)
            ]
        return [
            result(r, outcome.status, outcome.reason, outcome.provider_id, outcome.retry_after)
            for r in recipients
        ]

    def _post(self, body: dict[str, Any]) -> _Outcome:
        """POST one body, retrying 429 and 5xx within bounds; never retry an unknown fate."""
        from python_http_client.exceptions import HTTPError

        attempt = 0
        while True:
            attempt += 1
            self.requests_made += 1
            try:
                response = self.client.client.mail.send.post(
                    request_body=body, timeout=self.timeout
                )
            except HTTPError as exc:
                outcome, wait = self._http_error(exc, attempt)
            except URLError as exc:
                # urllib wraps errors raised while connecting and sending the request.
                outcome, wait = self._network_error(exc.reason, attempt, before_response=True)
            except (http.client.HTTPException, OSError) as exc:
                # Raised while waiting for or reading the answer: the request had left.
                outcome, wait = self._network_error(exc, attempt, before_response=False)
            else:
                message_id = response.headers.get("X-Message-Id")
                return _Outcome(DeliveryStatus.ACCEPTED, provider_id=message_id)
            if wait is None:
                return outcome
            log.warning("SendGrid: %s; retrying in %.1f s", outcome.reason, wait)
            self.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        """Return the exponential backoff before retry number ``attempt``."""
        return float(min(self.retry_max, self.retry_base * 2 ** (attempt - 1)))

    def _rate_limit_wait(self, headers: Any) -> float:
        """Return the seconds until ``X-RateLimit-Reset`` (a Unix time), bounded."""
        raw = headers.get("X-RateLimit-Reset") if headers is not None else None
        try:
            reset = float(str(raw))
        except (TypeError, ValueError):
            return self.retry_base
        # SendGrid sends a Unix timestamp; a small number is read as seconds to wait.
        wait = reset - self.clock() if reset > 1_000_000_000 else reset
        return min(self.retry_max, max(0.0, wait))

    def _http_error(self, exc: HTTPError, attempt: int) -> tuple[_Outcome, float | None]:
        """Classify a SendGrid error answer; return it and the wait before a retry."""
        code = int(exc.status_code)
        text, by_index = error_messages(exc.body)
        if code == 429:
            wait = self._rate_limit_wait(exc.headers)
            reason = f"SendGrid rate limit (429): {text}"
            outcome = _Outcome(DeliveryStatus.DEFERRED, reason, retry_after=wait)
            return outcome, (wait if attempt <= self.retries else None)
        if code == 504:
            reason = f"SendGrid gateway timeout (504): the request may have been accepted; {text}"
            return _Outcome(DeliveryStatus.UNKNOWN, reason), None
        if code >= 500:
            wait = self._backoff(attempt)
            reason = f"SendGrid server error ({code}): {text}"
            outcome = _Outcome(DeliveryStatus.DEFERRED, reason, retry_after=wait)
            return outcome, (wait if attempt <= self.retries else None)
        if code in (401, 403):
            # The account, not the message, is at fault: keep the mail for when it is fixed.
            reason = f"SendGrid refused the API key ({code}): {text}; check SENDGRID_API_KEY"
            return _Outcome(DeliveryStatus.DEFERRED, reason), None
        reason = f"SendGrid refused the request ({code}): {text}"
        return _Outcome(DeliveryStatus.REJECTED, reason, bad_personalizations=by_index), None

    def _network_error(
        self, error: object, attempt: int, *, before_response: bool
    ) -> tuple[_Outcome, float | None]:
        """Classify a failure to talk to SendGrid; only a connection never made is retried."""
        where = self.host
        never_made = ConnectionRefusedError | socket.gaierror | ssl.SSLError
        if before_response and isinstance(error, never_made):
            # The request never left this machine.
            wait = self._backoff(attempt)
            reason = f"cannot reach SendGrid at {where}: {error}"
            outcome = _Outcome(DeliveryStatus.DEFERRED, reason, retry_after=wait)
            return outcome, (wait if attempt <= self.retries else None)
        if isinstance(error, TimeoutError):
            reason = (
                f"no answer from SendGrid at {where} within {self.timeout:g} s; "
                "the batch may have been accepted"
            )
        else:
            reason = f"connection to SendGrid at {where} failed mid-request: {error!r}"
        return _Outcome(DeliveryStatus.UNKNOWN, reason), None
