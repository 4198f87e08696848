"""Page-view ingestion benchmark: ``engine serve`` on default SQLite, driven by wrk.

    python benchmarks/ingest.py                         # 50 connections, 30 s
    python benchmarks/ingest.py --connections 50 --seconds 60 --threads 2

Starts ``engine serve --no-scheduler`` in a fresh temporary instance (its own process, as a
user runs it), then drives ``POST /api/events`` with wrk (Debian package ``wrk``, 4.1) and a
Lua script that sends beacon bodies as ``text/plain`` with a browser user agent, over many
pages, referrers and user agents, and counts every status. After wrk ends, the server is
stopped and the benchmark checks that every 202 answer has its row (wrk stops with up to
one request per connection in flight, which the server may have committed unanswered).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model

LUA = r"""
local pages = {}
for i = 1, 500 do pages[i] = "/products/item-" .. i .. "/" end
local referrers = {"https://www.google.com/", "https://duckduckgo.com/", "", "",
  "https://www.facebook.com/", "https://news.ycombinator.com/item?id=1", "__SITE__/guides/x/"}
local queries = {"", "", "", "?utm_source=newsletter&utm_medium=email&et=tok123",
  "?gclid=abc", "?utm_source=facebook&utm_medium=social"}
local agents = {}
for i = 1, 2000 do
  agents[i] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 " ..
    "(KHTML, like Gecko) Chrome/124.0." .. i .. ".0 Safari/537.36"
end
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  accepted = 0
  other = 0
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  counter = counter + 1
  local body = string.format('{"p":"%s","r":"%s","u":"%s"}',
    pages[math.random(#pages)], referrers[math.random(#referrers)],
    queries[math.random(#queries)])
  return wrk.format("POST", "/api/events", {
    ["Content-Type"] = "text/plain;charset=UTF-8",
    ["Origin"] = "__SITE__",
    ["User-Agent"] = agents[math.random(#agents)],
  }, body)
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, thread in ipairs(threads) do
    a = a + thread:get("accepted")
    o = o + thread:get("other")
  end
  io.write(string.format(
    'RESULT {"accepted": %d, "other": %d, "requests": %d, "duration_us": %d, ' ..
    '"errors": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    a, o, summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"engine serve exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit("engine serve did not start")


def _machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs"


def _cpu_seconds(pid: int) -> float:
    """Return a process's CPU time so far (user + system), from /proc; 0 where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "?"


@dataclass
class LoadRun:
    """What one wrk run against ``engine serve`` gave: wrk's output and the server's CPU."""

    output: str
    server_cpu: float
    load_before: str
    load_after: str


def drive_serve(
    args: argparse.Namespace, env: dict[str, str], work: Path, port: int, script: Path, path: str
) -> LoadRun:
    """Start ``engine serve --no-scheduler`` in ``work``, run wrk (``script``) against
    ``path`` with ``args``' threads, connections and seconds, then stop the server."""
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    engine = shutil.which("engine", path=str(Path(sys.executable).parent)) or "engine"
    if args.serve_threads:
        env = dict(env, ENGINE_SERVE_THREADS=str(args.serve_threads))
    # The server's output goes to a file: a pipe nobody reads would fill up and stall it.
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [engine, "serve", "--no-scheduler", "--port", str(port)],
        env=env,
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(port, server)
        command = [
            wrk,
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ]
        print("$", " ".join(command), file=sys.stderr)
        load_before = _load()
        cpu_before = _cpu_seconds(server.pid)
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        server_cpu = _cpu_seconds(server.pid) - cpu_before
        load_after = _load()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    return LoadRun(output, server_cpu, load_before, load_after)


def main() -> None:
    """Run the benchmark and print events/s, latency and the stored-count check."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--serve-threads", type=int, default=0, help="SERVE_THREADS (0: default)")
    parser.add_argument("--work", type=Path, help="instance folder to use (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="engine-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    site = f"http://127.0.0.1:{port}"
    env = dict(os.environ, ENGINE_INSTANCE_PATH=str(work / "instance"), ENGINE_SITE_URL=site)
    script = work / "events.lua"
    script.write_text(LUA.replace("__SITE__", site), encoding="utf-8")
    run = drive_serve(args, env, work, port, script, "/api/events")
    output, server_cpu = run.output, run.server_cpu
    load_before, load_after = run.load_before, run.load_after
    result = json.loads(output.split("RESULT ", 1)[1].splitlines()[0])
    database = work / "instance" / "engine.sqlite3"
    with sqlite3.connect(database) as connection:
        stored = connection.execute("SELECT count(*) FROM page_view").fetchone()[0]
    seconds = result["duration_us"] / 1e6
    threads = args.serve_threads or "default"
    events_per_second = result["accepted"] / seconds
    p50, p99 = result["p50_us"] / 1000, result["p99_us"] / 1000
    print(f"machine: {_machine()}")
    print(f"load average (1/5/15 min): {load_before} before, {load_after} after")
    print(
        f"load: wrk {args.threads} threads, {args.connections} connections, {seconds:.1f} s, "
        f"SERVE_THREADS {threads}"
    )
    print(f"events/s: {events_per_second:,.0f} (202 answers per second)")
    print(
        f"latency: p50 {p50:.1f} ms, p90 {result['p90_us'] / 1000:.1f} ms, "
        f"p99 {p99:.1f} ms, max {result['max_us'] / 1000:.1f} ms"
    )
    print(
        f"answers: {result['accepted']:,} x 202, {result['other']:,} other, "
        f"{result['errors']:,} socket errors or timeouts"
    )
    # The server shares the CPUs with wrk (and whatever else runs): its CPU time per request
    # says what the code costs, whatever the machine was doing.
    cpu = f"{server_cpu / max(result['requests'], 1) * 1000:.2f} ms" if server_cpu else "?"
    print(f"server CPU: {server_cpu:.1f} s user+system, {cpu} per request")
    # wrk stops with up to one request per connection in flight: those may be committed
    # without wrk reading their 202, so the table may hold a few more rows, never fewer.
    in_flight = stored - result["accepted"]
    every_202_stored = 0 <= in_flight <= args.connections
    print(
        f"stored: {stored:,} rows = {result['accepted']:,} answered 202 + {in_flight} in flight "
        f"when wrk stopped ({'every 202 is stored' if every_202_stored else 'MISMATCH'})"
    )
    print()
    print("| events/s | p50 | p99 | server CPU per request | every 202 stored | load average |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {events_per_second:,.0f} | {p50:.0f} ms | {p99:.0f} ms | {cpu} | "
        f"{'yes' if every_202_stored else 'NO'} ({result['accepted']:,} x 202, "
        f"{stored:,} rows) | {load_before} |"
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if not every_202_stored:
        sys.exit(1)


if __name__ == "__main__":
    main()
