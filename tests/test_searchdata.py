"""Search Console exports: localized headers and numbers, zips with Filters.csv, mapping."""

from __future__ import annotations

import datetime as dt
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.models import Product, SearchDataset, SearchRow, Variant
from engine.searchdata import (
    ProductName,
    QueryMatcher,
    SearchDataError,
    datasets_for_window,
    import_search_data,
    page_key,
    parse_count,
    parse_decimal,
    relative_range,
)

SITE = "https://shop.test"
TODAY = dt.date(2026, 11, 25)
NNBSP = "\u202f"

PAGES_EN = """Top pages,Clicks,Impressions,CTR,Position
https://shop.test/products/ridgeline-ul1-tent/,"1,234","45,678",2.7%,4.2
https://www.shop.test/guides/choosing-a-tent/,12,800,1.5%,9.8
https://shop.test/products/ember-down-20/#:~:text=warm,3,90,3.33%,7.1
https://shop.test/products/ember-down-20/,7,110,6.36%,5.5
https://other.example/products/ridgeline-ul1-tent/,5,50,10%,3
"""
PAGES_DE = """Häufigste Seiten,Klicks,Impressionen,CTR,Position
https://shop.test/products/ridgeline-ul1-tent/,1.234,45.678,"2,7 %","4,2"
https://shop.test/products/ember-down-20/,10,200,"5 %","12,5"
"""
QUERIES_FR = (
    "Requêtes les plus fréquentes,Clics,Impressions,CTR,Position\n"
    f'ridgeline ul1 tent avis,"1{NNBSP}204","12{NNBSP}345","9,75{NNBSP}%","3,4"\n'
    'sac de couchage ember 20 down,15,900,"1,67 %","8,1"\n'
    'tente ultralégère,4,700,"0,57 %","15,2"\n'
)
PRODUCTS = [
    ProductName("ridgeline-ul1-tent", "Ridgeline UL1 Ultralight Tent", "Ridgeline"),
    ProductName("ridgeline-ul1-carbon", "Ridgeline UL1 Carbon Tent", "Ridgeline"),
    ProductName("ember-down-20", "Ember 20°F Down Sleeping Bag", "Ember"),
    ProductName("ember-down-0", "Ember 0°F Expedition Down Sleeping Bag", "Ember"),
    ProductName("cairnwood-trekker-2", "Cairnwood Trekker 2 Trekking Pole Tent", "Cairnwood"),
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def zip_export(tmp_path: Path, files: dict[str, str], name: str = "export.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text.encode("utf-8"))
    return path


def rows(session: Session, kind: str = "pages") -> dict[str, tuple[str | None, int, int]]:
    query = (
        select(SearchRow.key, SearchRow.product_handle, SearchRow.clicks, SearchRow.impressions)
        .join(SearchDataset, SearchDataset.id == SearchRow.dataset_id)
        .where(SearchDataset.kind == kind)
    )
    return {
        key: (handle, clicks, impressions)
        for key, handle, clicks, impressions in session.execute(query)
    }


def do_import(session: Session, path: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    report = import_search_data(
        session,
        path,
        site_url=SITE,
        today=TODAY,
        products=PRODUCTS,
        **kwargs,  # type: ignore[arg-type]
    )
    session.commit()
    return report


# --- numbers, URLs, names (no database) ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,234", 1234), ("1.234", 1234), (f"1{NNBSP}234", 1234), ("1\u00a0234", 1234),
     ("1'234", 1234), ("0", 0), ("12", 12), ("", None), ("abc", None), ("-3", None)],
)  # fmt: skip
def test_counts_in_any_grouping(text: str, expected: int | None) -> None:
    assert parse_count(text) == expected


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [("3.5%", "en", 3.5), ("3,5 %", "de", 3.5), (f"3,5{NNBSP}%", "fr", 3.5), ("4,2", "fr", 4.2),
     ("1,234.5", "en", 1234.5), ("1.234,5", "de", 1234.5), ("12", "ja", 12.0), ("x", "en", None)],
)  # fmt: skip
def test_decimals_in_the_files_language(text: str, language: str, expected: float | None) -> None:
    assert parse_decimal(text, language) == expected


def test_page_urls_map_to_site_paths() -> None:
    assert page_key("https://shop.test/products/tent/", SITE) == "/products/tent/"
    assert page_key("http://www.shop.test/about/", SITE) == "/about/"
    assert page_key("https://other.example/products/tent/", SITE) is None
    assert page_key("https://shop.test.evil.example/", SITE) is None
    assert page_key("https://example.com/shop/products/a/", "https://example.com/shop") == (
        "/products/a/"
    )
    assert page_key("https://example.com/blog/", "https://example.com/shop") is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ridgeline ul1 tent review", "ridgeline-ul1-tent"),
        ("UL1 Tent weight", "ridgeline-ul1-tent"),
        ("ridgeline ul1 carbon", "ridgeline-ul1-carbon"),
        ("ember 20 down sleeping bag", "ember-down-20"),
        ("ember down 0 degree bag", "ember-down-0"),
        ("Trekker 2 tent", "cairnwood-trekker-2"),
        ("ultralight tent", None),  # no product's handle words
        ("ridgeline", None),
        ("ridgeline ul1 carbon tent", "ridgeline-ul1-carbon"),  # more title words shared
    ],
)
def test_queries_map_to_products_by_handle_words(query: str, expected: str | None) -> None:
    assert QueryMatcher(PRODUCTS).match(query) == expected


def test_a_tie_leaves_the_query_unmapped() -> None:
    products = [ProductName("trail-tent", "Trail Tent"), ProductName("tent-trail", "Tent Trail")]
    assert QueryMatcher(products).match("trail tent") is None


def test_relative_labels_in_several_languages() -> None:
    yesterday = TODAY - dt.timedelta(days=1)
    assert relative_range("Last 28 days", TODAY) == (yesterday - dt.timedelta(days=27), yesterday)
    assert relative_range("Letzte 7 Tage", TODAY) == (yesterday - dt.timedelta(days=6), yesterday)
    assert relative_range("3 derniers mois", TODAY) == (dt.date(2026, 8, 25), yesterday)
    assert relative_range("Últimos 3 meses", TODAY) == (dt.date(2026, 8, 25), yesterday)
    assert relative_range("Last 24 hours", TODAY) == (yesterday, yesterday)
    assert relative_range("Custom", TODAY) is None


# --- imports (both databases) --------------------------------------------------------------


def test_english_pages_csv_covers_28_days_ending_yesterday(
    session: Session, tmp_path: Path
) -> None:
    report = do_import(session, write(tmp_path, "Pages.csv", PAGES_EN))
    (dataset,) = report.datasets
    assert (dataset.date_from, dataset.date_to) == (dt.date(2026, 10, 28), dt.date(2026, 11, 24))
    assert dataset.kind == "pages" and not dataset.replaced
    assert rows(session) == {
        "/products/ridgeline-ul1-tent/": ("ridgeline-ul1-tent", 1234, 45678),
        "/guides/choosing-a-tent/": (None, 12, 800),
        # The same page twice (a text fragment) adds up.
        "/products/ember-down-20/": ("ember-down-20", 10, 200),
    }
    assert report.foreign_pages == [
        "Pages.csv:6: https://other.example/products/ridgeline-ul1-tent/"
    ]
    assert "default" in report.range_from


def test_german_pages_csv_reads_german_numbers(session: Session, tmp_path: Path) -> None:
    report = do_import(
        session,
        write(tmp_path, "Seiten.csv", PAGES_DE),
        date_from=dt.date(2026, 10, 1),
        date_to=dt.date(2026, 10, 31),
    )
    (dataset,) = report.datasets
    assert (dataset.date_from, dataset.date_to) == (dt.date(2026, 10, 1), dt.date(2026, 10, 31))
    assert rows(session)["/products/ridgeline-ul1-tent/"] == ("ridgeline-ul1-tent", 1234, 45678)
    position = session.scalar(
        select(SearchRow.position).where(SearchRow.key == "/products/ember-down-20/")
    )
    assert position == pytest.approx(12.5)


def test_french_queries_csv_maps_queries_by_name(session: Session, tmp_path: Path) -> None:
    report = do_import(session, write(tmp_path, "Requêtes.csv", QUERIES_FR))
    assert report.datasets[0].kind == "queries"
    assert rows(session, "queries") == {
        "ridgeline ul1 tent avis": ("ridgeline-ul1-tent", 1204, 12345),
        "sac de couchage ember 20 down": ("ember-down-20", 15, 900),
        "tente ultralégère": (None, 4, 700),  # kept unmapped
    }


def test_zip_with_filters_dates_and_other_tables(session: Session, tmp_path: Path) -> None:
    path = zip_export(
        tmp_path,
        {
            "Queries.csv": (
                "Top queries,Clicks,Impressions,CTR,Position\nember 20 down,5,100,5%,3\n"
            ),
            "Pages.csv": PAGES_EN,
            "Countries.csv": "Country,Clicks,Impressions,CTR,Position\nGermany,3,40,7.5%,4\n",
            "Devices.csv": "Device,Clicks,Impressions,CTR,Position\nMobile,8,100,8%,4\n",
            "Search appearance.csv": "Search Appearance,Clicks,Impressions,CTR,Position\n",
            "Dates.csv": "Date,Clicks,Impressions,CTR,Position\n"
            "2026-09-02,1,10,10%,4\n2026-11-20,1,10,10%,4\n",
            "Filters.csv": "Filter,Value\nSearch type,Web\nDate,Last 3 months\n",
        },
    )
    report = do_import(session, path)
    kinds = {d.kind: d for d in report.datasets}
    assert set(kinds) == {"pages", "queries"}
    # The per-day chart's days win over the relative label.
    assert (kinds["pages"].date_from, kinds["pages"].date_to) == (
        dt.date(2026, 9, 2),
        dt.date(2026, 11, 20),
    )
    assert kinds["queries"].search_type == "web"
    assert rows(session, "queries") == {"ember 20 down": ("ember-down-20", 5, 100)}
    skipped = " ".join(report.skipped_files)
    assert "Countries.csv" in skipped and "Devices.csv" in skipped


def test_zip_with_explicit_dates_in_german_filters(session: Session, tmp_path: Path) -> None:
    path = zip_export(
        tmp_path,
        {
            "Seiten.csv": PAGES_DE,
            "Filter.csv": "Filter,Wert\nSuchtyp,Web\nDatum,2026-10-01 - 2026-10-28\n",
        },
    )
    report = do_import(session, path)
    (dataset,) = report.datasets
    assert (dataset.date_from, dataset.date_to) == (dt.date(2026, 10, 1), dt.date(2026, 10, 28))
    assert report.range_from == "the filters table's dates"


def test_zip_with_a_relative_label_only(session: Session, tmp_path: Path) -> None:
    path = zip_export(
        tmp_path, {"Pages.csv": PAGES_DE, "Filters.csv": "Filter,Value\nDate,Last 7 days\n"}
    )
    (dataset,) = do_import(session, path).datasets
    assert (dataset.date_from, dataset.date_to) == (dt.date(2026, 11, 18), dt.date(2026, 11, 24))


def test_comparison_exports_are_refused(session: Session, tmp_path: Path) -> None:
    path = zip_export(
        tmp_path,
        {
            "Pages.csv": PAGES_DE,
            "Filters.csv": "Filter,Value\nDate,Compare last 28 days to previous period\n",
        },
    )
    with pytest.raises(SearchDataError, match="comparison"):
        do_import(session, path)


def test_reimporting_the_same_range_replaces(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path, "Pages.csv", PAGES_EN)
    do_import(session, path)
    report = do_import(session, path)
    assert report.datasets[0].replaced
    assert session.scalar(select(func.count()).select_from(SearchDataset)) == 1
    assert rows(session)["/products/ridgeline-ul1-tent/"] == ("ridgeline-ul1-tent", 1234, 45678)


def test_malformed_file_is_refused_whole_with_line_numbers(
    session: Session, tmp_path: Path
) -> None:
    text = PAGES_EN + 'https://shop.test/a/,many,10,1%,2\nhttps://shop.test/b/,1,"2\n3",1%,2\n'
    text += "https://shop.test/c/,5,2,1%,2\nhttps://shop.test/d/,1,2\n"
    with pytest.raises(SearchDataError) as caught:
        do_import(session, write(tmp_path, "Pages.csv", text))
    assert caught.value.errors == [
        "Pages.csv:7: clicks 'many' is not a whole number",
        "Pages.csv:8: impressions '2\n3' is not a whole number",
        "Pages.csv:10: 5 clicks but only 2 impressions",
        "Pages.csv:11: 3 fields where the header has 5",
    ]
    assert session.scalar(select(func.count()).select_from(SearchRow)) == 0


def test_unknown_columns_are_reported_not_fatal(session: Session, tmp_path: Path) -> None:
    text = "Top pages,Clicks,Impressions,Share,CTR,Position\nhttps://shop.test/x/,1,2,9,50%,1\n"
    report = do_import(session, write(tmp_path, "Pages.csv", text))
    assert report.unknown_columns == ["Pages.csv: Share"]
    assert rows(session) == {"/x/": (None, 1, 2)}


def test_a_file_that_is_no_export_is_refused(session: Session, tmp_path: Path) -> None:
    with pytest.raises(SearchDataError, match="not a Search Console Pages or Queries table"):
        do_import(session, write(tmp_path, "x.csv", "Name,Price\na,1\n"))
    with pytest.raises(SearchDataError, match="no clicks column"):
        do_import(
            session, write(tmp_path, "y.csv", "Top pages,Impressions\nhttps://shop.test/,1\n")
        )


def test_overlapping_ranges_count_once_in_a_window(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path, "Pages.csv", PAGES_DE)
    do_import(session, path, date_from=dt.date(2026, 9, 1), date_to=dt.date(2026, 9, 28))
    report = do_import(session, path, date_from=dt.date(2026, 9, 15), date_to=dt.date(2026, 10, 12))
    assert any("overlaps" in note for note in report.notes)
    do_import(session, path, date_from=dt.date(2026, 10, 13), date_to=dt.date(2026, 11, 9))
    ids = datasets_for_window(session, dt.date(2026, 9, 1), dt.date(2026, 11, 30))
    ranges = sorted(
        (d.date_from, d.date_to)
        for d in session.scalars(select(SearchDataset).where(SearchDataset.id.in_(ids)))
    )
    assert ranges == [
        (dt.date(2026, 9, 15), dt.date(2026, 10, 12)),
        (dt.date(2026, 10, 13), dt.date(2026, 11, 9)),
    ]


def test_catalog_products_are_matched_by_default(session: Session, tmp_path: Path) -> None:
    product = Product(handle="ember-down-20", title="Ember 20°F Down Sleeping Bag", vendor="Ember")
    product.variants.append(Variant(option_key="", price=Decimal("10")))
    session.add(product)
    session.commit()
    import_search_data(session, write(tmp_path, "q.csv", QUERIES_FR), site_url=SITE, today=TODAY)
    session.commit()
    assert rows(session, "queries")["sac de couchage ember 20 down"][0] == "ember-down-20"


def test_cli_import_and_errors(runner: FlaskCliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "Pages.csv", PAGES_EN)
    result = runner.invoke(
        args=["search-data", "import", str(path), "--from", "2026-10-01", "--to", "2026-10-28"]
    )
    assert result.exit_code == 0, result.output
    assert "pages (web) 2026-10-01 to 2026-10-28: stored 3 rows" in result.output
    assert "not a page of this site, skipped: Pages.csv:6" in result.output
    again = runner.invoke(
        args=["search-data", "import", str(path), "--from", "2026-10-01", "--to", "2026-10-28"]
    )
    assert "replaced 3 rows" in again.output
    bad = write(tmp_path, "Bad.csv", "Top pages,Clicks,Impressions\nhttps://shop.test/,x,1\n")
    result = runner.invoke(args=["search-data", "import", str(bad)])
    assert result.exit_code == 1
    assert "Bad.csv:2: clicks 'x' is not a whole number" in result.output
    assert "nothing was imported" in result.output
    result = runner.invoke(args=["search-data", "import", str(path), "--from", "yesterday"])
    assert result.exit_code == 1 and "not a date" in result.output
