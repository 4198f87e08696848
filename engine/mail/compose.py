"""One recipient's copy of a message as an RFC 5322 email (for the outbox and SMTP)."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate

from engine.mail.base import Message, Recipient, split_address, substitute

# 7-bit transfer encodings everywhere, so any SMTP server takes the bytes as they are
# (no 8BITMIME needed) and the .eml files stay plain ASCII.
POLICY = SMTP.clone(cte_type="7bit")


def message_id_header(message_id: str, sender: str) -> str:
    """Return the ``Message-ID`` for a copy: stable, so a resend is recognisably the same."""
    domain = split_address(sender)[1].rpartition("@")[2] or "localhost"
    return f"<{message_id}@{domain}>"


def compose(
    message: Message, recipient: Recipient, extra_headers: dict[str, str] | None = None
) -> EmailMessage:
    """Return the recipient's personalized copy: both parts, common and own headers."""
    subs = recipient.substitutions
    email = EmailMessage(policy=POLICY)
    email["Subject"] = substitute(message.subject, subs)
    email["From"] = message.sender
    email["To"] = (
        formataddr((recipient.name, recipient.email)) if recipient.name else recipient.email
    )
    if message.reply_to:
        email["Reply-To"] = message.reply_to
    email["Date"] = formatdate(usegmt=True)
    email["Message-ID"] = message_id_header(recipient.message_id, message.sender)
    for headers in (message.headers, recipient.headers, extra_headers or {}):
        for name, value in headers.items():
            del email[name]
            email[name] = substitute(value, subs)
    email.set_content(substitute(message.text, subs), cte="quoted-printable")
    email.add_alternative(substitute(message.html, subs), subtype="html", cte="quoted-printable")
    return email


def envelope_address(value: str) -> str:
    """Return the bare address of a header value, for the SMTP envelope."""
    address = split_address(value)[1]
    return str(Address(addr_spec=address).addr_spec) if address else address
