"""The mail interface and its backends, against a real SMTP server and a local SendGrid API."""

from __future__ import annotations

import email
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import jinja2
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from engine.mail import (
    MESSAGE_ID_ARG,
    DeliveryStatus,
    MailError,
    Message,
    Recipient,
    make_backend,
    read_outbox,
    render_email,
    unsubscribe_headers,
)
from engine.mail.outbox import OutboxBackend
from engine.mail.sendgrid import SendGridBackend, split_requests
from engine.mail.smtp import SMTPBackend

REPO = Path(__file__).resolve().parent.parent

MESSAGE = Message(
    subject="Back in stock for -name-",
    html="<p>Hello -name-, <a href='-link-'>it is back</a>.</p>",
    text="Hello -name-, it is back: -link-",
    sender="Trail Store <hello@shop.test>",
    reply_to="help@shop.test",
    headers={"X-Campaign": "restock-7"},
    categories=("restock",),
)


def recipient(number: int, **extra: Any) -> Recipient:
    """Return a recipient with their own headers, substitutions and custom arguments."""
    unsubscribe = f"https://api.shop.test/unsubscribe/tok{number}"
    values: dict[str, Any] = {
        "email": f"person{number}@example.org",
        "name": f"Person {number}",
        "headers": unsubscribe_headers(unsubscribe),
        "substitutions": {
            "-name-": f"Person {number}",
            "-link-": f"https://shop.test/p?m={number}",
        },
        "custom_args": {"campaign": "7", "signup": str(number)},
        "message_id": f"msg{number:05d}",
    }
    values.update(extra)
    return Recipient(**values)


def free_port() -> int:
    """Return a port nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- outbox -----------------------------------------------------------------------------


def test_outbox_is_the_default_backend(tmp_path: Path) -> None:
    backend = make_backend({"INSTANCE_PATH": str(tmp_path)})
    assert isinstance(backend, OutboxBackend)
    assert backend.folder == tmp_path / "outbox"


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(MailError, match="MAIL_BACKEND 'pigeon' is unknown; known: outbox"):
        make_backend({"MAIL_BACKEND": "pigeon"})


def test_outbox_writes_one_personalized_eml_per_recipient(tmp_path: Path) -> None:
    backend = OutboxBackend({"INSTANCE_PATH": str(tmp_path)})
    results = backend.send_batch(MESSAGE, [recipient(1), recipient(2)])
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 2
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert files == ["msg00001.eml", "msg00002.eml"]
    first = read_outbox(tmp_path / "outbox")[0]
    assert first["Subject"] == "Back in stock for Person 1"
    assert first["To"] == "Person 1 <person1@example.org>"
    assert first["List-Unsubscribe"] == "<https://api.shop.test/unsubscribe/tok1>"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["Message-ID"] == "<msg00001@shop.test>"
    assert json.loads(first["X-Engine-Custom-Args"]) == {
        "campaign": "7",
        "signup": "1",
        MESSAGE_ID_ARG: "msg00001",
    }
    text = first.get_body(("plain",))
    html = first.get_body(("html",))
    assert text is not None and html is not None
    assert "Hello Person 1, it is back: https://shop.test/p?m=1" in text.get_content()
    assert "<a href='https://shop.test/p?m=1'>" in html.get_content()


def test_outbox_resend_overwrites_instead_of_duplicating(tmp_path: Path) -> None:
    backend = OutboxBackend({"INSTANCE_PATH": str(tmp_path)})
    backend.send_batch(MESSAGE, [recipient(1)])
    backend.send_batch(MESSAGE, [recipient(1)])
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["msg00001.eml"]


def test_invalid_recipient_is_rejected_alone(tmp_path: Path) -> None:
    backend = OutboxBackend({"INSTANCE_PATH": str(tmp_path)})
    leaky = recipient(3, custom_args={"who": "person3@example.org"})
    bad = recipient(4, email="not an address")
    results = backend.send_batch(MESSAGE, [recipient(1), leaky, bad])
    assert [r.status for r in results] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.REJECTED,
        DeliveryStatus.REJECTED,
    ]
    assert "personal data" in results[1].reason
    assert "not a valid email address" in results[2].reason


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"headers": {"Subject": "x"}}, "set by the mail backend"),
        ({"headers": {"X-A": "one\r\nBcc: x@y.z"}}, "one-line"),
        ({"categories": tuple(f"c{i}" for i in range(11))}, "at most 10 categories"),
        ({"sender": "nobody"}, "MAIL_FROM"),
        ({"text": ""}, "both a text and an HTML part"),
    ],
)
def test_unusable_message_raises_before_sending(
    tmp_path: Path, change: dict[str, Any], error: str
) -> None:
    values = {**MESSAGE.__dict__, **change}
    with pytest.raises(MailError, match=error):
        OutboxBackend({"INSTANCE_PATH": str(tmp_path)}).send_batch(
            Message(**values), [recipient(1)]
        )
    assert not (tmp_path / "outbox").exists() or not any((tmp_path / "outbox").iterdir())


# --- rendering --------------------------------------------------------------------------


@pytest.fixture
def environment() -> jinja2.Environment:
    """Return a plain Jinja environment on the repository's templates."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO / "templates"),
        autoescape=jinja2.select_autoescape(),
        undefined=jinja2.StrictUndefined,
    )


SETTINGS = {
    "SITE_NAME": "Trail & Co",
    "COMPANY_ADDRESS": "Trail & Co, 1 Ridge Road, Boulder, USA",
    "SITE_URL": "https://shop.test",
}


def test_render_email_pair_with_layout_and_inlined_css(environment: jinja2.Environment) -> None:
    rendered = render_email(environment, "test", SETTINGS, {"name": "Ann <3"})
    assert rendered.subject == "This is a test from Trail & Co"
    assert "This is a test from Trail & Co." in rendered.text
    assert "Hello, Ann <3." in rendered.text
    assert "Unsubscribe: -unsubscribe_url-" in rendered.text
    assert "Manage your waitlists: -manage_url-" in rendered.text
    assert rendered.text.rstrip().endswith("1 Ridge Road, Boulder, USA")
    assert "Hello, Ann &lt;3." in rendered.html
    assert "<title>This is a test from Trail &amp; Co</title>" in rendered.html
    assert 'href="-unsubscribe_url-"' in rendered.html
    assert 'href="-manage_url-"' in rendered.html
    assert "Trail &amp; Co, 1 Ridge Road" in rendered.html
    # Rules moved onto the elements; only the media query stays in a style tag.
    assert 'class="content" style="padding: 24px 28px;"' in rendered.html
    assert ".wrapper" not in rendered.html


def test_render_email_with_real_links(environment: jinja2.Environment) -> None:
    context = {"unsubscribe_url": "https://api.shop.test/unsubscribe/t?a=1&b=2"}
    rendered = render_email(environment, "test", SETTINGS, context)
    assert 'href="https://api.shop.test/unsubscribe/t?a=1&amp;b=2"' in rendered.html
    assert "Unsubscribe: https://api.shop.test/unsubscribe/t?a=1&b=2" in rendered.text


def test_render_email_through_the_pages_environment(tmp_path: Path) -> None:
    from engine.pages import make_environment
    from engine.settings import load_settings

    settings = load_settings(
        tmp_path, environ={}, overrides={**SETTINGS, "TEMPLATES_DIR": str(REPO / "templates")}
    )
    rendered = render_email(make_environment(settings), "test", settings, {"name": "Bo & Co"})
    assert rendered.subject == "This is a test from Trail & Co"
    assert "Hello, Bo & Co." in rendered.text
    assert "Hello, Bo &amp; Co." in rendered.html


def test_missing_email_template_is_a_clear_error(environment: jinja2.Environment) -> None:
    with pytest.raises(MailError, match=r"emails/nope\.txt\.j2 not found"):
        render_email(environment, "nope", SETTINGS)


# --- SMTP -------------------------------------------------------------------------------


@dataclass
class Received:
    """What the SMTP server took in."""

    messages: list[tuple[str, list[str], EmailMessage, tuple[str, int]]] = field(
        default_factory=list
    )


class RecordingHandler:
    """An aiosmtpd handler: refuses some recipients, keeps every message it accepts."""

    def __init__(self, received: Received) -> None:
        self.received = received

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.startswith("nobody"):
            return "550 5.1.1 No such user here"
        if address.startswith("busy"):
            return "451 4.3.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = cast(bytes, envelope.content)
        parsed = cast(EmailMessage, email.message_from_bytes(content, policy=default_policy))
        peer = cast(tuple[str, int], session.peer)
        mail_from = cast(str, envelope.mail_from)
        self.received.messages.append((mail_from, list(envelope.rcpt_tos), parsed, peer))
        return f"250 2.0.0 Ok: queued as Q{len(self.received.messages)}"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Received]]:
    """Run a real SMTP server on 127.0.0.1 at a random port."""
    received = Received()
    port = free_port()
    controller = Controller(RecordingHandler(received), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def smtp_settings(port: int) -> dict[str, Any]:
    """Return settings pointing the SMTP backend at a local port."""
    return {"MAIL_BACKEND": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": port,
            "SMTP_TIMEOUT_SECONDS": 5}  # fmt: skip


def test_smtp_sends_each_personalized_copy_over_one_connection(
    smtp_server: tuple[int, Received],
) -> None:
    port, received = smtp_server
    backend = make_backend(smtp_settings(port))
    assert isinstance(backend, SMTPBackend)
    results = backend.send_batch(MESSAGE, [recipient(1), recipient(2)])
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 2
    assert results[0].provider_id == "2.0.0 Ok: queued as Q1"
    assert len(received.messages) == 2
    assert len({peer for *_, peer in received.messages}) == 1  # one connection
    for number, (mail_from, rcpts, parsed, _peer) in enumerate(received.messages, start=1):
        assert mail_from == "hello@shop.test"
        assert rcpts == [f"person{number}@example.org"]
        assert parsed["Subject"] == f"Back in stock for Person {number}"
        assert parsed["From"] == "Trail Store <hello@shop.test>"
        assert parsed["Reply-To"] == "help@shop.test"
        assert parsed["X-Campaign"] == "restock-7"
        assert parsed["List-Unsubscribe"] == f"<https://api.shop.test/unsubscribe/tok{number}>"
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert parsed["Message-ID"] == f"<msg{number:05d}@shop.test>"
        assert "X-Engine-Custom-Args" not in parsed
        assert parsed.get_content_type() == "multipart/alternative"
        text = parsed.get_body(("plain",))
        html = parsed.get_body(("html",))
        assert text is not None and html is not None
        assert f"Hello Person {number}, it is back: https://shop.test/p?m={number}" in (
            text.get_content()
        )
        assert f"<a href='https://shop.test/p?m={number}'>" in html.get_content()


def test_smtp_reports_refusals_per_recipient(smtp_server: tuple[int, Received]) -> None:
    port, received = smtp_server
    batch = [
        recipient(1),
        recipient(2, email="nobody@example.org"),
        recipient(3, email="busy@example.org"),
        recipient(4),
    ]
    results = make_backend(smtp_settings(port)).send_batch(MESSAGE, batch)
    assert [r.status for r in results] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.REJECTED,
        DeliveryStatus.DEFERRED,
        DeliveryStatus.ACCEPTED,
    ]
    assert "550 5.1.1 No such user here" in results[1].reason
    assert "451 4.3.0" in results[2].reason
    assert [rcpts for _f, rcpts, *_ in received.messages] == [
        ["person1@example.org"],
        ["person4@example.org"],
    ]


def test_smtp_server_down_defers_everyone() -> None:
    results = make_backend(smtp_settings(free_port())).send_batch(MESSAGE, [recipient(1)])
    assert results[0].status is DeliveryStatus.DEFERRED
    assert "cannot connect to SMTP 127.0.0.1" in results[0].reason


# --- SendGrid ---------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer of the local SendGrid API."""

    status: int = 202
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class FakeSendGrid:
    """A SendGrid-compatible v3 Mail Send server that checks every payload it gets."""

    url: str
    script: list[Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_payload(body: dict[str, Any], authorization: str) -> list[str]:
    """Return what is wrong with a v3 Mail Send body, by SendGrid's documented rules."""
    problems = []
    if authorization != "Bearer SG.test-key":
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
        for name, value in p.get("headers", {}).items():
            if not isinstance(value, str) or "\n" in value:
                problems.append(f"header {name}")
    if len(body.get("categories", [])) > 10:
        problems.append("too many categories")
    types = [c["type"] for c in body.get("content", [])]
    if types[:1] != ["text/plain"]:
        problems.append(f"content order {types}")
    if "email" not in body.get("from", {}):
        problems.append("from")
    return problems


@pytest.fixture
def sendgrid_api() -> Iterator[FakeSendGrid]:
    """Run a local SendGrid-compatible API on 127.0.0.1; answer from a script."""
    state = FakeSendGrid(url="", script=[])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            body = json.loads(raw)
            with lock:
                state.requests.append(body)
                if self.path != "/v3/mail/send":
                    state.problems.append(f"path {self.path}")
                state.problems.extend(check_payload(body, self.headers["Authorization"]))
                reply = state.script.pop(0) if state.script else Reply()
            time.sleep(reply.delay)
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                headers = {"X-Message-Id": f"sg{len(state.requests)}"} | reply.headers
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout case)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sendgrid_backend(api: FakeSendGrid, **settings: Any) -> tuple[SendGridBackend, list[float]]:
    """Return a SendGrid backend on the local API, and the list of its waits."""
    values = {
        "MAIL_BACKEND": "sendgrid",
        "SENDGRID_API_KEY": "SG.test-key",
        "SENDGRID_API_HOST": api.url,
        "SENDGRID_TIMEOUT_SECONDS": 5,
        "MAIL_RETRY_ATTEMPTS": 3,
        "MAIL_RETRY_BASE_SECONDS": 0.5,
        "MAIL_RETRY_MAX_SECONDS": 30,
        **settings,
    }
    backend = make_backend(values)
    assert isinstance(backend, SendGridBackend)
    waits: list[float] = []
    backend.sleep = waits.append  # record the waits instead of sleeping through them
    return backend, waits


def test_sendgrid_payload_carries_each_recipients_own_parts(sendgrid_api: FakeSendGrid) -> None:
    backend, waits = sendgrid_backend(sendgrid_api)
    results = backend.send_batch(MESSAGE, [recipient(1), recipient(2)])
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 2
    assert {r.provider_id for r in results} == {"sg1"}
    assert sendgrid_api.problems == [] and waits == []
    (body,) = sendgrid_api.requests
    assert body["from"] == {"email": "hello@shop.test", "name": "Trail Store"}
    assert body["reply_to"] == {"email": "help@shop.test"}
    assert body["subject"] == "Back in stock for -name-"
    assert body["headers"] == {"X-Campaign": "restock-7"}
    assert body["categories"] == ["restock"]
    assert body["tracking_settings"] == {"subscription_tracking": {"enable": False}}
    first = body["personalizations"][0]
    assert first["to"] == [{"email": "person1@example.org", "name": "Person 1"}]
    assert first["headers"] == {
        "List-Unsubscribe": "<https://api.shop.test/unsubscribe/tok1>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert first["substitutions"] == {"-name-": "Person 1", "-link-": "https://shop.test/p?m=1"}
    assert first["custom_args"] == {"campaign": "7", "signup": "1", MESSAGE_ID_ARG: "msg00001"}


def test_sendgrid_splits_1500_recipients_into_two_requests(sendgrid_api: FakeSendGrid) -> None:
    backend, _ = sendgrid_backend(sendgrid_api)
    results = backend.send_batch(MESSAGE, [recipient(n) for n in range(1500)])
    assert all(r.accepted for r in results) and len(results) == 1500
    assert [len(b["personalizations"]) for b in sendgrid_api.requests] == [1000, 500]
    assert [r.provider_id for r in results[999:1001]] == ["sg1", "sg2"]
    assert sendgrid_api.problems == []


def test_sendgrid_never_repeats_an_address_in_one_request(sendgrid_api: FakeSendGrid) -> None:
    backend, _ = sendgrid_backend(sendgrid_api)
    batch = [recipient(1), recipient(2), recipient(3, email="PERSON1@example.org")]
    results = backend.send_batch(MESSAGE, batch)
    assert all(r.accepted for r in results)
    assert [len(b["personalizations"]) for b in sendgrid_api.requests] == [2, 1]
    assert sendgrid_api.problems == []
    assert split_requests([recipient(n) for n in range(5)], 2) == [[0, 1], [2, 3], [4]]


def test_sendgrid_429_waits_for_the_rate_limit_reset(sendgrid_api: FakeSendGrid) -> None:
    backend, waits = sendgrid_backend(sendgrid_api)
    reset = int(time.time()) + 7
    sendgrid_api.script = [
        Reply(429, {"errors": [{"message": "too many requests"}]},
              {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
               "X-RateLimit-Reset": str(reset)}),
        Reply(202),
    ]  # fmt: skip
    results = backend.send_batch(MESSAGE, [recipient(1)])
    assert results[0].accepted and results[0].provider_id == "sg2"
    assert len(sendgrid_api.requests) == 2
    assert len(waits) == 1 and 5 <= waits[0] <= 7


def test_sendgrid_5xx_backs_off_exponentially_then_gives_up(sendgrid_api: FakeSendGrid) -> None:
    backend, waits = sendgrid_backend(sendgrid_api)
    sendgrid_api.script = [Reply(500), Reply(202)]
    assert backend.send_batch(MESSAGE, [recipient(1)])[0].accepted
    assert waits == [0.5]
    sendgrid_api.script = [Reply(503)] * 4
    waits.clear()
    (outcome,) = backend.send_batch(MESSAGE, [recipient(2)])
    assert outcome.status is DeliveryStatus.DEFERRED and not outcome.permanent
    assert "SendGrid server error (503)" in outcome.reason
    assert waits == [0.5, 1.0, 2.0]
    assert len(sendgrid_api.requests) == 2 + 4


def test_sendgrid_400_is_a_clear_permanent_failure(sendgrid_api: FakeSendGrid) -> None:
    backend, waits = sendgrid_backend(sendgrid_api)
    error = {"errors": [{"message": "The from address does not match a verified Sender "
                                    "Identity.", "field": "from", "help": None}]}  # fmt: skip
    sendgrid_api.script = [Reply(400, error)]
    results = backend.send_batch(MESSAGE, [recipient(1), recipient(2)])
    assert [r.status for r in results] == [DeliveryStatus.REJECTED] * 2
    assert results[0].permanent
    assert results[0].reason == (
        "SendGrid refused the request (400): from: The from address does not match a "
        "verified Sender Identity."
    )
    assert waits == [] and len(sendgrid_api.requests) == 1


def test_sendgrid_400_naming_one_personalization_spares_the_others(
    sendgrid_api: FakeSendGrid,
) -> None:
    backend, _ = sendgrid_backend(sendgrid_api)
    error = {"errors": [{"message": "Does not contain a valid address.",
                         "field": "personalizations.1.to.0.email"}]}  # fmt: skip
    sendgrid_api.script = [Reply(400, error), Reply(202)]
    results = backend.send_batch(MESSAGE, [recipient(1), recipient(2), recipient(3)])
    assert [r.status for r in results] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.REJECTED,
        DeliveryStatus.ACCEPTED,
    ]
    assert results[1].reason == "SendGrid refused it: Does not contain a valid address."
    assert [len(b["personalizations"]) for b in sendgrid_api.requests] == [3, 2]


def test_sendgrid_timeout_is_an_unknown_fate_never_retried(sendgrid_api: FakeSendGrid) -> None:
    backend, waits = sendgrid_backend(sendgrid_api, SENDGRID_TIMEOUT_SECONDS=0.3)
    sendgrid_api.script = [Reply(202, delay=1.0)]
    results = backend.send_batch(MESSAGE, [recipient(1), recipient(2)])
    assert [r.status for r in results] == [DeliveryStatus.UNKNOWN] * 2
    assert results[0].unknown and not results[0].failed
    assert "may have been accepted" in results[0].reason
    assert len(sendgrid_api.requests) == 1 and waits == []


def test_sendgrid_bad_key_keeps_the_mail_for_later(sendgrid_api: FakeSendGrid) -> None:
    backend, _ = sendgrid_backend(sendgrid_api)
    error = {"errors": [{"message": "The provided authorization grant is invalid.", "field": None}]}
    sendgrid_api.script = [Reply(401, error)]
    (outcome,) = backend.send_batch(MESSAGE, [recipient(1)])
    assert outcome.status is DeliveryStatus.DEFERRED
    assert "check SENDGRID_API_KEY" in outcome.reason


def test_sendgrid_unreachable_is_deferred_after_bounded_retries() -> None:
    api = FakeSendGrid(url=f"http://127.0.0.1:{free_port()}", script=[])
    backend, waits = sendgrid_backend(api)
    (outcome,) = backend.send_batch(MESSAGE, [recipient(1)])
    assert outcome.status is DeliveryStatus.DEFERRED
    assert "cannot reach SendGrid" in outcome.reason
    assert waits == [0.5, 1.0, 2.0]


def test_sendgrid_needs_an_api_key() -> None:
    with pytest.raises(MailError, match="SENDGRID_API_KEY is empty"):
        make_backend({"MAIL_BACKEND": "sendgrid", "SENDGRID_API_KEY": ""})


def test_sendgrid_refuses_personal_data_in_custom_args_locally(
    sendgrid_api: FakeSendGrid,
) -> None:
    backend, _ = sendgrid_backend(sendgrid_api)
    leaky = recipient(2, custom_args={"email": "someone@example.org"})
    results = backend.send_batch(MESSAGE, [recipient(1), leaky])
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.REJECTED]
    assert len(sendgrid_api.requests[0]["personalizations"]) == 1
