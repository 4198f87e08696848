"""Benchmark: import a generated Shopify product CSV export of N rows, then re-import it.

    python benchmarks/catalog_import.py --rows 100000
    python benchmarks/catalog_import.py --rows 100000 --database-url postgresql+psycopg://...

Writes the CSV to a temporary folder (or --csv PATH), imports it into a fresh database,
imports it again (nothing changes), and prints seconds and peak RSS for each step.
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
from pathlib import Path

HEADER = [
    "Handle", "Title", "Body (HTML)", "Vendor", "Product Category", "Type", "Tags", "Published",
    "Option1 Name", "Option1 Value", "Option2 Name", "Option2 Value", "Option3 Name",
    "Option3 Value", "Variant SKU", "Variant Grams", "Variant Inventory Tracker",
    "Variant Inventory Qty", "Variant Inventory Policy", "Variant Fulfillment Service",
    "Variant Price", "Variant Compare At Price", "Variant Requires Shipping", "Variant Taxable",
    "Variant Barcode", "Image Src", "Image Position", "Image Alt Text", "Gift Card", "SEO Title",
    "SEO Description", "Color (product.metafields.shopify.color-pattern)", "Variant Image",
    "Variant Weight Unit", "Variant Tax Code", "Cost per item", "Status",
]  # fmt: skip
COLOR_METAFIELD = "Color (product.metafields.shopify.color-pattern)"
SIZES = ("S", "M", "L")
COLORS = ("Black", "Moss", "Sand", "Red")


def write_export(path: Path, rows: int) -> int:
    """Write a Shopify-shaped export of about ``rows`` rows; return the product count."""
    cdn = "https://cdn.shopify.com/s/files/1/0001/files"
    written = products = 0
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADER)
        while written < rows:
            products += 1
            handle_name = f"product-{products:06d}"
            body = (
                f"<h2>Product {products}</h2>\n<p>Made for the trail; weighs"
                f" {products % 900 + 100}&nbsp;g.</p>\n"
                "<ul><li>Recycled</li><li>Repairable</li></ul>"
            )
            for index in range(4):
                if written >= rows:
                    break
                first = index == 0
                row = dict.fromkeys(HEADER, "")
                row["Handle"] = handle_name
                if first:
                    row.update({
                        "Title": f"Trail Product {products}", "Body (HTML)": body,
                        "Vendor": "Nordkamm", "Type": ("Tents", "Jackets", "Packs")[products % 3],
                        "Tags": "outdoor, trail", "Published": "TRUE", "Option1 Name": "Size",
                        "Option2 Name": "Color", "Gift Card": "FALSE", "Status": "active",
                        "SEO Title": f"Trail Product {products}",
                        COLOR_METAFIELD: "shopify.color-pattern.green",
                        "Image Src": f"{cdn}/{handle_name}.jpg", "Image Position": "1",
                    })  # fmt: skip
                row.update({
                    "Option1 Value": SIZES[index % 3], "Option2 Value": COLORS[index],
                    # Every fourth variant has no SKU: keyed by its options.
                    "Variant SKU": f"SKU-{products:06d}-{index}" if index != 3 else "",
                    "Variant Grams": "450", "Variant Inventory Tracker": "shopify",
                    "Variant Inventory Qty": str((products + index) % 7),
                    "Variant Inventory Policy": "deny", "Variant Fulfillment Service": "manual",
                    "Variant Price": f"{50 + products % 200}.00",
                    "Variant Requires Shipping": "TRUE",
                    "Variant Taxable": "TRUE", "Variant Barcode": f"'{products:06d}{index:06d}",
                    "Variant Weight Unit": "kg",
                })  # fmt: skip
                writer.writerow([row[name] for name in HEADER])
                written += 1
    return products


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Generate, import twice, print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--csv", type=Path, help="where to write the export (default: temp)")
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temp folder")
    args = parser.parse_args()

    from engine.catalog import import_catalog
    from engine.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        path = args.csv or Path(tmp) / "products_export.csv"
        started = time.perf_counter()
        products = write_export(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(
            f"generated {args.rows} rows, {products} products, {size_mb:.1f} MB"
            f" in {time.perf_counter() - started:.1f} s"
        )
        database = Database(args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
        database.upgrade()
        base_rss = peak_rss_mb()
        for label in ("first import", "re-import"):
            started = time.perf_counter()
            with database.session() as session:
                report = import_catalog(session, path)
            seconds = time.perf_counter() - started
            if report.problems:
                sys.exit(f"unexpected problems: {report.problems[:5]}")
            print(
                f"{label}: {seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MB"
                f" (before importing {base_rss:.0f} MB); {report.summary()}"
            )
        database.dispose()


if __name__ == "__main__":
    main()
