"""A synthetic store for benchmarks: N products in categories, and its Markdown content.

Products come in 20 types (one category each), with 1, 3 or 4 variants; about 10 % are
sold out, 15 % have one sold-out variant, some are backorderable or untracked, a few are
archived (half of them replaced by another product), a few are coming soon. Content:
a category per type, one comparison per 50 products, one guide per 500, product copy
with attributes and FAQs for 5 %, and two plain pages.

    python benchmarks/synthetic.py --products 10000 --content DIR --csv products.csv
    python benchmarks/synthetic.py --products 10000 --content DIR --database sqlite:///x.db
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

TYPES = (
    "Tent", "Backpack", "Sleeping Bag", "Sleeping Pad", "Trail Shoe", "Hiking Boot",
    "Rain Jacket", "Down Jacket", "Fleece", "Base Layer", "Hiking Pant", "Sock",
    "Headlamp", "Stove", "Cookset", "Water Filter", "Trekking Pole", "Hammock",
    "Daypack", "Glove",
)  # fmt: skip
VENDORS = ("Ridgeline", "Cairnwood", "Talus", "Northfork", "Ember", "Summitry", "Larch", "Fjell")
WORDS = (
    "Alpine", "Basin", "Cirque", "Divide", "Esker", "Fell", "Gully", "Heath", "Ibex", "Juniper",
    "Karst", "Lichen", "Moraine", "Nordic", "Outlier", "Pika", "Quartz", "Ridge", "Scree",
    "Tarn", "Upland", "Vista", "Willow", "Yarrow", "Zephyr",
)  # fmt: skip
SIZES = ("S", "M", "L")
COLORS = ("Slate", "Moss", "Ember", "Glacier")
COLUMNS = (
    "Handle", "Title", "Body (HTML)", "Vendor", "Type", "Tags", "Published", "Status",
    "Option1 Name", "Option1 Value", "Variant SKU", "Variant Grams", "Variant Inventory Tracker",
    "Variant Inventory Qty", "Variant Inventory Policy", "Variant Price",
    "Variant Compare At Price", "Variant Barcode", "Image Src", "Image Position",
    "Image Alt Text", "SEO Title", "SEO Description",
)  # fmt: skip


@dataclass
class SyntheticVariant:
    """One variant: SKU, option value, price and inventory."""

    sku: str
    option: str | None
    price: Decimal
    compare_at: Decimal | None
    grams: int
    tracked: bool
    policy: str
    stock: int

    @property
    def sellable(self) -> bool:
        """Return True when the variant can be bought (the design's definition)."""
        return (not self.tracked) or self.stock > 0 or self.policy == "continue"


@dataclass
class SyntheticProduct:
    """One catalog product."""

    handle: str
    title: str
    body_html: str
    vendor: str
    product_type: str
    tags: list[str]
    status: str
    option_name: str | None
    image: str
    variants: list[SyntheticVariant] = field(default_factory=list)


def slug(text: str) -> str:
    """Return a lowercase, hyphenated handle for a name."""
    return "-".join(text.lower().replace("/", " ").split())


def make_catalog(count: int, seed: int = 7) -> list[SyntheticProduct]:
    """Return ``count`` products, reproducibly for one seed."""
    rng = random.Random(seed)
    products = []
    for number in range(count):
        kind = TYPES[number % len(TYPES)]
        vendor = VENDORS[rng.randrange(len(VENDORS))]
        word = WORDS[rng.randrange(len(WORDS))]
        title = f"{vendor} {word} {kind} {number:06d}"
        handle = slug(title)
        base = Decimal(rng.randrange(1500, 45000)) / 100
        paragraph = (
            f"<p>The {word} is a {kind.lower()} from {vendor} built for long days on the trail: "
            "tough fabrics where packs and rocks wear them, light ones everywhere else, and a "
            "fit tested by our staff over a full season before it reached the shop.</p>"
        )
        body = (
            paragraph
            + f"<ul><li>Weight {rng.randrange(90, 2400)} g</li><li>Made from recycled materials"
            + f"</li><li>Model {number:06d}</li></ul><p>Care: hand wash cold, line dry.</p>"
        )
        shape = rng.random()
        option_name, options = (
            (None, [None]) if shape < 0.4 else ("Size", list(SIZES)) if shape < 0.8
            else ("Color", list(COLORS))
        )  # fmt: skip
        roll = rng.random()
        status = "archived" if roll < 0.005 else "active"
        product = SyntheticProduct(
            handle=handle,
            title=title,
            body_html=body,
            vendor=vendor,
            product_type=kind,
            tags=[slug(kind), word.lower(), vendor.lower()],
            status=status,
            option_name=option_name,
            image=f"/assets/types/{slug(kind)}.svg",
        )
        stock_roll = rng.random()
        for position, option in enumerate(options):
            stock = rng.randrange(1, 60)
            policy, tracked = "deny", True
            if stock_roll < 0.10 or (stock_roll < 0.25 and position == 0):
                stock = 0  # sold out, or one sold-out variant
            elif stock_roll < 0.30:
                stock, policy = 0, "continue"  # backorderable
            elif stock_roll < 0.33:
                tracked = False
            product.variants.append(
                SyntheticVariant(
                    sku=f"SKU-{number:06d}-{position}",
                    option=option,
                    price=base + position * 5,
                    compare_at=(base * Decimal("1.2")).quantize(Decimal("0.01"))
                    if rng.random() < 0.1
                    else None,
                    grams=rng.randrange(90, 2400),
                    tracked=tracked,
                    policy=policy,
                    stock=stock,
                )
            )
        products.append(product)
    return products


def shopify_rows(products: list[SyntheticProduct]) -> Iterator[dict[str, str]]:
    """Yield Shopify export rows: the first row of a product carries it, the rest its variants."""
    for product in products:
        for position, variant in enumerate(product.variants):
            row = dict.fromkeys(COLUMNS, "")
            row["Handle"] = product.handle
            if position == 0:
                row.update(
                    {
                        "Title": product.title,
                        "Body (HTML)": product.body_html,
                        "Vendor": product.vendor,
                        "Type": product.product_type,
                        "Tags": ", ".join(product.tags),
                        "Published": "TRUE",
                        "Status": product.status,
                        "Option1 Name": product.option_name or "Title",
                        "Image Src": product.image,
                        "Image Position": "1",
                        "Image Alt Text": product.title,
                    }
                )
            row.update(
                {
                    "Option1 Value": variant.option or "Default Title",
                    "Variant SKU": variant.sku,
                    "Variant Grams": str(variant.grams),
                    "Variant Inventory Tracker": "shopify" if variant.tracked else "",
                    "Variant Inventory Qty": str(variant.stock),
                    "Variant Inventory Policy": variant.policy,
                    "Variant Price": str(variant.price),
                    "Variant Compare At Price": str(variant.compare_at or ""),
                }
            )
            yield row


def write_shopify_csv(products: list[SyntheticProduct], path: Path) -> None:
    """Write the catalog as a Shopify product CSV export."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(shopify_rows(products))


def load_into_database(products: list[SyntheticProduct], database_url: str) -> None:
    """Insert the catalog straight into a migrated database (bulk, much faster than import)."""
    from sqlalchemy import insert, text

    from engine.db import Database, utcnow
    from engine.models import Product, Variant

    database = Database(database_url)
    database.upgrade()
    now = utcnow()
    with database.session() as session:
        session.execute(text("DELETE FROM variant"))
        session.execute(text("DELETE FROM product"))
        for start in range(0, len(products), 5000):
            chunk = products[start : start + 5000]
            product_rows = []
            variant_rows = []
            for offset, product in enumerate(chunk, start=start + 1):
                product_rows.append(
                    {
                        "id": offset,
                        "handle": product.handle,
                        "title": product.title,
                        "body_html": product.body_html,
                        "vendor": product.vendor,
                        "product_type": product.product_type,
                        "tags": product.tags,
                        "status": product.status,
                        "published": True,
                        "seo_title": "",
                        "seo_description": "",
                        "option_names": [product.option_name] if product.option_name else [],
                        "images": [{"src": product.image, "alt": product.title}],
                        "metafields": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                for position, variant in enumerate(product.variants, start=1):
                    values = [variant.option] if variant.option else []
                    variant_rows.append(
                        {
                            "product_id": offset,
                            "sku": variant.sku,
                            "option_key": " / ".join(values),
                            "option_values": values,
                            "position": position,
                            "price": variant.price,
                            "compare_at_price": variant.compare_at,
                            "barcode": "",
                            "grams": variant.grams,
                            "image": "",
                            "inventory_tracked": variant.tracked,
                            "inventory_policy": variant.policy,
                            "stock": variant.stock,
                            "sellable": variant.sellable,
                            "stock_updated_at": now,
                        }
                    )
            session.execute(insert(Product.__table__), product_rows)
            session.execute(insert(Variant.__table__), variant_rows)
        if database.engine.dialect.name == "postgresql":
            for table in ("product", "variant"):
                session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    database.dispose()


def _front_matter(lines: list[str], body: str) -> str:
    return "---\n" + "\n".join(lines) + "\n---\n" + body + "\n"


def write_content(products: list[SyntheticProduct], content: Path, seed: int = 7) -> dict[str, int]:
    """Write categories, comparisons, guides, product copy and pages; return counts by kind."""
    rng = random.Random(seed + 1)
    for folder in ("categories", "comparisons", "guides", "products", "pages", "assets/types"):
        (content / folder).mkdir(parents=True, exist_ok=True)
    counts = {"categories": 0, "comparisons": 0, "guides": 0, "products": 0, "pages": 0}
    for kind in TYPES:
        name = slug(kind)
        (content / "assets/types" / f"{name}.svg").write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 3"><rect width="4" '
            f'height="3" fill="#{zlib.crc32(name.encode()) % 0xFFFFFF:06x}"/></svg>\n',
            encoding="utf-8",
        )
        (content / "categories" / f"{name}s.md").write_text(
            _front_matter(
                [
                    f"title: {kind}s",
                    f"description: Every {kind.lower()} we stock, compared by weight, price "
                    "and the trips they suit.",
                    "types:",
                    f"  - {kind}",
                    f"image: /assets/types/{name}.svg",
                ],
                f"Our {kind.lower()}s, tested on the trail by the staff who sell them.",
            ),
            encoding="utf-8",
        )
        counts["categories"] += 1
    active = [p for p in products if p.status == "active"]
    archived = [p for p in products if p.status == "archived"]
    by_type: dict[str, list[SyntheticProduct]] = {}
    for product in active:
        by_type.setdefault(product.product_type, []).append(product)
    pairs: set[frozenset[str]] = set()
    for index in range(max(2, len(products) // 50)):
        group = by_type[TYPES[index % len(TYPES)]]
        first, second = rng.sample(group, 2)
        pair = frozenset((first.handle, second.handle))
        if pair in pairs:  # one comparison per pair, whichever way round
            continue
        pairs.add(pair)
        path = content / "comparisons" / f"{first.handle}-vs-{second.handle}.md"
        path.write_text(
            _front_matter(
                [
                    "products:",
                    f"  - {first.handle}",
                    f"  - {second.handle}",
                    f"description: {first.title} or {second.title}? Price, weight and "
                    "availability side by side.",
                    "attributes:",
                    "  - price",
                    "  - availability",
                    "  - brand",
                    "  - weight",
                ],
                f"Both are good {first.product_type.lower()}s; the lighter one costs more.",
            ),
            encoding="utf-8",
        )
        counts["comparisons"] += 1
    coming = []
    for index in range(max(2, len(products) // 1000)):
        kind = TYPES[index % len(TYPES)]
        handle = f"coming-{slug(kind)}-{index:04d}"
        coming.append(handle)
        (content / "products" / f"{handle}.md").write_text(
            _front_matter(
                [
                    "status: coming-soon",
                    f"title: Prototype {kind} {index:04d}",
                    f"description: A new {kind.lower()} arriving next season; join the list.",
                    f"category: {slug(kind)}s",
                    f'price: "{rng.randrange(50, 400)}.00"',
                    f"image: /assets/types/{slug(kind)}.svg",
                ],
                "Designed with feedback from last season's customers.",
            ),
            encoding="utf-8",
        )
        counts["products"] += 1
    for product in rng.sample(active, len(active) // 20):
        (content / "products" / f"{product.handle}.md").write_text(
            _front_matter(
                [
                    "attributes:",
                    f'  Warranty: "{rng.randrange(1, 6)} years"',
                    f'  Origin: "{rng.choice(["Portugal", "Vietnam", "USA", "Italy"])}"',
                    "faq:",
                    "  - question: How does it fit?",
                    "    answer: True to size; between sizes, take the larger one.",
                ],
                f"## Why we stock it\n\nThe {product.title} earned its place after a season "
                "of testing.",
            ),
            encoding="utf-8",
        )
        counts["products"] += 1
    for number, product in enumerate(archived):
        if number % 2 == 0 and active:
            (content / "products" / f"{product.handle}.md").write_text(
                _front_matter([f"replaced_by: {active[number].handle}"], ""), encoding="utf-8"
            )
            counts["products"] += 1
    for index in range(max(2, len(products) // 500)):
        featured = [p.handle for p in rng.sample(active, 8)] + [coming[index % len(coming)]]
        (content / "guides" / f"guide-{index:04d}.md").write_text(
            _front_matter(
                [
                    f"title: Buying guide {index:04d}",
                    "description: How to choose, what to pay and the picks our staff use.",
                    "products:",
                    *[f"  - {handle}" for handle in featured],
                ],
                "## How to choose\n\nStart with the trips you take most often.",
            ),
            encoding="utf-8",
        )
        counts["guides"] += 1
    for name in ("about", "shipping"):
        (content / "pages" / f"{name}.md").write_text(
            _front_matter(
                [f"title: {name.title()}", f"description: {name.title()} at the synthetic store."],
                "Plain page copy.",
            ),
            encoding="utf-8",
        )
        counts["pages"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """Generate a synthetic catalog (CSV or database) and its content folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--content", type=Path, required=True, help="content folder to write")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--csv", type=Path, help="write a Shopify product CSV here")
    target.add_argument("--database", help="load straight into this database URL")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    products = make_catalog(args.products, args.seed)
    if args.csv:
        write_shopify_csv(products, args.csv)
    else:
        load_into_database(products, args.database)
    counts = write_content(products, args.content, args.seed)
    variants = sum(len(p.variants) for p in products)
    print(
        f"{len(products)} products, {variants} variants, "
        + ", ".join(f"{n} {kind}" for kind, n in counts.items())
        + f" in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
