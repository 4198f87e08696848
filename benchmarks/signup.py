"""Waitlist signup benchmark: ``engine serve`` on default SQLite, driven by wrk.

    python benchmarks/signup.py                          # two 30 s phases, 50 connections
    python benchmarks/signup.py --rate 0 --seconds 60    # one phase, back to back
    python benchmarks/signup.py --rate 300 --rate 400    # two paced phases

Each phase builds a fresh temporary instance whose catalog holds one sold-out product
(three variants, no stock), starts ``engine serve --no-scheduler`` in it (its own process,
as a user runs it) with ``TRUSTED_PROXIES = 1``, and drives ``POST /api/waitlist`` with wrk
(Debian package ``wrk``, 4.1). Each request is what the page's script sends: the form's
fields as JSON in a ``text/plain`` body (email, variant, product, quantity, consent,
consent version, page, UTM values and the referrer), from an allowed ``Origin``, with a
fresh email address and a fresh ``X-Forwarded-For`` client address, so the default rate
limits stay on (counted in the database, as always) without one client hitting its limit.

Phases (``--rate``, repeatable; default ``0`` then ``350``):

- ``0``: every connection sends its next signup as soon as the last is answered (a closed
  loop): the server's ceiling. Latency is then connections / throughput by Little's law
  (50 connections at 400/s wait 125 ms on average), whatever the server does.
- ``R``: each connection pauses a random 0 to 2 x connections/R ms between an answer and
  its next signup, so 50 shoppers together offer about R signups/s (a little less, by the
  time they wait for answers); the latency is what one shopper waits at that rate.

After wrk ends the server is stopped and the rows are counted: every 202 must have its
signup row (wrk stops with up to one request per connection in flight, which the server
may have committed unanswered), and every stored signup its one confirmation email.
Prints one Markdown table (a column per phase) with the machine and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import _free_port, _machine, drive_serve  # the events benchmark's server driver

PRODUCT = "trail-tent"
CATALOG = f"""handle,title,option1_name,option1_value,sku,price,stock,policy,image
{PRODUCT},Trail Tent,Color,Green,TENT-GREEN,249.00,0,deny,https://cdn.example.com/tent.jpg
{PRODUCT},,,Sand,TENT-SAND,249.00,0,deny,
{PRODUCT},,,Slate,TENT-SLATE,259.00,0,deny,
"""

LUA = r"""
local variants = {"TENT-GREEN", "TENT-SAND", "TENT-SLATE"}
local referrers = {"https://www.google.com/", "", "https://www.facebook.com/",
  "__SITE__/guides/best-tents/"}
local utms = {"", "", ',"utm_source":"newsletter","utm_medium":"email","utm_campaign":"spring"',
  ',"utm_source":"facebook","utm_medium":"social"'}
local threads = {}
local gap_ms = __GAP_MS__

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  accepted = 0
  available = 0
  limited = 0
  invalid = 0
  unavailable = 0
  other = 0
  counter = 0
  math.randomseed(os.time() + id * 7919)
end

function delay()
  if gap_ms <= 0 then return 0 end
  return math.random(0, 2 * gap_ms)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"referrer":"%s","email":"Shopper.%d.%d@Example.com","variant":"%s","quantity":"%d",' ..
    '"consent":"y","consent_version":"__CONSENT__","product":"__PRODUCT__",' ..
    '"page":"/products/__PRODUCT__/"%s}',
    referrers[math.random(#referrers)], id, counter, variants[math.random(#variants)],
    math.random(1, 3), utms[math.random(#utms)])
  return wrk.format("POST", "/api/waitlist", {
    ["Content-Type"] = "text/plain;charset=UTF-8",
    ["Origin"] = "__SITE__",
    ["Referer"] = "__SITE__/products/__PRODUCT__/",
    ["X-Forwarded-For"] = string.format("10.%d.%d.%d", id, math.floor(counter / 250) % 250,
      counter % 250 + 1),
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " ..
      "Chrome/124.0.0.0 Safari/537.36",
  }, body)
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1
  elseif status == 200 then available = available + 1
  elseif status == 429 then limited = limited + 1
  elseif status == 400 then invalid = invalid + 1
  elseif status == 503 then unavailable = unavailable + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local totals = {accepted = 0, available = 0, limited = 0, invalid = 0, unavailable = 0,
    other = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do totals[name] = totals[name] + thread:get(name) end
  end
  io.write(string.format(
    'RESULT {"accepted": %d, "available": %d, "limited": %d, "invalid": %d, ' ..
    '"unavailable": %d, "other": %d, "requests": %d, "duration_us": %d, "errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    totals.accepted, totals.available, totals.limited, totals.invalid, totals.unavailable,
    totals.other, summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _run(command: list[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def _phase(args: argparse.Namespace, rate: float, work: Path) -> tuple[dict[str, str], bool]:
    """Run one wrk phase against a fresh instance; return its table column and the check."""
    from engine.settings import DEFAULTS
    from engine.waitlist import consent_version

    engine = shutil.which("engine", path=str(Path(sys.executable).parent)) or "engine"
    work.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    site = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        ENGINE_INSTANCE_PATH=str(work / "instance"),
        ENGINE_SITE_URL=site,
        # wrk's X-Forwarded-For names the shopper; the defaults' rate limits stay on.
        ENGINE_TRUSTED_PROXIES="1",
    )
    env.pop("ENGINE_DATABASE_URL", None)
    (work / "catalog.csv").write_text(CATALOG, encoding="utf-8")
    _run([engine, "db", "upgrade"], env, work)
    _run([engine, "catalog", "import", str(work / "catalog.csv")], env, work)
    gap_ms = round(args.connections * 1000 / rate) if rate > 0 else 0
    script = work / "signup.lua"
    script.write_text(
        LUA.replace("__SITE__", site)
        .replace("__PRODUCT__", PRODUCT)
        .replace("__CONSENT__", consent_version(str(DEFAULTS["WAITLIST_CONSENT_TEXT"])))
        .replace("__GAP_MS__", str(gap_ms)),
        encoding="utf-8",
    )
    run = drive_serve(args, env, work, port, script, "/api/waitlist")
    output, server_cpu = run.output, run.server_cpu
    result = json.loads(output.split("RESULT ", 1)[1].splitlines()[0])
    database = work / "instance" / "engine.sqlite3"
    with sqlite3.connect(database) as connection:
        stored = connection.execute("SELECT count(*) FROM waitlist_signup").fetchone()[0]
        subscribers = connection.execute("SELECT count(*) FROM subscriber").fetchone()[0]
        emails = connection.execute(
            "SELECT count(*) FROM mail_message WHERE idempotency_key LIKE 'waitlist-confirm:%'"
        ).fetchone()[0]
    seconds = result["duration_us"] / 1e6
    accepted = result["accepted"]
    # wrk stops with up to one request per connection in flight: those may be committed
    # without wrk reading their 202, so the table may hold a few more rows, never fewer.
    in_flight = stored - accepted
    every_2xx_stored = 0 <= in_flight <= args.connections
    one_email_each = emails == stored == subscribers
    answers = ", ".join(
        f"{result[key]:,} x {label}"
        for key, label in (
            ("accepted", "202"),
            ("available", "200"),
            ("invalid", "400"),
            ("limited", "429"),
            ("unavailable", "503"),
            ("other", "other"),
        )
        if result[key] or key == "accepted"
    )
    column = {
        "clients": (
            f"{args.connections}, each pausing 0-{2 * gap_ms} ms between signups"
            if rate > 0
            else f"{args.connections}, back to back (closed loop)"
        ),
        "signups/s (stored, answered 202)": f"{accepted / seconds:,.0f}",
        "p50 / p90 / p99": " / ".join(
            f"{result[key] / 1000:.1f} ms" for key in ("p50_us", "p90_us", "p99_us")
        ),
        "max": f"{result['max_us'] / 1000:.1f} ms",
        "answers": answers,
        "socket errors or timeouts": f"{result['errors']:,}",
        "stored vs 2xx": (
            f"{stored:,} rows = {accepted:,} x 202 + {in_flight} in flight "
            f"({'every 2xx stored' if every_2xx_stored else 'MISMATCH'})"
        ),
        "confirmation emails": (
            f"{emails:,} for {subscribers:,} people "
            f"({'one each' if one_email_each else 'MISMATCH'})"
        ),
        "server CPU per request": f"{server_cpu * 1000 / max(1, result['requests']):.2f} ms",
        "load average after (1/5/15 min)": run.load_after,
    }
    return column, every_2xx_stored and one_email_each


def main() -> None:
    """Run each phase and print one table: signups/s, latency, answers, stored-row checks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--seconds", type=int, default=30, help="length of each phase")
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        help="a phase whose clients pace themselves to about this many signups/s together "
        "(0: back to back); repeatable (default: 0 and 350)",
    )
    parser.add_argument("--serve-threads", type=int, default=0, help="SERVE_THREADS (0: default)")
    parser.add_argument("--work", type=Path, help="folder for the instances (default: a temp dir)")
    args = parser.parse_args()
    rates = args.rate or [0.0, 350.0]
    work = args.work or Path(tempfile.mkdtemp(prefix="engine-signup-"))
    columns = []
    good = True
    for number, rate in enumerate(rates):
        column, ok = _phase(args, rate, work / f"phase-{number + 1}")
        columns.append(column)
        good = good and ok
    print(f"machine: {_machine()}; engine serve (waitress, default SQLite) and wrk share it")
    clients = f"{args.connections} connections"
    print(f"load: wrk {args.threads} threads, {clients}, {args.seconds} s a phase")
    names = list(columns[0])
    print("| " + " | ".join(["", *(f"phase {n + 1}" for n in range(len(columns)))]) + " |")
    print("|" + " --- |" * (len(columns) + 1))
    for name in names:
        print("| " + " | ".join([name, *(column[name] for column in columns)]) + " |")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if not good:
        sys.exit(1)


if __name__ == "__main__":
    main()
