"""A local SendGrid-compatible v3 Mail Send server, scripted answers, and signed Event Webhook
events posted back (a real ECDSA P-256 key pair), for tests and benchmarks."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

API_KEY = "SG.test-key"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@dataclass
class Reply:
    """One scripted answer: status, JSON body, headers, a delay before answering."""

    status: int = 202
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class EventSigner:
    """A SendGrid-style signing key: signs timestamp + body, exports the public key setting."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        #: The value of ``SENDGRID_WEBHOOK_PUBLIC_KEY``.
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        """Return the signature and timestamp headers SendGrid sends with a body."""
        stamp = timestamp or str(int(time.time()))
        signature = self.private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp}


def check_payload(body: dict[str, Any], authorization: str) -> list[str]:
    """Return what is wrong with a v3 Mail Send body, by SendGrid's documented rules."""
    problems = []
    if authorization != f"Bearer {API_KEY}":
        problems.append(f"authorization {authorization!r}")
    personalizations = body.get("personalizations", [])
    if not 1 <= len(personalizations) <= 1000:
        problems.append(f"{len(personalizations)} personalizations")
    addresses = [to["email"].lower() for p in personalizations for to in p.get("to", [])]
    if len(addresses) > 1000:
        problems.append(f"{len(addresses)} recipients")
    if len(addresses) != len(set(addresses)):
        problems.append("an address appears twice")
    for p in personalizations:
        args = {**body.get("custom_args", {}), **p.get("custom_args", {})}
        if not all(isinstance(v, str) for v in args.values()):
            problems.append("custom_args values must be strings")
        if len(json.dumps(args).encode()) >= 10_000:
            problems.append("custom_args too big")
        if any("@" in v for v in args.values()):
            problems.append("personal data in custom_args")
    if len(body.get("categories", [])) > 10:
        problems.append("too many categories")
    types = [c["type"] for c in body.get("content", [])]
    if types[:1] != ["text/plain"]:
        problems.append(f"content order {types}")
    return problems


def processed_events(
    body: dict[str, Any], kinds: tuple[str, ...] = ("processed",)
) -> list[dict[str, Any]]:
    """Return SendGrid events for every personalization of an accepted request."""
    now = int(time.time())
    events = []
    for p in body.get("personalizations", []):
        for kind in kinds:
            events.append(
                {
                    "email": p["to"][0]["email"],
                    "timestamp": now,
                    "event": kind,
                    "sg_event_id": uuid.uuid4().hex,
                    "sg_message_id": f"sg.{uuid.uuid4().hex[:12]}",
                    **p.get("custom_args", {}),
                }
            )
    return events


@dataclass
class SendGridServer:
    """The server's state: scripted replies, requests received, payload problems found.

    ``on_accepted`` (when set) gets each accepted request's body after the answer is sent,
    e.g. to post signed events back.
    """

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    on_accepted: Callable[[dict[str, Any]], None] | None = None
    keep_bodies: bool = True
    personalizations: int = 0
    message_ids: list[str] = field(default_factory=list)
    #: The address of each accepted personalization (its first ``to``), with repeats.
    addresses: list[str] = field(default_factory=list)

    def sent_message_ids(self) -> list[str]:
        """Return the engine message ids of every personalization accepted (with repeats)."""
        return list(self.message_ids)


@contextmanager
def sendgrid_server(keep_bodies: bool = True) -> Iterator[SendGridServer]:
    """Run a SendGrid-compatible API on 127.0.0.1 at a random port."""
    state = SendGridServer(keep_bodies=keep_bodies)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            body = json.loads(raw)
            with lock:
                if state.keep_bodies:
                    state.requests.append(body)
                if self.path != "/v3/mail/send":
                    state.problems.append(f"path {self.path}")
                state.problems.extend(check_payload(body, self.headers["Authorization"]))
                reply = state.script.pop(0) if state.script else Reply()
                number = len(state.requests)
            time.sleep(reply.delay)
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            accepted = 200 <= reply.status < 300
            if accepted:
                # Also after a delay: a slow answer may reach a client that gave up, and
                # SendGrid still has the mail.
                with lock:
                    people = body.get("personalizations", [])
                    state.personalizations += len(people)
                    state.message_ids.extend(
                        str(p.get("custom_args", {}).get("engine_message_id")) for p in people
                    )
                    state.addresses.extend(
                        str((p.get("to") or [{}])[0].get("email", "")).lower() for p in people
                    )
            try:
                self.send_response(reply.status)
                headers = {"X-Message-Id": f"sg{number}"} | reply.headers
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout case)
            if accepted and state.on_accepted is not None:
                state.on_accepted(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sendgrid_settings(server: SendGridServer, **extra: Any) -> dict[str, Any]:
    """Return settings pointing the SendGrid backend at a local server."""
    return {
        "MAIL_BACKEND": "sendgrid",
        "SENDGRID_API_KEY": API_KEY,
        "SENDGRID_API_HOST": server.url,
        "SENDGRID_TIMEOUT_SECONDS": 5,
        "MAIL_RETRY_ATTEMPTS": 3,
        "MAIL_RETRY_BASE_SECONDS": 0.01,
        "MAIL_RETRY_MAX_SECONDS": 0.05,
        **extra,
    }
