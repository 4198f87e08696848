"""Google Search Console performance exports: Pages and Queries tables, alone or zipped.

Search Console exports a table as CSV (or a zip of CSVs: the table of each dimension plus
``Filters.csv`` and a per-day chart) with headers, file names and numbers in the account's
language. Files are recognized by their header, never by their name:

* a **Pages** table has a first column named like ``Top pages`` / ``Häufigste Seiten`` /
  ``Pages les plus populaires`` (see :data:`DIMENSION_LABELS`) or holding URLs;
* a **Queries** table has a first column named like ``Top queries`` / ``Suchanfragen``;
* a **filters** table (``Filter``, ``Value``) gives the date range and search type;
* a **dates** table (``Date``, ``Clicks``…) gives the days the export covers.

The range of an import is, in order: ``--from/--to``; the explicit dates of the filters
table's date row; the first and last day of the dates table; the filters table's relative
label ("Last 3 months", "Letzte 28 Tage") ending the day before the import; else the 28
days ending the day before the import (Search Console's default). A comparison export
(two periods) is refused.

Numbers are read in the file's language: German ``1.234`` and ``3,5 %``, French
``1 234`` (narrow no-break space) and ``3,5 %``, English ``1,234`` and ``3.5%``.

Pages map to products by URL (``SITE_URL`` + ``/products/<handle>/``); other pages of the
site are kept by path; pages of other hosts are reported and skipped. Queries map to
products by name (:func:`match_query`) and are kept unmapped otherwise.

A file with any malformed row is refused whole, each problem reported as ``file:line:
message``; unknown columns and other tables of a zip are reported, not fatal. Importing
the same kind, search type and range again replaces the stored rows.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from engine.models import Product, SearchDataset, SearchRow

#: Days a bare export covers when nothing says otherwise (Search Console's default view).
DEFAULT_DAYS = 28
#: Longest page path or query kept (the column's size).
MAX_KEY_LENGTH = 2000


def _fold(text: str) -> str:
    """Lower-case, strip accents and collapse spaces, for comparing labels across languages."""
    text = unicodedata.normalize("NFKD", text.replace("\ufeff", ""))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.casefold().replace("’", "'").split())


#: Header labels by language: the dimension column of each table and the metric columns.
#: Matching folds case, accents and spaces; the bare dimension name ("Page", "Seite") is
#: accepted too.
DIMENSION_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "pages": {
        "en": ("Top pages", "Page", "Pages"),
        "de": ("Häufigste Seiten", "Seite", "Seiten"),
        "fr": ("Pages les plus populaires", "Page", "Pages principales"),
        "es": ("Páginas principales", "Página", "Páginas"),
        "it": ("Pagine principali", "Pagina", "Pagine"),
        "pt": ("Páginas principais", "Página", "Páginas"),
        "nl": ("Populairste pagina's", "Pagina", "Pagina's"),
        "ja": ("上位のページ", "ページ"),
    },
    "queries": {
        "en": ("Top queries", "Query", "Queries"),
        "de": ("Häufigste Suchanfragen", "Suchanfrage", "Suchanfragen"),
        "fr": ("Requêtes les plus fréquentes", "Requête", "Requêtes"),
        "es": ("Consultas principales", "Consulta", "Consultas"),
        "it": ("Query principali", "Query"),
        "pt": ("Consultas principais", "Consulta", "Consultas"),
        "nl": ("Populairste zoekopdrachten", "Zoekopdracht", "Zoekopdrachten"),
        "ja": ("上位のクエリ", "クエリ"),
    },
}
METRIC_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "clicks": {
        "en": ("Clicks",),
        "de": ("Klicks",),
        "fr": ("Clics",),
        "es": ("Clics",),
        "it": ("Clic",),
        "pt": ("Cliques",),
        "nl": ("Klikken",),
        "ja": ("クリック数",),
    },
    "impressions": {
        "en": ("Impressions",),
        "de": ("Impressionen",),
        "fr": ("Impressions",),
        "es": ("Impresiones",),
        "it": ("Impressioni",),
        "pt": ("Impressões",),
        "nl": ("Vertoningen",),
        "ja": ("表示回数",),
    },
    "ctr": {lang: ("CTR",) for lang in ("en", "de", "fr", "es", "it", "pt", "nl", "ja")},
    "position": {
        "en": ("Position",),
        "de": ("Position",),
        "fr": ("Position",),
        "es": ("Posición",),
        "it": ("Posizione",),
        "pt": ("Posição",),
        "nl": ("Positie",),
        "ja": ("掲載順位",),
    },
}
#: The first column of the per-day chart table and of the filters table.
DATE_LABELS = ("Date", "Datum", "Fecha", "Data", "日付")
FILTER_LABELS = ("Filter", "Filtre", "Filtro", "フィルタ", "フィルター")
SEARCH_TYPE_LABELS = (
    "Search type", "Suchtyp", "Type de recherche", "Tipo de búsqueda", "Tipo di ricerca",
    "Tipo de pesquisa", "Zoektype", "検索タイプ",
)  # fmt: skip
#: Search type values -> the stored name.
SEARCH_TYPES = {
    "web": "web", "image": "image", "images": "image", "bild": "image", "bilder": "image",
    "imagenes": "image", "immagini": "image", "imagens": "image", "afbeeldingen": "image",
    "画像": "image", "video": "video", "videos": "video", "news": "news",
    "nachrichten": "news", "actualites": "news", "noticias": "news", "notizie": "news",
    "nieuws": "news", "ニュース": "news", "discover": "discover", "ウェブ": "web",
}  # fmt: skip
#: Words that mark a comparison export (two periods in one table).
COMPARE_WORDS = ("compare", "vergleich", "compar", "vergelijk", "比較")
#: Decimal comma languages (the others write a decimal point).
DECIMAL_COMMA = frozenset({"de", "fr", "es", "it", "pt", "nl"})

_DAY_WORDS = ("day", "tag", "jour", "dia", "giorn", "dag", "日")
_MONTH_WORDS = ("month", "monat", "mois", "mes", "mese", "maand", "か月", "ヶ月", "月")
_HOUR_WORDS = ("hour", "stunde", "heure", "hora", "ore", "uur", "時間")


def _index(table: Mapping[str, Mapping[str, tuple[str, ...]]]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for name, languages in table.items():
        for language, labels in languages.items():
            for label in labels:
                out.setdefault(_fold(label), (name, language))
    return out


_DIMENSIONS = _index(DIMENSION_LABELS)
_METRICS = _index(METRIC_LABELS)
_DATES = {_fold(label) for label in DATE_LABELS}
_FILTERS = {_fold(label) for label in FILTER_LABELS}
_SEARCH_TYPE_KEYS = {_fold(label) for label in SEARCH_TYPE_LABELS}


class SearchDataError(ValueError):
    """An export has problems; nothing of it was stored. ``errors`` lists them all."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class ProductName:
    """What query matching knows of a product."""

    handle: str
    title: str
    vendor: str = ""


@dataclass
class TableRow:
    """One row of a Pages or Queries table, as read."""

    line: int
    key: str
    clicks: int
    impressions: int
    position: float | None


@dataclass
class Table:
    """One Pages or Queries table read from a file."""

    kind: str  # "pages" | "queries"
    name: str
    language: str
    rows: list[TableRow]
    unknown_columns: list[str]


@dataclass
class Filters:
    """What a filters table says."""

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    relative: str = ""  # the date row's text when it names no dates ("Last 3 months")
    search_type: str = "web"
    others: list[str] = field(default_factory=list)  # other filters ("Country: Germany")


@dataclass
class DatasetReport:
    """One table stored."""

    kind: str
    search_type: str
    date_from: dt.date
    date_to: dt.date
    rows: int
    mapped: int
    clicks: int
    impressions: int
    replaced: bool
    source: str


@dataclass
class SearchImportReport:
    """What an import stored and what it skipped."""

    datasets: list[DatasetReport] = field(default_factory=list)
    range_from: str = ""  # where the date range came from
    unknown_columns: list[str] = field(default_factory=list)  # "Pages.csv: Foo"
    foreign_pages: list[str] = field(default_factory=list)  # "Pages.csv:7: https://other/..."
    skipped_files: list[str] = field(default_factory=list)  # other tables of a zip
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Return the report as lines for the terminal."""
        lines = []
        for d in self.datasets:
            what = "replaced" if d.replaced else "stored"
            lines.append(
                f"{d.kind} ({d.search_type}) {d.date_from} to {d.date_to}: {what} {d.rows} rows "
                f"({d.mapped} mapped to products), {d.clicks} clicks, "
                f"{d.impressions} impressions [from {d.source}]"
            )
        lines.append(f"date range from {self.range_from}")
        lines += [f"unknown column ignored: {name}" for name in self.unknown_columns]
        lines += [f"not a page of this site, skipped: {page}" for page in self.foreign_pages]
        lines += [f"skipped: {name}" for name in self.skipped_files]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# --- numbers ----------------------------------------------------------------------------

# Group separators: spaces (plain, no-break, narrow no-break, thin) and the Swiss apostrophe.
_SPACES = re.compile(r"[ \u00a0\u202f\u2009']")


def parse_count(text: str) -> int | None:
    """Return a whole number written with any grouping ("1.234", "1 234", "1,234"), or None."""
    cleaned = _SPACES.sub("", text.strip()).replace(".", "").replace(",", "")
    return int(cleaned) if cleaned.isdigit() else None


def parse_decimal(text: str, language: str) -> float | None:
    """Return a decimal number ("3,5", "1,234.5", "3.5 %") read in the file's language."""
    cleaned = _SPACES.sub("", text.strip()).rstrip("%")
    if not cleaned:
        return None
    if "," in cleaned and "." in cleaned:
        # Both marks: the last one is the decimal mark.
        decimal = "," if cleaned.rfind(",") > cleaned.rfind(".") else "."
    else:
        decimal = "," if language in DECIMAL_COMMA else "."
    group = "." if decimal == "," else ","
    cleaned = cleaned.replace(group, "").replace(decimal, ".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


# --- reading files ----------------------------------------------------------------------


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def _records(text: str) -> list[tuple[int, list[str]]]:
    """Return (physical start line, fields) of each CSV record."""
    first = text.split("\n", 1)[0]
    delimiter = (
        ";"
        if first.count(";") > first.count(",")
        else ("\t" if first.count("\t") > first.count(",") else ",")
    )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    out: list[tuple[int, list[str]]] = []
    start = 1
    for fields in reader:
        if any(value.strip() for value in fields):
            out.append((start, fields))
        start = reader.line_num + 1
    return out


def _table_kind(header: list[str], rows: list[tuple[int, list[str]]]) -> str:
    """Return "pages", "queries", "filters", "dates" or "" for a table's header."""
    first = _fold(header[0]) if header else ""
    if first in _DIMENSIONS:
        return _DIMENSIONS[first][0]
    if first in _FILTERS and len(header) == 2:
        return "filters"
    if first in _DATES:
        return "dates"
    metrics = [_METRICS.get(_fold(name)) for name in header[1:]]
    if any(metric and metric[0] == "clicks" for metric in metrics) and rows:
        values = [fields[0].strip() for _line, fields in rows[:20] if fields]
        if values and all(value.startswith(("http://", "https://")) for value in values):
            return "pages"
    return ""


def _language(header: list[str]) -> str:
    """Return the language the header is written in (the first label that tells)."""
    for name in header:
        folded = _fold(name)
        for index in (_DIMENSIONS, _METRICS):
            if folded in index:
                # Labels shared by several languages ("CTR", "Impressions") are indexed
                # under the first; prefer a label that only one language uses.
                matches = {
                    language
                    for table in (DIMENSION_LABELS, METRIC_LABELS)
                    for languages in table.values()
                    for language, labels in languages.items()
                    if folded in {_fold(label) for label in labels}
                }
                if len(matches) == 1:
                    return matches.pop()
    return "en"


def read_table(
    name: str, kind: str, records: list[tuple[int, list[str]]], errors: list[str]
) -> Table:
    """Check a Pages or Queries table; append its problems to ``errors``."""
    header_line, header = records[0]
    language = _language(header)
    columns: dict[str, int] = {}
    unknown: list[str] = []
    for index, label in enumerate(header[1:], start=1):
        metric = _METRICS.get(_fold(label))
        if metric is None or metric[0] in columns:
            unknown.append(label.strip() or f"column {index + 1}")
        else:
            columns[metric[0]] = index
    for needed in ("clicks", "impressions"):
        if needed not in columns:
            labels = " / ".join(METRIC_LABELS[needed][lang][0] for lang in ("en", "de", "fr"))
            errors.append(f"{name}:{header_line}: no {needed} column ({labels}, ...)")
    rows: list[TableRow] = []
    if any(needed not in columns for needed in ("clicks", "impressions")):
        return Table(kind, name, language, rows, unknown)
    for line, fields in records[1:]:
        if len(fields) != len(header):
            errors.append(f"{name}:{line}: {len(fields)} fields where the header has {len(header)}")
            continue
        key = fields[0].strip()
        if not key:
            errors.append(
                f"{name}:{line}: the {kind[:-1] if kind == 'pages' else 'query'} is empty"
            )
            continue
        clicks = parse_count(fields[columns["clicks"]])
        impressions = parse_count(fields[columns["impressions"]])
        problem = False
        for label, value, raw in (
            ("clicks", clicks, fields[columns["clicks"]]),
            ("impressions", impressions, fields[columns["impressions"]]),
        ):
            if value is None:
                errors.append(f"{name}:{line}: {label} '{raw.strip()}' is not a whole number")
                problem = True
        position = None
        if "position" in columns and fields[columns["position"]].strip():
            position = parse_decimal(fields[columns["position"]], language)
            if position is None or position < 0:
                raw = fields[columns["position"]].strip()
                errors.append(f"{name}:{line}: position '{raw}' is not a number")
                problem = True
        ctr = fields[columns["ctr"]].strip() if "ctr" in columns else ""
        if ctr and parse_decimal(ctr, language) is None:
            errors.append(f"{name}:{line}: CTR '{ctr}' is not a percentage")
            problem = True
        if problem or clicks is None or impressions is None:
            continue
        if clicks > impressions:
            errors.append(f"{name}:{line}: {clicks} clicks but only {impressions} impressions")
            continue
        rows.append(TableRow(line, key[:MAX_KEY_LENGTH], clicks, impressions, position))
    return Table(kind, name, language, rows, unknown)


_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DMY_DATE = re.compile(r"(\d{1,2})[./](\d{1,2})[./](\d{4})")
_YMD_SLASH = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})")


def _dates_in(text: str) -> list[dt.date]:
    found: list[tuple[int, dt.date]] = []
    try:
        for match in _ISO_DATE.finditer(text):
            found.append((match.start(), dt.date(*map(int, match.groups()))))
        for match in _YMD_SLASH.finditer(text):
            found.append((match.start(), dt.date(*map(int, match.groups()))))
        for match in _DMY_DATE.finditer(text):
            day, month, year = map(int, match.groups())
            found.append((match.start(), dt.date(year, month, day)))
    except ValueError:
        return []
    return [date for _pos, date in sorted(found)]


def read_filters(name: str, records: list[tuple[int, list[str]]], errors: list[str]) -> Filters:
    """Read a filters table: the date range (or its relative label) and the search type."""
    filters = Filters()
    for line, fields in records[1:]:
        if len(fields) < 2:
            continue
        key, value = fields[0].strip(), fields[1].strip()
        folded_key, folded_value = _fold(key), _fold(value)
        if folded_key in _DATES:
            if any(word in folded_value for word in COMPARE_WORDS):
                errors.append(
                    f"{name}:{line}: a comparison export ('{value}') holds two periods; "
                    "export one period"
                )
                continue
            dates = _dates_in(value)
            if len(dates) >= 2:
                filters.date_from, filters.date_to = dates[0], dates[-1]
            elif len(dates) == 1:
                filters.date_from = filters.date_to = dates[0]
            else:
                filters.relative = value
        elif folded_key in _SEARCH_TYPE_KEYS:
            filters.search_type = SEARCH_TYPES.get(folded_value, folded_value[:20] or "web")
        else:
            filters.others.append(f"{key}: {value}")
    if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
        errors.append(f"{name}: the date range ends before it starts")
    return filters


def read_dates(name: str, records: list[tuple[int, list[str]]]) -> tuple[dt.date, dt.date] | None:
    """Return the first and last day of a per-day chart table, if its days are readable."""
    days = [dates[0] for _line, fields in records[1:] if fields and (dates := _dates_in(fields[0]))]
    return (min(days), max(days)) if days else None


def relative_range(label: str, today: dt.date) -> tuple[dt.date, dt.date] | None:
    """Return the range a relative label ("Last 3 months") names, ending yesterday."""
    folded = _fold(label)
    number = re.search(r"\d+", folded)
    if number is None:
        return None
    count = int(number.group())
    end = today - dt.timedelta(days=1)
    if any(word in folded for word in _HOUR_WORDS):
        return end, end
    if any(word in folded for word in _DAY_WORDS):
        return end - dt.timedelta(days=count - 1), end
    if any(word in folded for word in _MONTH_WORDS):
        month = end.month - count
        year = end.year + (month - 1) // 12
        month = (month - 1) % 12 + 1
        day = min(end.day, calendar.monthrange(year, month)[1])
        return dt.date(year, month, day) + dt.timedelta(days=1), end
    return None


@dataclass
class Export:
    """Everything read from one path before anything is stored."""

    tables: list[Table] = field(default_factory=list)
    filters: Filters | None = None
    dates: tuple[dt.date, dt.date] | None = None
    skipped: list[str] = field(default_factory=list)


def _read_one(name: str, data: bytes, export: Export, errors: list[str], *, alone: bool) -> None:
    try:
        text = _decode(data)
    except UnicodeDecodeError:
        errors.append(f"{name}:1: not a UTF-8 text file")
        return
    try:
        records = _records(text)
    except csv.Error as exc:
        errors.append(f"{name}: not a CSV file ({exc})")
        return
    if not records:
        if alone:
            errors.append(f"{name}:1: the file is empty")
        else:
            export.skipped.append(f"{name} (empty)")
        return
    kind = _table_kind(records[0][1], records)
    if kind in ("pages", "queries"):
        export.tables.append(read_table(name, kind, records, errors))
    elif kind == "filters":
        export.filters = read_filters(name, records, errors)
    elif kind == "dates":
        export.dates = read_dates(name, records)
        export.skipped.append(f"{name} (per-day chart: used for the date range)")
    elif alone:
        shown = ", ".join(records[0][1][:4])
        errors.append(
            f"{name}:{records[0][0]}: not a Search Console Pages or Queries table (header: {shown})"
        )
    else:
        export.skipped.append(f"{name} (not a Pages or Queries table)")


def read_export(path: Path, errors: list[str]) -> Export:
    """Read a CSV or a zip of CSVs; append problems to ``errors``."""
    export = Export()
    try:
        data = path.read_bytes()
    except OSError as exc:
        errors.append(f"{path.name}: cannot read the file ({exc.strerror or exc})")
        return export
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = [
                    info for info in archive.infolist()
                    if not info.is_dir() and info.filename.lower().endswith(".csv")
                ]  # fmt: skip
                for info in members:
                    label = f"{path.name}/{info.filename}"
                    _read_one(label, archive.read(info), export, errors, alone=False)
        except (zipfile.BadZipFile, OSError) as exc:
            errors.append(f"{path.name}: not a readable zip file ({exc})")
            return export
        if not export.tables and not errors:
            errors.append(f"{path.name}: the zip holds no Pages or Queries table")
        return export
    _read_one(path.name, data, export, errors, alone=True)
    return export


# --- mapping ----------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Return the folded words of a text ("Ember 20°F Down" -> ["ember", "20", "f", "down"])."""
    return _WORD.findall(_fold(text))


@dataclass(frozen=True)
class _Candidate:
    handle: str
    required: frozenset[str]
    known: frozenset[str]


class QueryMatcher:
    """Maps search queries to products by name (see :func:`match_query`)."""

    def __init__(self, products: Iterable[ProductName]) -> None:
        self.by_word: dict[str, list[_Candidate]] = {}
        for product in products:
            handle_words = words(product.handle.replace("-", " "))
            vendor = set(words(product.vendor))
            required = frozenset(w for w in handle_words if w not in vendor) or frozenset(
                handle_words
            )
            if not required:
                continue
            candidate = _Candidate(
                product.handle, required, frozenset(handle_words) | frozenset(words(product.title))
            )
            rarest = min(required, key=len)  # any one required word indexes the candidate
            self.by_word.setdefault(rarest, []).append(candidate)

    def match(self, query: str) -> str | None:
        """Return the handle a query names, or None (no product, or a tie)."""
        query_words = set(words(query))
        best: list[tuple[int, int, str]] = []
        for word in query_words:
            for candidate in self.by_word.get(word, ()):
                if candidate.required <= query_words:
                    shared = len(candidate.known & query_words)
                    best.append((shared, len(candidate.required), candidate.handle))
        if not best:
            return None
        best.sort(reverse=True)
        if len(best) > 1 and best[0][:2] == best[1][:2] and best[0][2] != best[1][2]:
            return None
        return best[0][2]


def match_query(query: str, products: Iterable[ProductName]) -> str | None:
    """Return the product a query names, or None.

    Rule: every word of the product's handle, except words of its vendor's name, appears
    in the query (words folded: case, accents, punctuation). When several products
    qualify, the one sharing the most words of its title and handle with the query wins,
    then the one with more required words; a remaining tie leaves the query unmapped.
    """
    return QueryMatcher(products).match(query)


def _site_host(site_url: str) -> str:
    host = (urlsplit(site_url).hostname or "").rstrip(".")
    return host[4:] if host.startswith("www.") else host


def page_key(url: str, site_url: str) -> str | None:
    """Return the site path of a page URL, or None when the URL is not the site's."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    host = host[4:] if host.startswith("www.") else host
    if not host or host != _site_host(site_url):
        return None
    base = urlsplit(site_url).path.rstrip("/")
    path = unquote(parts.path) or "/"
    if base:
        if path != base and not path.startswith(base + "/"):
            return None
        path = path[len(base) :] or "/"
    return path[:MAX_KEY_LENGTH]


_PRODUCT_PATH = re.compile(r"^/products/([a-z0-9](?:[a-z0-9-]*[a-z0-9])?)/?$")


def product_of_path(path: str) -> str | None:
    """Return the handle of a product page path (``/products/<handle>/``), or None."""
    match = _PRODUCT_PATH.match(path)
    return match.group(1) if match else None


def product_names(
    session: Session, coming_soon: Mapping[str, ProductName] | None = None
) -> list[ProductName]:
    """Return the catalog's products (and coming-soon ones) as query matching knows them."""
    names = {
        handle: ProductName(handle, title, vendor)
        for handle, title, vendor in session.execute(
            select(Product.handle, Product.title, Product.vendor)
        )
    }
    for handle, name in (coming_soon or {}).items():
        names.setdefault(handle, name)
    return list(names.values())


# --- storing ----------------------------------------------------------------------------


@dataclass
class _Stored:
    key: str
    handle: str | None
    clicks: int
    impressions: int
    weighted_position: float
    positioned: int


def _resolve_range(
    export: Export, date_from: dt.date | None, date_to: dt.date | None, today: dt.date
) -> tuple[dt.date, dt.date, str]:
    if date_from is not None or date_to is not None:
        end = date_to or today - dt.timedelta(days=1)
        start = date_from or end - dt.timedelta(days=DEFAULT_DAYS - 1)
        return start, end, "--from/--to"
    filters = export.filters
    if filters and filters.date_from and filters.date_to:
        return filters.date_from, filters.date_to, "the filters table's dates"
    if export.dates:
        return export.dates[0], export.dates[1], "the per-day chart's first and last day"
    if filters and filters.relative:
        found = relative_range(filters.relative, today)
        if found:
            return found[0], found[1], f"the filters table's '{filters.relative}'"
    end = today - dt.timedelta(days=1)
    return (
        end - dt.timedelta(days=DEFAULT_DAYS - 1),
        end,
        f"the default: the {DEFAULT_DAYS} days ending the day before the import",
    )


def import_search_data(
    session: Session,
    path: Path,
    *,
    site_url: str,
    today: dt.date,
    products: Sequence[ProductName] | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> SearchImportReport:
    """Import a Search Console export (CSV or zip), all or nothing; raise SearchDataError."""
    errors: list[str] = []
    export = read_export(path, errors)
    if errors:
        raise SearchDataError(errors)
    start, end, origin = _resolve_range(export, date_from, date_to, today)
    if end < start:
        raise SearchDataError(
            [f"{path.name}: the date range {start} to {end} ends before it starts"]
        )
    report = SearchImportReport(range_from=origin, skipped_files=export.skipped)
    search_type = export.filters.search_type if export.filters else "web"
    if export.filters and export.filters.others:
        report.notes.append(
            "the export is filtered (" + "; ".join(export.filters.others) + "): "
            "its figures are those of the filtered subset"
        )
    kinds = [table.kind for table in export.tables]
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            raise SearchDataError(
                [f"{path.name}: holds {kinds.count(kind)} {kind} tables; one each"]
            )
    matcher = QueryMatcher(products if products is not None else product_names(session))
    for table in export.tables:
        report.unknown_columns += [f"{table.name}: {column}" for column in table.unknown_columns]
        stored: dict[str, _Stored] = {}
        for row in table.rows:
            if table.kind == "pages":
                key = page_key(row.key, site_url)
                if key is None:
                    report.foreign_pages.append(f"{table.name}:{row.line}: {row.key}")
                    continue
                handle = product_of_path(key)
            else:
                key = " ".join(row.key.split())
                handle = matcher.match(key)
            item = stored.setdefault(key, _Stored(key, handle, 0, 0, 0.0, 0))
            # The same page twice (a fragment or query string dropped): add up, average
            # positions weighted by impressions.
            item.clicks += row.clicks
            item.impressions += row.impressions
            if row.position is not None:
                item.weighted_position += row.position * max(row.impressions, 1)
                item.positioned += max(row.impressions, 1)
        report.datasets.append(_store(session, table, stored, search_type, start, end, path.name))
        report.datasets[-1].source = origin
        for other in _overlapping(session, table.kind, search_type, start, end):
            report.notes.append(
                f"{table.kind} data already stored for {other.date_from} to {other.date_to} "
                "overlaps this range; a report counts one of overlapping ranges (the latest)"
            )
    return report


def _store(
    session: Session,
    table: Table,
    stored: Mapping[str, _Stored],
    search_type: str,
    start: dt.date,
    end: dt.date,
    filename: str,
) -> DatasetReport:
    existing = session.scalar(
        select(SearchDataset).where(
            SearchDataset.kind == table.kind,
            SearchDataset.search_type == search_type,
            SearchDataset.date_from == start,
            SearchDataset.date_to == end,
        )
    )
    replaced = existing is not None
    if existing is not None:
        session.execute(delete(SearchRow).where(SearchRow.dataset_id == existing.id))
        session.delete(existing)
        session.flush()
    dataset = SearchDataset(
        kind=table.kind,
        search_type=search_type,
        date_from=start,
        date_to=end,
        filename=filename[:500],
        rows=len(stored),
    )
    session.add(dataset)
    session.flush()
    values = [
        {
            "dataset_id": dataset.id,
            "key": item.key,
            "product_handle": item.handle,
            "clicks": item.clicks,
            "impressions": item.impressions,
            "position": (
                round(item.weighted_position / item.positioned, 2) if item.positioned else None
            ),
        }
        for item in stored.values()
    ]
    if values:
        session.execute(insert(SearchRow), values)
    return DatasetReport(
        kind=table.kind,
        search_type=search_type,
        date_from=start,
        date_to=end,
        rows=len(values),
        mapped=sum(1 for item in stored.values() if item.handle),
        clicks=sum(item.clicks for item in stored.values()),
        impressions=sum(item.impressions for item in stored.values()),
        replaced=replaced,
        source="",
    )


def _overlapping(
    session: Session, kind: str, search_type: str, start: dt.date, end: dt.date
) -> list[SearchDataset]:
    query = select(SearchDataset).where(
        SearchDataset.kind == kind,
        SearchDataset.search_type == search_type,
        SearchDataset.date_from <= end,
        SearchDataset.date_to >= start,
        ~((SearchDataset.date_from == start) & (SearchDataset.date_to == end)),
    )
    return list(session.scalars(query))


def datasets_for_window(
    session: Session, start: dt.date, end: dt.date, *, kind: str = "pages", search_type: str = "web"
) -> list[int]:
    """Return the ids of the datasets a report over ``start``..``end`` counts.

    Every dataset whose range overlaps the window counts in full; of datasets whose ranges
    overlap each other, only the one ending last (then imported last) counts, so the same
    days are never counted twice.
    """
    candidates = session.execute(
        select(SearchDataset.id, SearchDataset.date_from, SearchDataset.date_to)
        .where(
            SearchDataset.kind == kind,
            SearchDataset.search_type == search_type,
            SearchDataset.date_from <= end,
            SearchDataset.date_to >= start,
        )
        .order_by(
            SearchDataset.date_to.desc(), SearchDataset.imported_at.desc(), SearchDataset.id.desc()
        )
    ).all()
    chosen: list[tuple[int, dt.date, dt.date]] = []
    for dataset_id, first, last in candidates:
        if all(last < other_first or first > other_last for _i, other_first, other_last in chosen):
            chosen.append((dataset_id, first, last))
    return [dataset_id for dataset_id, _first, _last in chosen]


def parse_date(text: str) -> dt.date:
    """Return an ISO date (YYYY-MM-DD); raise ValueError with a readable message."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not a date like 2026-10-01") from None


def as_dict(report: SearchImportReport) -> dict[str, Any]:
    """Return the report as plain values (for JSON)."""
    return {
        "datasets": [
            {**d.__dict__, "date_from": d.date_from.isoformat(), "date_to": d.date_to.isoformat()}
            for d in report.datasets
        ],
        "range_from": report.range_from,
        "unknown_columns": report.unknown_columns,
        "foreign_pages": report.foreign_pages,
        "skipped_files": report.skipped_files,
        "notes": report.notes,
    }
