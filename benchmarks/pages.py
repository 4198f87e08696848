"""Page benchmark: plan a synthetic store, render every page, time live-preview requests.

    python benchmarks/pages.py                         # 10,000 products in a temporary folder
    python benchmarks/pages.py --products 100000 --work /tmp/engine-pages

Runs in one process (no forked render workers), so "render" is pages per second per
core. The calibration line times a plain Python loop: on a busy machine every figure
slows down by about the same factor, which makes runs on different days comparable.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic

from engine import create_app
from engine.content import load_content
from engine.db import get_db
from engine.pages import make_environment, plan_site, render_page


def calibration() -> float:
    """Return the seconds a fixed pure-Python loop takes (about 0.45 s on an idle core)."""
    started = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) a store, then print planning, rendering and preview timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--work", type=Path, help="folder to keep the store in between runs")
    parser.add_argument("--requests", type=int, default=20, help="preview requests to time")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="engine-pages-"))
    work.mkdir(parents=True, exist_ok=True)
    database = work / f"store-{args.products}.sqlite3"
    content_dir = work / f"content-{args.products}"
    if not database.exists():
        products = synthetic.make_catalog(args.products)
        synthetic.load_into_database(products, f"sqlite:///{database}")
        synthetic.write_content(products, content_dir)
    app = create_app(
        {
            "INSTANCE_PATH": str(work / "instance"),
            "DATABASE_URL": f"sqlite:///{database}",
            "SECRET_KEY": "benchmark",
            "SITE_URL": "https://bench.example.com",
            "CONTENT_DIR": str(content_dir),
            "TEMPLATES_DIR": str(work / "no-overrides"),
        }
    )
    print(f"calibration loop: {calibration():.2f} s (about 0.45 s on an idle core)")

    started = time.perf_counter()
    content = load_content(content_dir)
    loaded = time.perf_counter()
    with get_db(app).sessions() as session:
        site = plan_site(session, app.config, content)
    planned = time.perf_counter()
    env = make_environment(app.config)
    size = 0
    for page in site.pages:
        size += len(render_page(env, page))
    rendered = time.perf_counter()
    count = len(site.pages)
    print(
        f"{args.products} products: content {loaded - started:.2f} s, "
        f"plan {planned - loaded:.2f} s ({count} pages, {len(site.redirects)} redirects), "
        f"render {rendered - planned:.2f} s = {count / (rendered - planned):,.0f} pages/s "
        f"on one core, {size / count / 1024:.1f} KiB a page"
    )

    client = app.test_client()
    product = next(page.path for page in site.pages if page.path.startswith("/products/"))
    latencies = []
    for _ in range(args.requests):
        before = time.perf_counter()
        response = client.get(product)
        latencies.append(time.perf_counter() - before)
        assert response.status_code == 200
    print(
        f"preview {product}: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms over {args.requests} requests"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
