"""Catalog import: Shopify exports as Shopify writes them, plain CSV, JSON; all or nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from engine.catalog import ImportReport, import_catalog, set_stock, variant_by_sku
from engine.catalog.formats import ImportProblem
from engine.db import Database, utcnow
from engine.models import Product, StockTransition, Variant

DATA = Path(__file__).resolve().parent / "data" / "catalog"
EXPORT = DATA / "shopify-export.csv"
MULTILOCATION = DATA / "shopify-multilocation-de.csv"


def run_import(db: Database, path: Path, **options: Any) -> ImportReport:
    """Import in its own committed transaction, as the CLI does."""
    with db.session() as session:
        return import_catalog(session, path, **options)


def product(session: Session, handle: str) -> Product:
    found = session.scalar(select(Product).where(Product.handle == handle))
    assert found is not None, handle
    return found


def count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def edited(tmp_path: Path, source: Path, *replacements: tuple[str, str]) -> Path:
    """Copy a fixture with exact text replacements (each must match once)."""
    text = source.read_text(encoding="utf-8-sig")
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    target = tmp_path / source.name
    target.write_text(text, encoding="utf-8", newline="")
    return target


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Collect the SQL statements issued meanwhile."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]).split(None, 1)[0].upper())

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


# --- Shopify exports ---


def test_shopify_export_creates_products_variants_and_images(db: Database) -> None:
    report = run_import(db, EXPORT)

    assert report.ok and report.format == "shopify"
    assert report.counts() == {
        "created": 5, "updated": 0, "unchanged": 0, "restocked": 0, "sold out": 0,
        "archived": 1, "rejected": 0,
    }  # fmt: skip
    assert (report.products, report.variants) == (5, 9)
    with db.sessions() as session:
        # new sellable variants are recorded as restocks (a coming-soon product arriving
        # reaches its waitlist this way) though the summary counts only existing ones
        first_stock = session.scalars(select(StockTransition)).all()
        assert len(first_stock) == 6
        assert all(t.restock and t.stock_before is None for t in first_stock)
        tent = product(session, "trail-tent-2p")
        assert tent.title == "Trail Tent 2P – Ultralight ⛺"
        assert tent.vendor == "Nordkamm" and tent.product_type == "Tents"
        assert tent.tags == ["tents", "ultralight", "2-person"]
        assert tent.status == "active" and tent.published is True
        assert tent.seo_title == "Trail Tent 2P | Ultralight two-person tent"
        assert tent.option_names == ["Color"]
        assert [image["src"].rsplit("/", 1)[1] for image in tent.images] == [
            "tent-moss.jpg", "tent-sand.jpg", "tent-pitched.jpg",
        ]  # fmt: skip
        assert tent.images[2]["alt"] == "Pitched on a ridge"
        moss, sand = tent.variants
        assert (moss.sku, moss.option_values, moss.option_key) == ("TENT-2P-MOSS", ["Moss"], "Moss")
        assert moss.price == Decimal("349.00") and moss.compare_at_price == Decimal("399.00")
        assert moss.barcode == "0012345678905"  # Shopify's leading apostrophe removed
        assert moss.grams == 1400 and moss.image.endswith("tent-moss.jpg")
        assert (moss.stock, moss.inventory_tracked, moss.sellable) == (4, True, True)
        assert (sand.stock, sand.sellable, sand.position) == (0, False, 2)

        mug = product(session, "camp-mug")
        assert mug.option_names == []
        (cup,) = mug.variants
        assert cup.sku is None and cup.option_key == "" and cup.title == "Default Title"
        assert cup.price == Decimal("18.50")
        assert (cup.inventory_tracked, cup.stock, cup.sellable) == (False, 0, True)

        jacket = product(session, "rain-jacket")
        assert jacket.option_names == ["Size", "Color"]
        assert [v.option_key for v in jacket.variants] == [
            "S / Black", "M / Black", "L / Black", "M / Red",
        ]  # fmt: skip
        # Image positions decide the order, not the rows they came on.
        assert [image["alt"] for image in jacket.images] == ["Front view", "Back view"]
        red = jacket.variants[3]
        assert red.sku is None and red.price == Decimal("219.00")
        large = jacket.variants[2]
        assert large.inventory_policy == "continue" and large.sellable and large.backorder

        assert product(session, "old-lantern").status == "archived"
        stove = product(session, "draft-stove")
        assert stove.status == "draft" and stove.published is False


def test_shopify_body_html_is_sanitized(db: Database) -> None:
    run_import(db, EXPORT)
    with db.sessions() as session:
        body = product(session, "trail-tent-2p").body_html
    assert "<h2>Two people, one pole</h2>" in body
    assert "<li>Füße &amp; “Apsis”</li>" in body
    for gone in ("<script", "pwned", "onclick", "steal", "javascript:"):
        assert gone not in body


def test_metafield_columns_are_kept_by_namespace_and_key(db: Database) -> None:
    run_import(db, EXPORT)
    run_import(db, MULTILOCATION)
    with db.sessions() as session:
        assert product(session, "trail-tent-2p").metafields == {
            "mm-google-shopping.gender": "unisex",
            "mm-google-shopping.condition": "new",
            "mm-google-shopping.mpn": "NK-T2P",
            "shopify.color-pattern": "shopify.color-pattern.green; shopify.color-pattern.beige",
        }
        assert product(session, "rain-jacket").metafields == {
            "shopify.target-gender": "shopify.target-gender.unisex"
        }
        # Localized headers: the label is German, the key in parentheses is what counts.
        assert product(session, "wanderstiefel").metafields == {
            "mm-google-shopping.gender": "unisex",
            "shopify.color-pattern": "shopify.color-pattern.brown",
            "shopify.material": "Leder",
        }


def test_reimporting_the_same_file_changes_nothing(db: Database) -> None:
    run_import(db, EXPORT)
    with db.sessions() as session:
        before = {p.handle: p.updated_at for p in session.scalars(select(Product))}
        transitions = count(session, StockTransition)

    with statements(db) as seen:
        report = run_import(db, EXPORT)

    assert report.counts() == {
        "created": 0, "updated": 0, "unchanged": 5, "restocked": 0, "sold out": 0,
        "archived": 0, "rejected": 0,
    }  # fmt: skip
    assert not {"INSERT", "UPDATE", "DELETE"} & set(seen), seen
    with db.sessions() as session:
        assert {p.handle: p.updated_at for p in session.scalars(select(Product))} == before
        assert count(session, StockTransition) == transitions


def test_new_sellable_variants_are_restocks(db: Database) -> None:
    run_import(db, EXPORT)
    with db.sessions() as session:
        rows = session.scalars(select(StockTransition).order_by(StockTransition.id)).all()
        sellable = session.scalars(select(Variant.sku).where(Variant.sellable)).all()
    assert len(rows) == len(sellable) == 6
    assert all(row.restock and row.stock_before is None and row.source == "import" for row in rows)
    assert {row.sku for row in rows} == set(sellable)


def test_restocks_and_sell_outs_are_counted_and_recorded(db: Database, tmp_path: Path) -> None:
    run_import(db, EXPORT)
    changed = edited(
        tmp_path,
        EXPORT,
        ("TENT-2P-MOSS,1400,shopify,4,", "TENT-2P-MOSS,1400,shopify,0,"),  # sells out
        ("TENT-2P-SAND,1400,shopify,0,", "TENT-2P-SAND,1400,shopify,5,"),  # restocked
        ("JKT-S-BLK,420,shopify,3,", "JKT-S-BLK,420,shopify,2,"),  # still sellable
        ("JKT-M-BLK,440,shopify,0,deny", "JKT-M-BLK,440,shopify,0,continue"),  # backorders
    )
    with db.sessions() as session:
        first = count(session, StockTransition)
        stamp = product(session, "camp-mug").updated_at

    report = run_import(db, changed)

    assert (report.restocked, report.sold_out) == (2, 1)
    assert (report.created, report.updated, report.unchanged) == (0, 2, 3)
    with db.sessions() as session:
        rows = session.scalars(
            select(StockTransition).where(StockTransition.id > first).order_by(StockTransition.sku)
        ).all()
        assert [(r.sku, r.restock, r.stock_before, r.stock_after, r.source) for r in rows] == [
            ("JKT-M-BLK", True, 0, 0, "import"),
            ("TENT-2P-MOSS", False, 4, 0, "import"),
            ("TENT-2P-SAND", True, 0, 5, "import"),
        ]
        assert variant_by_sku(session, "JKT-S-BLK").stock == 2
        assert product(session, "trail-tent-2p").updated_at > stamp
        assert product(session, "camp-mug").updated_at == stamp


def test_export_without_quantity_column_keeps_stock(db: Database, tmp_path: Path) -> None:
    report = run_import(db, MULTILOCATION)
    assert report.ok and report.created == 1
    assert any("Variant Inventory Qty" in warning for warning in report.warnings)
    with db.session() as session:
        assert [v.stock for v in product(session, "wanderstiefel").variants] == [0, 0, 0]
        # Only the backorderable size is sellable at 0.
        assert [v.sellable for v in product(session, "wanderstiefel").variants] == [
            False, False, True,
        ]  # fmt: skip
        set_stock(session, variant_by_sku(session, "WS-42"), 7, source="cli")

    changed = edited(tmp_path, MULTILOCATION, ("Wanderstiefel „Grat“", "Wanderstiefel Grat"))
    report = run_import(db, changed)

    assert report.ok and (report.updated, report.restocked, report.sold_out) == (1, 0, 0)
    with db.sessions() as session:
        boots = product(session, "wanderstiefel")
        assert boots.title == "Wanderstiefel Grat"
        assert [v.stock for v in boots.variants] == [7, 0, 0]


def test_utf8_without_bom_and_lf_line_ends_read_the_same(db: Database, tmp_path: Path) -> None:
    raw = EXPORT.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    plain = tmp_path / "export.csv"
    plain.write_bytes(raw[3:].replace(b"\r\n", b"\n"))
    run_import(db, plain)
    report = run_import(db, EXPORT)
    assert report.ok and report.unchanged == 5 and report.updated == 0


def test_variant_only_rows_update_stock_and_keep_product_fields(
    db: Database, tmp_path: Path
) -> None:
    run_import(db, EXPORT)
    update = tmp_path / "stock.csv"
    update.write_text(
        "Handle,Title,Option1 Value,Variant SKU,Variant Inventory Qty\n"
        "trail-tent-2p,,Sand,TENT-2P-SAND,9\n",
        encoding="utf-8",
    )
    report = run_import(db, update)
    assert report.ok and (report.updated, report.restocked) == (1, 1)
    with db.sessions() as session:
        tent = product(session, "trail-tent-2p")
        assert tent.title.startswith("Trail Tent") and len(tent.images) == 3
        assert [v.stock for v in tent.variants] == [4, 9]
    assert any("TENT-2P-MOSS" in warning and "kept" in warning for warning in report.warnings)


def test_options_can_swap_between_variants(db: Database, tmp_path: Path) -> None:
    run_import(db, EXPORT)
    swapped = edited(
        tmp_path,
        EXPORT,
        (",Moss,,,,,,,,TENT-2P-MOSS,", ",Sand,,,,,,,,TENT-2P-MOSS,"),
        (",Sand,,,,,,,,TENT-2P-SAND,", ",Moss,,,,,,,,TENT-2P-SAND,"),
    )
    report = run_import(db, swapped)
    assert report.ok and report.updated == 1
    with db.sessions() as session:
        assert variant_by_sku(session, "TENT-2P-MOSS").option_key == "Sand"
        assert variant_by_sku(session, "TENT-2P-SAND").option_key == "Moss"


# --- status, archiving and pruning ---


def test_archived_status_and_prune(db: Database, tmp_path: Path) -> None:
    run_import(db, EXPORT)
    only_mug = tmp_path / "mug.csv"
    lines = EXPORT.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    only_mug.write_text(lines[0] + lines[7], encoding="utf-8")

    report = run_import(db, only_mug)
    assert report.ok and report.archived == 0 and report.unchanged == 1
    with db.sessions() as session:
        assert product(session, "trail-tent-2p").status == "active"  # absent is not removed

    report = run_import(db, only_mug, prune=True)
    assert report.ok and report.archived == 3  # tent, jacket, stove (the lantern already was)
    with db.sessions() as session:
        statuses = dict(session.execute(select(Product.handle, Product.status)).all())
        assert count(session, Product) == 5 and count(session, Variant) == 9
    assert statuses == {
        "camp-mug": "active", "trail-tent-2p": "archived", "rain-jacket": "archived",
        "draft-stove": "archived", "old-lantern": "archived",
    }  # fmt: skip

    # Importing the full export again brings them back as the file says.
    report = run_import(db, EXPORT)
    assert report.ok and report.updated == 3 and report.archived == 0
    with db.sessions() as session:
        assert product(session, "draft-stove").status == "draft"


def test_status_archived_in_file_counts_as_archived(db: Database, tmp_path: Path) -> None:
    run_import(db, EXPORT)
    retired = edited(tmp_path, EXPORT, ("TRUE,,,draft\n", "TRUE,,,archived\n"))
    report = run_import(db, retired)
    assert report.ok and (report.archived, report.updated) == (1, 1)


# --- all or nothing ---


BAD_EXPORT_PROBLEMS = [
    (4, "Handle"),
    (5, "Variant Price"),
    (6, "Variant Inventory Qty"),
    (7, "Variant SKU"),
    (8, "Status"),
    (10, "Variant Inventory Policy"),
    (11, "Published"),
    (12, "Variant SKU"),
    (13, ""),
    (14, ""),
    (15, "Variant Compare At Price"),
    (16, "Handle"),
    (17, ""),
]


def seed_owner(db: Database) -> None:
    """Store a product that owns SKU DB-OWNED."""
    with db.session() as session:
        owner = Product(handle="owner", title="Owner")
        session.add(owner)
        session.add(Variant(product=owner, sku="DB-OWNED", option_key="", price=5))


def test_bad_rows_import_nothing_and_report_every_line_and_column(db: Database) -> None:
    seed_owner(db)
    report = run_import(db, DATA / "shopify-bad.csv")

    assert [(p.line, p.column) for p in report.problems] == BAD_EXPORT_PROBLEMS
    messages = {p.line: p.message for p in report.problems}
    assert "'ten' is not a number" in messages[5]
    assert "'lots' is not a whole number" in messages[6]
    assert "duplicate SKU 'GOOD-1' (already on line 2)" in messages[7]
    assert "unknown status 'sold'" in messages[8]
    assert "belongs to product 'owner'" in messages[12]
    assert "quot" in messages[13]
    assert "17 cells but the header has 16" in messages[14]
    assert "already appeared on line 5" in messages[16]
    assert "never closed" in messages[17]
    assert report.rejected == len(BAD_EXPORT_PROBLEMS) and not report.imported
    assert report.created == report.updated == report.restocked == 0
    with db.sessions() as session:
        assert session.scalars(select(Product.handle)).all() == ["owner"]
        assert count(session, StockTransition) == 0


def test_problem_text_names_file_line_and_column() -> None:
    problem = ImportProblem(5, "Variant Price", "'ten' is not a number")
    assert problem.located("products.csv") == "products.csv:5: Variant Price: 'ten' is not a number"
    assert ImportProblem(0, "", "no such file").located("x.csv") == "x.csv: no such file"


def test_a_sku_may_move_to_another_product_listed_in_the_same_file(
    db: Database, tmp_path: Path
) -> None:
    run_import(db, EXPORT)
    moved = edited(
        tmp_path,
        EXPORT,
        ("LANT-1,900", "STOVE-1,900"),
        ("STOVE-1,250", "STOVE-2,250"),
    )
    report = run_import(db, moved)
    assert report.ok, report.problems
    with db.sessions() as session:
        assert variant_by_sku(session, "STOVE-1").product.handle == "old-lantern"
        assert variant_by_sku(session, "STOVE-2").product.handle == "draft-stove"


def test_a_sku_of_a_product_not_in_the_file_is_a_clash(db: Database, tmp_path: Path) -> None:
    seed_owner(db)
    clash = tmp_path / "clash.json"
    clash.write_text(
        '[{"handle": "x", "title": "X", "variants": [{"sku": "DB-OWNED", "price": 1}]}]',
        encoding="utf-8",
    )
    report = run_import(db, clash)
    assert [(p.line, p.column) for p in report.problems] == [(1, "sku")]
    assert "belongs to product 'owner'" in report.problems[0].message


def test_new_product_needs_a_title(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "new.csv"
    path.write_text(
        "Handle,Title,Option1 Value,Variant SKU,Variant Price\nnew-thing,,,N-1,5\n",
        encoding="utf-8",
    )
    report = run_import(db, path)
    assert [(p.line, p.column) for p in report.problems] == [(2, "title")]


def test_duplicate_variant_options_and_bad_handles(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "dupes.csv"
    path.write_text(
        "Handle,Title,Option1 Name,Option1 Value,Variant SKU,Variant Price\n"
        "shirt,Shirt,Size,M,S-1,5\n"
        "shirt,,,M,S-2,5\n"
        "../etc,Escape,Title,Default Title,E-1,5\n"
        "shirt-2,Shirt 2,Size,,S-3,5\n",
        encoding="utf-8",
    )
    report = run_import(db, path)
    assert [(p.line, p.column) for p in report.problems] == [
        (3, "options"), (4, "Handle"), (5, "Option1 Value"),
    ]  # fmt: skip


def test_not_utf8_is_a_problem_not_a_traceback(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("Handle,Title,Variant SKU,Variant Price\nm,Müsli,M-1,5\n".encode("latin-1"))
    report = run_import(db, path)
    assert [(p.line, p.column) for p in report.problems] == [(2, "")]
    assert "UTF-8" in report.problems[0].message


def test_dry_run_reports_and_writes_nothing(db: Database) -> None:
    with statements(db) as seen:
        report = run_import(db, EXPORT, dry_run=True)
    assert report.ok and not report.imported
    assert (report.created, report.restocked, report.archived) == (5, 0, 1)
    assert "SAVEPOINT" in seen and "ROLLBACK" in seen
    with db.sessions() as session:
        assert count(session, Product) == count(session, Variant) == 0
        assert count(session, StockTransition) == 0


def test_import_leaves_the_callers_transaction_usable(db: Database) -> None:
    with db.session() as session:
        session.add(Product(handle="kept", title="Kept"))
        report = import_catalog(session, DATA / "shopify-bad.csv")
        assert not report.ok
    with db.sessions() as session:
        assert session.scalars(select(Product.handle)).all() == ["kept"]


# --- plain CSV and JSON ---


def test_plain_csv(db: Database) -> None:
    report = run_import(db, DATA / "catalog.csv")
    assert report.ok and report.format == "csv", report.problems
    assert (report.created, report.restocked) == (2, 0)
    with db.sessions() as session:
        tent = product(session, "tent")
        assert tent.title == "Dome Tent" and tent.tags == ["tents", "family"]
        assert tent.body_html == "<p>Roomy.</p>"
        assert tent.option_names == ["Color", "Size"]
        assert tent.images == [
            {"src": "https://img.example/tent.jpg", "alt": "Dome tent"},
            {"src": "https://img.example/tent-side.jpg", "alt": "Side view"},
        ]
        assert [(v.sku, v.option_key, v.price, v.stock, v.sellable) for v in tent.variants] == [
            ("P-TENT-MOSS-4", "Moss / 4P", Decimal("299.00"), 3, True),
            ("P-TENT-SAND-4", "Sand / 4P", Decimal("299.00"), 0, True),
            (None, "Sand / 6P", Decimal("349.50"), 0, False),
        ]
        assert tent.variants[0].barcode == "0400000000017"
        assert tent.variants[0].compare_at_price == Decimal("349.00")
        lamp = product(session, "lamp")
        assert (lamp.status, lamp.published) == ("draft", False)
        assert lamp.variants[0].inventory_tracked is False
    assert run_import(db, DATA / "catalog.csv").unchanged == 2


def test_plain_csv_unknown_column_is_a_problem(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "typo.csv"
    path.write_text("handle,title,prcie\nx,X,5\n", encoding="utf-8")
    report = run_import(db, path)
    assert [(p.line, p.column) for p in report.problems] == [(1, "prcie")]


def test_json_catalog(db: Database) -> None:
    report = run_import(db, DATA / "catalog.json")
    assert report.ok and report.format == "json", report.problems
    assert (report.created, report.restocked) == (2, 0)
    with db.sessions() as session:
        bag = product(session, "sleeping-bag")
        assert bag.title == "Down Sleeping Bag −5 °C"
        assert bag.body_html == '<p>800 fill power.</p><a rel="noopener">x</a>'
        assert bag.metafields == {
            "shopify.color-pattern": "shopify.color-pattern.red",
            "custom.fill_power": "800",
        }
        assert bag.images[1] == {"src": "https://img.example/bag-open.jpg", "alt": "Open"}
        regular, long = bag.variants
        assert (regular.barcode, regular.grams, regular.stock) == ("0040000000017", 950, 2)
        assert long.price == Decimal("409.00") and long.compare_at_price == Decimal("449.00")
        assert long.inventory_policy == "continue" and long.sellable
        spork = product(session, "spork")
        assert spork.variants[0].sku is None and spork.variants[0].sellable
    assert run_import(db, DATA / "catalog.json").unchanged == 2


def test_json_problems_have_lines_and_paths(db: Database) -> None:
    report = run_import(db, DATA / "catalog-bad.json")
    assert [(p.line, p.column) for p in report.problems] == [
        (7, "products[1].handle"),
        (11, "products[2].colour"),
        (11, "products[2].variants[0].price"),
        (11, "products[2].variants[0].stock"),
        (11, "products[2].variants[0].policy"),
        (11, "sku"),
    ]
    report = run_import(db, DATA / "catalog-broken.json")
    assert [(p.line, p.column) for p in report.problems] == [(3, "")]
    assert "bad JSON" in report.problems[0].message


def test_format_detection_and_choice(db: Database, tmp_path: Path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("name,cost\nx,1\n", encoding="utf-8")
    report = run_import(db, odd)
    assert "cannot tell the format" in report.problems[0].message
    report = run_import(db, odd, fmt="shopify")
    assert [(p.line, p.column) for p in report.problems] == [(1, "Handle")]
    copy = tmp_path / "catalog.txt"
    shutil.copy(DATA / "catalog.json", copy)
    assert run_import(db, copy, fmt="json").created == 2
    assert run_import(db, tmp_path / "missing.csv").problems[0].message == "no such file"


# --- the command ---


def test_cli_import_prints_the_summary(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["catalog", "import", str(EXPORT)])
    assert result.exit_code == 0, result.output
    assert "(shopify): 5 products, 9 variants" in result.stdout
    assert (
        "created 5, updated 0, unchanged 0, restocked 0, sold out 0, archived 1, rejected 0"
        in result.stdout
    )
    again = runner.invoke(args=["catalog", "import", str(EXPORT), "--format", "shopify"])
    assert "created 0, updated 0, unchanged 5" in again.stdout


def test_cli_import_problems_go_to_stderr_with_exit_1(runner: FlaskCliRunner, app: Flask) -> None:
    result = runner.invoke(args=["catalog", "import", str(DATA / "shopify-bad.csv")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{DATA / 'shopify-bad.csv'}:5: Variant Price: 'ten' is not a number" in result.stderr
    assert "nothing was imported" in result.stderr
    assert "Variant Price" not in result.stdout


def test_cli_dry_run_and_prune(runner: FlaskCliRunner, db: Database) -> None:
    result = runner.invoke(args=["catalog", "import", "--dry-run", str(EXPORT)])
    assert result.exit_code == 0 and "dry run: nothing was written" in result.stdout
    with db.sessions() as session:
        assert count(session, Product) == 0
    runner.invoke(args=["catalog", "import", str(EXPORT)])
    result = runner.invoke(args=["catalog", "import", "--prune", str(MULTILOCATION)])
    assert result.exit_code == 0, result.output
    assert "archived 4" in result.stdout and "warning: no 'Variant Inventory Qty'" in result.stdout


def test_cli_stock_set_after_import(runner: FlaskCliRunner, db: Database) -> None:
    runner.invoke(args=["catalog", "import", str(EXPORT)])
    result = runner.invoke(args=["stock", "set", "TENT-2P-SAND", "3"])
    assert result.exit_code == 0, result.output
    assert "TENT-2P-SAND: stock 0 -> 3, sellable (restocked)" in result.stdout
    with db.sessions() as session:
        last = session.scalars(select(StockTransition).order_by(StockTransition.id.desc())).first()
        assert last is not None and (last.sku, last.source, last.restock) == (
            "TENT-2P-SAND", "cli", True,
        )  # fmt: skip
    result = runner.invoke(args=["stock", "set", "NOPE", "3"])
    assert result.exit_code == 1 and "no variant has SKU 'NOPE'" in result.stderr


@pytest.mark.parametrize(
    "args", [["catalog", "import"], ["catalog", "import", "x", "--format", "xml"]]
)
def test_cli_usage_errors(runner: FlaskCliRunner, args: list[str]) -> None:
    result = runner.invoke(args=args)
    assert result.exit_code == 2


def test_updated_at_is_timezone_aware(db: Database) -> None:
    run_import(db, EXPORT)
    with db.sessions() as session:
        assert product(session, "camp-mug").updated_at <= utcnow()


def test_plain_csv_with_blank_title_updates_variants_only(db: Database, tmp_path: Path) -> None:
    run_import(db, DATA / "catalog.csv")
    path = tmp_path / "stock.csv"
    path.write_text(
        "handle,title,option1_value,option2_value,sku,stock\n"
        "tent,,Moss,4P,P-TENT-MOSS-4,0\n"
        "lamp,,,,P-LAMP,2\n",
        encoding="utf-8",
    )
    report = run_import(db, path)
    assert report.ok, report.problems
    # The lamp is not tracked: its stock changes but it was and stays sellable.
    assert (report.updated, report.restocked, report.sold_out) == (2, 0, 1)
    with db.sessions() as session:
        tent = product(session, "tent")
        assert tent.title == "Dome Tent" and len(tent.images) == 2
        assert variant_by_sku(session, "P-TENT-MOSS-4").stock == 0
        assert variant_by_sku(session, "P-LAMP").stock == 2
