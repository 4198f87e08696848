"""Signed webhooks: ``X-Engine-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">``.

The sender signs the timestamp and the raw body bytes together, so neither can be changed
without the secret; the receiver refuses a timestamp further than ``tolerance`` seconds from
its own clock either way, so a captured delivery cannot be replayed after that window (and
within it, the hooks' own rules keep a replay harmless). Several ``v1=`` values may be sent
while a secret is being rotated; one match is enough.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

SIGNATURE_HEADER = "X-Engine-Signature"
#: Seconds a signed timestamp may differ from the receiver's clock (the design's 5 minutes).
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """A signature header is missing, malformed, wrong or outside the time tolerance."""


def signature_digest(secret: str, timestamp: int, body: bytes) -> str:
    """Return the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Return the ``X-Engine-Signature`` header value for a body sent at ``timestamp``."""
    return f"t={timestamp},v1={signature_digest(secret, timestamp, body)}"


def parse_signature(header: str) -> tuple[int, list[str]]:
    """Split a header value into its timestamp and its ``v1`` signatures."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header (expected t=...,v1=...)")
        if key == "t":
            if not value.isdigit():
                raise SignatureError(f"{SIGNATURE_HEADER}: t must be unix seconds")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.strip().lower())
        # Other schemes (v0, a future v2) are ignored, as a receiver of one version should.
    if timestamp is None:
        raise SignatureError(f"{SIGNATURE_HEADER}: no t= timestamp")
    if not signatures:
        raise SignatureError(f"{SIGNATURE_HEADER}: no v1= signature")
    return timestamp, signatures


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    now: dt.datetime | float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Check a signature header against the raw body; return its timestamp or raise SignatureError.

    ``now`` is an aware datetime or unix seconds. The digest is compared in constant time.
    """
    if not secret:
        raise SignatureError("no signing secret is configured")
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp, signatures = parse_signature(header)
    current = now.timestamp() if isinstance(now, dt.datetime) else float(now)
    drift = current - timestamp
    if drift > tolerance:
        raise SignatureError(
            f"{SIGNATURE_HEADER} timestamp is {int(drift)} s old (tolerance {int(tolerance)} s)"
        )
    if -drift > tolerance:
        raise SignatureError(
            f"{SIGNATURE_HEADER} timestamp is {int(-drift)} s in the future "
            f"(tolerance {int(tolerance)} s)"
        )
    expected = signature_digest(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body")
    return timestamp
