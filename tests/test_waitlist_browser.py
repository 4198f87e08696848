"""A real browser on a built demo page: the beacon's page view arrives; the form submits in place.

``engine demo --no-serve`` seeds and builds the demo store, ``engine serve`` serves it (the
live preview is byte-identical to the built files) and the API on one 127.0.0.1 port, and
Debian's headless Chromium loads a product page with a desktop Chrome user agent (the
tracking endpoint drops ``HeadlessChrome`` as a bot). SQLite only: this checks what the
browser sends; the endpoints' storage is tested on both databases by their own tests, and
a server subprocess sharing a PostgreSQL test schema would add nothing to that.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.settings import bundled_path

CHROMIUM = os.environ.get("CHROME_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--user-agent={DESKTOP_UA}",
)
PRODUCT = "ridgeline-frameless-35"  # back soon, two sold-out sizes

if not Path(CHROMIUM).is_file():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI needs Chromium for the browser tests; none at {CHROMIUM}")
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt install chromium, or set CHROME_PATH)",
        allow_module_level=True,
    )


@dataclass
class Served:
    """The demo store served by ``engine serve``: its URL, database file and built folder."""

    url: str
    database: Path
    site: Path


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Seed, build and serve the demo store in a fresh instance."""
    work = tmp_path_factory.mktemp("browser")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database = work / "engine.sqlite3"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ENGINE_") or key.startswith("ENGINE_TEST_")
    }
    env.update(
        ENGINE_INSTANCE_PATH=str(work / "instance"),
        ENGINE_DATABASE_URL=f"sqlite:///{database}",
        ENGINE_SITE_URL=url,
        ENGINE_API_URL=url,
        ENGINE_CONTENT_DIR=str(bundled_path("demo_content")),
        ENGINE_OUTPUT_DIR=str(work / "site"),
        ENGINE_SECRET_KEY="browser-test",
    )
    engine = str(Path(sys.executable).with_name("engine"))
    subprocess.run(
        [engine, "demo", "--no-serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [engine, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = (work / "serve.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"engine serve did not start:\n{output}") from None
                time.sleep(0.2)
        yield Served(url, database, work / "site")
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def query(database: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one read query on the served instance's database."""
    with sqlite3.connect(database, timeout=10) as connection:
        return list(connection.execute(sql, params))


def wait_for(check: Any, seconds: float = 15) -> Any:
    """Poll until ``check()`` is truthy; return its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def test_the_beacon_on_a_built_page_records_a_page_view(served: Served) -> None:
    path = f"/products/{PRODUCT}/"
    # What the browser gets is the built file, byte for byte.
    with urllib.request.urlopen(served.url + path) as response:
        assert response.read() == (served.site / "products" / PRODUCT / "index.html").read_bytes()
    before = query(served.database, "SELECT count(*) FROM page_view WHERE path = ?", path)[0][0]
    page = subprocess.run(
        [
            CHROMIUM,
            *CHROME_FLAGS,
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"{served.url}{path}?utm_source=newsletter&utm_medium=email",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'id="waitlist"' in page.stdout, page.stderr[-2000:]

    def arrived() -> list[tuple[Any, ...]]:
        return query(
            served.database,
            "SELECT channel, source FROM page_view WHERE path = ? ORDER BY id",
            path,
        )[before:]

    views = wait_for(arrived)
    assert views == [("email", "newsletter")]


# ------------------------------------------------------------------ the form, in place


class DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, url: str) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def pipes() -> None:
            # Out of the way first, so neither end is overwritten by the other's dup2.
            read_end = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        # The browser reads commands on fd 3 and writes answers on fd 4. Python opens its
        # own descriptors non-inheritable, so only these two (dup2 makes them inheritable)
        # reach the browser even without close_fds.
        self.process = subprocess.Popen(
            [CHROMIUM, *CHROME_FLAGS, "--remote-debugging-pipe", "about:blank"],
            close_fds=False,
            preexec_fn=pipes,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next = 0
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are ignored)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 65536)
                if not chunk:
                    raise RuntimeError("the browser closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its (JSON) value."""
        result = self.call(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        return result["result"].get("value")

    def close(self) -> None:
        """Quit the browser."""
        self.process.terminate()
        self.process.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)


def test_the_form_submits_in_place_with_javascript(served: Served) -> None:
    path = f"/products/{PRODUCT}/"
    browser = DevTools(f"{served.url}{path}?utm_source=instagram&utm_medium=social")
    try:
        ready = "document.readyState === 'complete' && !!document.querySelector('form').noValidate"
        assert wait_for(lambda: browser.evaluate(ready))
        # Submitting empty: errors next to the fields, focus on the first invalid one.
        browser.evaluate("document.querySelector('form.waitlist-form').requestSubmit()")
        invalid = browser.evaluate(
            "[document.activeElement.id,"
            " document.getElementById('waitlist-email').getAttribute('aria-invalid'),"
            " document.getElementById('waitlist-email').getAttribute('aria-describedby'),"
            " (document.getElementById('waitlist-email-error') || {}).textContent]"
        )
        assert invalid == [
            "waitlist-email",
            "true",
            "waitlist-email-error",
            "Enter your email address.",
        ]
        # Filled in: sent as JSON, answered in the live region, focus on the message.
        browser.evaluate(
            "document.getElementById('waitlist-email').value = 'Browser.Shopper@example.com';"
            "document.getElementById('waitlist-consent').checked = true;"
            "document.getElementById('waitlist-variant').value = 'RL-FL35-ML';"
            "document.getElementById('waitlist-quantity').value = '2';"
            "document.querySelector('form.waitlist-form').requestSubmit()"
        )
        status = "document.querySelector('.waitlist-status')"
        text = wait_for(
            lambda: browser.evaluate(
                f"{status}.classList.contains('is-ok') && {status}.textContent"
            )
        )
        assert text and text.startswith("Thanks!")
        assert browser.evaluate("document.activeElement.className").startswith("waitlist-status")
        assert browser.evaluate("location.hash") == ""  # no page load happened
    finally:
        browser.close()
    rows = query(
        served.database,
        "SELECT s.sku, s.status, s.via, s.quantity, s.channel, s.source, s.page"
        " FROM waitlist_signup s JOIN subscriber p ON p.id = s.subscriber_id"
        " WHERE p.address = ?",
        "browser.shopper@example.com",
    )
    assert rows == [("RL-FL35-ML", "pending", "json", 2, "social", "instagram", path)]
