"""Start-up benchmark: ``engine --help`` and a no-change ``engine build`` of 10,000 products.

    python benchmarks/startup.py                        # in /tmp/startup-bench, 5 runs each
    python benchmarks/startup.py --work /tmp/startup-bench --repeat 5

The store is generated once into ``--work`` (benchmarks/synthetic.py, loaded straight into
SQLite) and built once; then each command runs as a separate process ``--repeat`` times and
the median wall time is reported (with the median CPU time, steadier on a busy machine), so
Python start-up and imports are included, as a user sees them. Prints the CPU model and load
average beside the table: wall times are only comparable on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import build as build_bench
from machine import cpu_model


def wall(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run a command to completion; return its wall and CPU (user + system) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu


def main(argv: list[str] | None = None) -> int:
    """Prepare the store if needed, time both commands and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/startup-bench"))
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median)")
    args = parser.parse_args(argv)
    work: Path = args.work / str(args.products)
    command = [sys.executable, "-m", "engine"]
    if (work / "instance" / "engine.sqlite3").exists():
        env = dict(os.environ, ENGINE_INSTANCE_PATH=str(work / "instance"))
    else:
        env = build_bench.prepare(args.products, work)
    # The first build renders everything; later ones find nothing changed.
    wall([*command, "build"], env, work)
    rows = []
    for label, extra in (("engine --help", ["--help"]), ("engine build (no change)", ["build"])):
        load = os.getloadavg()[0]
        runs = [wall([*command, *extra], env, work) for _ in range(args.repeat)]
        times = [seconds for seconds, _cpu in runs]
        cpu = statistics.median(cpu for _seconds, cpu in runs)
        rows.append(
            f"| {label} | {statistics.median(times):.2f} | {min(times):.2f} | "
            f"{max(times):.2f} | {cpu:.2f} | {args.repeat} | {load:.1f} |"
        )
    print(f"CPU: {cpu_model()}; load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.products:,} products, Python {platform.python_version()}")
    print("| command | median s | min s | max s | median CPU s | runs | load |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
