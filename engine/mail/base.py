"""The mail interface: a message, its recipients, per-recipient results and the backend registry."""

from __future__ import annotations

import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from enum import StrEnum
from typing import Any, ClassVar

#: The custom argument every backend adds, naming the message (an opaque id, never personal
#: data), so provider events can be matched back to it.
MESSAGE_ID_ARG = "engine_message_id"

MAX_CATEGORIES = 10
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SUBSTITUTIONS_BYTES = 10_000

# Headers the backends write themselves; letting callers set them would break the message
# or, with SendGrid, be refused for the whole request.
RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "subject", "reply-to", "date", "message-id", "sender",
        "mime-version", "content-type", "content-transfer-encoding", "dkim-signature",
        "received", "return-path", "x-sg-id", "x-sg-eid",
    }
)  # fmt: skip

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+\.[^@\s<>,;:\"()\[\]\\]+$")
_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9._=-]{1,128}$")


class MailError(ValueError):
    """A message or a setting is unusable; nothing was sent."""


class DeliveryStatus(StrEnum):
    """What became of one recipient's copy."""

    #: The provider or server took responsibility for it.
    ACCEPTED = "accepted"
    #: Refused for good (bad address, refused content): retrying will not help.
    REJECTED = "rejected"
    #: Not sent, for a reason that may pass (rate limit, server down): safe to retry.
    DEFERRED = "deferred"
    #: It may or may not have been accepted (timeout after the request left, connection lost
    #: after the data was sent): resending risks a duplicate; reconcile before resending.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Message:
    """The part of an email common to every recipient of a batch."""

    subject: str
    html: str
    text: str
    sender: str  # "Store <hello@example.com>": the From header
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    categories: Sequence[str] = ()


@dataclass(frozen=True)
class Recipient:
    """One recipient of a batch, with what is theirs alone.

    ``substitutions`` replace their keys (e.g. ``-unsubscribe_url-``) verbatim in the subject,
    HTML and text, as SendGrid does, so values must be safe in HTML (URLs, tokens).
    ``message_id`` names this copy: the outbox file, the ``Message-ID`` header and the
    ``engine_message_id`` custom argument; resending with the same id is the same message.
    """

    email: str
    name: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    substitutions: Mapping[str, str] = field(default_factory=dict)
    custom_args: Mapping[str, str] = field(default_factory=dict)
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome for one recipient, in the order the recipients were given."""

    email: str
    message_id: str
    status: DeliveryStatus
    reason: str = ""
    provider_id: str | None = None
    retry_after: float | None = None  # seconds, a hint for DEFERRED results

    @property
    def accepted(self) -> bool:
        """Return True when the provider took the message."""
        return self.status is DeliveryStatus.ACCEPTED

    @property
    def failed(self) -> bool:
        """Return True when the message certainly did not leave (rejected or deferred)."""
        return self.status in (DeliveryStatus.REJECTED, DeliveryStatus.DEFERRED)

    @property
    def permanent(self) -> bool:
        """Return True when retrying cannot help."""
        return self.status is DeliveryStatus.REJECTED

    @property
    def unknown(self) -> bool:
        """Return True when the message may have left; resending risks a duplicate."""
        return self.status is DeliveryStatus.UNKNOWN


def result(
    recipient: Recipient,
    status: DeliveryStatus,
    reason: str = "",
    provider_id: str | None = None,
    retry_after: float | None = None,
) -> DeliveryResult:
    """Return a result for a recipient."""
    return DeliveryResult(
        email=recipient.email,
        message_id=recipient.message_id,
        status=status,
        reason=reason,
        provider_id=provider_id,
        retry_after=retry_after,
    )


def split_address(value: str) -> tuple[str, str]:
    """Split ``"Name <a@b.c>"`` into its name and address."""
    name, address = parseaddr(value)
    return name, address


def is_address(value: str) -> bool:
    """Return True for a plausible, single, header-safe email address."""
    return len(value) <= 254 and bool(_ADDRESS.match(value))


def _check_headers(headers: Mapping[str, str], where: str) -> None:
    """Raise MailError for a header a message must not carry."""
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise MailError(f"{where}: header name {name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise MailError(f"{where}: header {name!r} is set by the mail backend itself")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise MailError(f"{where}: header {name!r} must be a one-line string")


def validate_message(message: Message) -> None:
    """Raise MailError when the common part of a message cannot be sent by any backend."""
    _name, address = split_address(message.sender)
    if not is_address(address):
        raise MailError(f"sender {message.sender!r} is not a valid address (set MAIL_FROM)")
    if message.reply_to and not is_address(split_address(message.reply_to)[1]):
        raise MailError(f"reply-to {message.reply_to!r} is not a valid address")
    if "\r" in message.subject or "\n" in message.subject:
        raise MailError("the subject must be one line")
    if not message.text or not message.html:
        raise MailError("a message needs both a text and an HTML part")
    _check_headers(message.headers, "message")
    if len(message.categories) > MAX_CATEGORIES:
        raise MailError(f"at most {MAX_CATEGORIES} categories, got {len(message.categories)}")
    for category in message.categories:
        if not isinstance(category, str) or not 0 < len(category) <= 255:
            raise MailError(f"category {category!r} must be a string of 1 to 255 characters")
        if _EMAIL_LIKE.search(category):
            raise MailError(f"category {category!r} looks like personal data (an address)")


def recipient_problem(recipient: Recipient) -> str | None:
    """Return why this recipient cannot be sent to, or None when it can."""
    if not is_address(recipient.email):
        return f"{recipient.email!r} is not a valid email address"
    if not _MESSAGE_ID.match(recipient.message_id):
        return f"message id {recipient.message_id!r} must be 1-128 letters, digits or ._=-"
    if "\r" in recipient.name or "\n" in recipient.name:
        return "the recipient's name must be one line"
    try:
        _check_headers(recipient.headers, "recipient")
    except MailError as exc:
        return str(exc)
    for key, value in recipient.custom_args.items():
        if not isinstance(key, str) or not isinstance(value, str):
            return f"custom_args must map strings to strings ({key!r}: {value!r})"
        if _EMAIL_LIKE.search(value) or recipient.email.lower() in value.lower():
            return f"custom_args[{key!r}] looks like personal data; use opaque ids"
    if custom_args_size(recipient) >= MAX_CUSTOM_ARGS_BYTES:
        return f"custom_args must stay under {MAX_CUSTOM_ARGS_BYTES} bytes"
    for key, value in recipient.substitutions.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            return f"substitutions must map non-empty strings to strings ({key!r})"
    size = len(json.dumps(dict(recipient.substitutions)).encode())
    if size >= MAX_SUBSTITUTIONS_BYTES:
        return f"substitutions must stay under {MAX_SUBSTITUTIONS_BYTES} bytes"
    return None


def custom_args_for(recipient: Recipient) -> dict[str, str]:
    """Return the recipient's custom arguments plus the message id argument."""
    args = dict(recipient.custom_args)
    args[MESSAGE_ID_ARG] = recipient.message_id
    return args


def custom_args_size(recipient: Recipient) -> int:
    """Return the size in bytes of the custom arguments as sent."""
    return len(json.dumps(custom_args_for(recipient), ensure_ascii=False).encode())


def check_batch(recipients: Sequence[Recipient]) -> None:
    """Raise MailError when two recipients of one batch share a message id."""
    seen: set[str] = set()
    for recipient in recipients:
        if recipient.message_id in seen:
            raise MailError(f"message id {recipient.message_id!r} appears twice in one batch")
        seen.add(recipient.message_id)


def screen_batch(
    message: Message, recipients: Sequence[Recipient]
) -> tuple[list[DeliveryResult | None], list[int]]:
    """Check a batch; return a result slot per recipient (rejections filled) and who to send.

    Raises MailError when the message itself is unusable, before anything is sent.
    """
    validate_message(message)
    check_batch(recipients)
    results: list[DeliveryResult | None] = [None] * len(recipients)
    sendable: list[int] = []
    for index, recipient in enumerate(recipients):
        problem = recipient_problem(recipient)
        if problem:
            results[index] = result(recipient, DeliveryStatus.REJECTED, problem)
        else:
            sendable.append(index)
    return results, sendable


def substitute(value: str, substitutions: Mapping[str, str]) -> str:
    """Replace every substitution key in ``value`` in one pass (longest keys first)."""
    if not substitutions:
        return value
    keys = sorted(substitutions, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(key) for key in keys))
    return pattern.sub(lambda match: substitutions[match.group(0)], value)


class MailBackend(ABC):
    """How one batch leaves: a small interface with one implementation per provider."""

    #: The ``MAIL_BACKEND`` value that selects the backend.
    name: ClassVar[str]

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings

    @abstractmethod
    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[DeliveryResult]:
        """Send the message to each recipient; return one result per recipient, in order.

        Raises MailError (before sending anything) when the message itself is unusable;
        a recipient that cannot be sent to gets a REJECTED result instead.
        """

    def close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing)
        """Release any connection the backend keeps."""


BACKENDS: dict[str, type[MailBackend]] = {}


def register_backend(cls: type[MailBackend]) -> type[MailBackend]:
    """Register a backend class under its ``name`` (a class decorator)."""
    BACKENDS[cls.name] = cls
    return cls


def make_backend(settings: Mapping[str, Any]) -> MailBackend:
    """Return the backend chosen by ``MAIL_BACKEND``."""
    name = str(settings.get("MAIL_BACKEND") or "outbox").lower()
    try:
        cls = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise MailError(f"MAIL_BACKEND {name!r} is unknown; known: {known}") from None
    return cls(settings)


Sleep = Callable[[float], None]
