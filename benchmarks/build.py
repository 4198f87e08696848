"""Build benchmark: full builds of 10,000 and 100,000 products, rebuilds of 10,000.

    python benchmarks/build.py                      # 10k and 100k, in a temporary folder
    python benchmarks/build.py --sizes 10000 --repeat 3 --work /tmp/engine-bench

Each store is generated once (benchmarks/synthetic.py, loaded straight into SQLite), then
``engine build`` runs as a separate process per measurement, so the times include Python
start-up and imports, as a user sees them. Before each measurement the disk's pending
write-back is flushed (``sync``, not timed). One-SKU changes are reported twice: the first two
after a from-scratch build (each stages a new generation folder tree, copied by a child
process while the build plans) and the steady state after them (each recycles the oldest
generation). Memory is the peak resident set of the largest
process (from ``wait4``) and the peak proportional set size summed over the build and its
render workers (sampled every 100 ms; PSS counts pages shared after ``fork`` once). Full
builds are timed in runs nobody samples; their memory comes from one more, sampled, run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic
from machine import cpu_model

SITE_URL = "https://bench.example.com"
_REPORT = re.compile(r"written (\d+), unchanged (\d+), removed (\d+) in ([\d.]+) s")


@dataclass
class Run:
    """One measured ``engine`` command."""

    wall: float
    cpu: float
    max_rss_mb: float
    peak_pss_mb: float
    written: int
    unchanged: int
    build_seconds: float
    load: float


def _descendants(pid: int) -> list[int]:
    """Return a process and all its descendants (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def _pss_kb(pid: int) -> int:
    """Return a process's proportional set size in kB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


#: Seconds between two memory samples. Reading ``smaps_rollup`` walks a process's page
#: tables under its memory lock, so sampling often slows the build it measures.
SAMPLE_SECONDS = 0.1


def measure(command: list[str], env: dict[str, str], cwd: Path, memory: bool = True) -> Run:
    """Run a command to completion; return its time, CPU, build report and (``memory``) its
    peak PSS, sampled while it runs.

    The disk's write-back of earlier runs' files is flushed first (``sync``, not timed): a
    build right after another one's 10,000 new files would otherwise time that write-back.
    """
    os.sync()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_pss_kb(pid) for pid in _descendants(process.pid)))
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    if memory:
        sampler.start()
    stdout = process.stdout.read() if process.stdout else ""
    stderr = process.stderr.read() if process.stderr else ""
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    if memory:
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stdout}{stderr}")
    match = _REPORT.search(stdout)
    written, unchanged, _removed, seconds = match.groups() if match else (0, 0, 0, 0)
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / 1024,
        peak_pss_mb=peak / 1024,
        written=int(written),
        unchanged=int(unchanged),
        build_seconds=float(seconds),
        load=load,
    )


def prepare(products: int, work: Path) -> dict[str, str]:
    """Generate a store of ``products`` products in ``work``; return the environment to build it."""
    instance = work / "instance"
    instance.mkdir(parents=True, exist_ok=True)
    (instance / "config.toml").write_text(
        f'site_url = "{SITE_URL}"\ncontent_dir = "{work / "content"}"\n', encoding="utf-8"
    )
    started = time.perf_counter()
    catalog = synthetic.make_catalog(products)
    synthetic.load_into_database(catalog, f"sqlite:///{instance / 'engine.sqlite3'}")
    synthetic.write_content(catalog, work / "content")
    print(f"# generated {products} products in {time.perf_counter() - started:.1f} s", flush=True)
    return dict(os.environ, ENGINE_INSTANCE_PATH=str(instance))


def clean_output(work: Path) -> None:
    """Move a store's built site out of the way so the next build is a full one.

    Moved, not deleted: right after ``rm -rf`` of a 10,000-page tree, this disk (ext4,
    mounted with ``discard``) creates files in its place at a third of its usual speed for a
    while, which would time the cleanup rather than the build. ``empty_trash`` deletes the
    moved trees once every measurement is done (deleting them before the rebuilds would
    slow the folders those create in the same way).
    """
    trash = work / "trash"
    trash.mkdir(exist_ok=True)
    for name in ("site", ".site.generations"):
        path = work / "instance" / name
        if path.exists() or path.is_symlink():
            path.rename(trash / f"{name}-{time.monotonic_ns()}")


def empty_trash(work: Path) -> None:
    """Delete the sites that ``clean_output`` moved away."""
    shutil.rmtree(work / "trash", ignore_errors=True)


def in_stock_sku(work: Path) -> str:
    """Return the SKU of a sellable, tracked variant of an active product."""
    import sqlite3

    with sqlite3.connect(work / "instance" / "engine.sqlite3") as connection:
        row = connection.execute(
            "SELECT v.sku FROM variant v JOIN product p ON p.id = v.product_id "
            "WHERE p.status = 'active' AND v.inventory_tracked AND v.stock > 0 "
            "ORDER BY v.sku LIMIT 1 OFFSET 100"
        ).fetchone()
    return str(row[0])


def median_run(runs: list[Run]) -> Run:
    """Return the run with the median wall time."""
    ordered = sorted(runs, key=lambda run: run.wall)
    return ordered[len(ordered) // 2]


def row(label: str, products: int, run: Run, repeat: int) -> str:
    """Format one table row."""
    return (
        f"| {label} | {products:,} | {run.written:,} | {run.wall:.2f} | {run.build_seconds:.2f} | "
        f"{run.cpu:.2f} | {run.max_rss_mb:.0f} | {run.peak_pss_mb:.0f} | {repeat} | "
        f"{run.load:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated product counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per 10k measurement (median)")
    parser.add_argument("--work", type=Path, help="folder for the stores (default: a temp folder)")
    args = parser.parse_args(argv)
    work_root = args.work or Path(tempfile.mkdtemp(prefix="engine-bench-"))
    command = [sys.executable, "-m", "engine", "build"]
    rows = []
    for products in [int(size) for size in args.sizes.split(",")]:
        work = work_root / str(products)
        env = prepare(products, work)
        repeat = args.repeat if products <= 20_000 else 1
        fulls = []
        for _ in range(repeat):
            clean_output(work)
            fulls.append(measure(command, env, work, memory=False))
        # Time from unobserved runs; memory from one more, sampled while it runs.
        clean_output(work)
        sampled = measure(command, env, work)
        full = dataclasses.replace(
            median_run(fulls), max_rss_mb=sampled.max_rss_mb, peak_pss_mb=sampled.peak_pss_mb
        )
        rows.append(row("full build", products, full, repeat))
        print(rows[-1], flush=True)
        if products > 20_000:
            empty_trash(work)
            continue
        same = median_run([measure(command, env, work) for _ in range(repeat)])
        rows.append(row("no-change rebuild", products, same, repeat))
        print(rows[-1], flush=True)
        sku = in_stock_sku(work)
        changes = []
        # The first BUILD_GENERATIONS_KEPT (2) changes after a from-scratch build stage their
        # generations as new folder trees (a link per file); from the third on, a build
        # recycles the oldest generation and touches only what changed: the steady state.
        quantities = [0, 7] * ((repeat + 1) // 2 + 1)
        for quantity in quantities[: 2 + repeat]:
            subprocess.run(
                [*command[:-1], "stock", "set", sku, str(quantity)],
                env=env, cwd=work, check=True, capture_output=True,
            )  # fmt: skip
            changes.append(measure(command, env, work))
        label = f"one-SKU stock change ({sku}), new generation folders"
        rows.append(row(label, products, median_run(changes[:2]), 2))
        print(rows[-1], flush=True)
        label = f"one-SKU stock change ({sku}), recycled generation"
        rows.append(row(label, products, median_run(changes[2:]), repeat))
        print(rows[-1], flush=True)
        empty_trash(work)
    print()
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {sys.version.split()[0]}")
    print()
    print(
        "| scenario | products | files written | wall s | build s | CPU s | "
        "max RSS MB (largest process) | peak PSS MB (all processes) | runs | load avg |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    if not args.work:
        shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
