"""Content: the sanitizer, Markdown rendering, front matter, validation and references."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import pytest

from engine.content import (
    Content,
    ContentError,
    ContentErrors,
    _markdown,
    check_references,
    load_content,
    render_markdown,
    sanitize_html,
)


def write(root: Path, relative: str, text: str | bytes) -> Path:
    """Write one content file under ``root``."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def errors_of(root: Path) -> list[str]:
    """Return the error lines loading ``root`` raises."""
    with pytest.raises(ContentErrors) as raised:
        load_content(root)
    return str(raised.value).splitlines()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Return a content folder holding one valid file of every kind, plus an asset."""
    root = tmp_path / "content"
    write(
        root,
        "products/trail-tent.md",
        """---
description: The tent we pitch most.
image: /assets/products/trail-tent.svg
image_alt: A green two-person tent
brand: Northwind
replaced_by: trail-tent-2
faq:
  - question: Is it freestanding?
    answer: Yes, with *two* poles.
  - question: How heavy?
    answer: 1.9 kg.
attributes:
  capacity: 2 people
  waterproof: yes
  weight: 1.90 kg
related:
  - summit-stove
  - river-pack
---
# Why we like it

It pitches in **three minutes**.
""",
    )
    write(
        root,
        "products/trail-tent-2.md",
        """---
status: coming-soon
title: Trail Tent 2
description: Lighter, taller, coming this autumn.
price: 349.90
category: tents
available_from: 2025-09-01
attributes:
  capacity: 2 people
---
Sign up to hear first.
""",
    )
    write(
        root,
        "categories/tents.md",
        """---
title: Tents
description: Shelters for every trip.
types: [Tent, Shelter]
tags:
  - camping
products:
  - trail-tent
image: /assets/categories/tents.svg
---
Our tents.
""",
    )
    write(
        root,
        "comparisons/trail-tent-vs-trail-tent-2.md",
        """---
products:
  - trail-tent
  - trail-tent-2
description: Old against new.
attributes:
  - price
  - capacity
---
The new one is lighter.
""",
    )
    write(
        root,
        "guides/first-camp.md",
        """---
title: Your first camp
description: What to pack.
products: [trail-tent, summit-stove]
---
Start here.
""",
    )
    write(root, "pages/about.md", "---\ntitle: About us\ndescription: Who we are.\n---\nHello.\n")
    write(root, "assets/products/trail-tent.svg", "<svg/>")
    write(root, "assets/.DS_Store", "junk")
    return root


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ('<p>Hi <script>alert("x")</script>there</p>', "<p>Hi there</p>"),
        ("<style>p{color:red}</style><p>a</p>", "<p>a</p>"),
        ('<iframe src="https://evil.test">fallback text</iframe>after', "after"),
        ("<object><embed src=x>obj text</object>x", "x"),
        ("<noscript>ns</noscript><template>tpl</template>x", "x"),
        ("<svg><script>1</script><text>svg text</text></svg>x", "x"),
        ('<img src="x.png" onerror="alert(1)" alt="a">', '<img src="x.png" alt="a">'),
        ('<p onclick="steal()">x</p>', "<p>x</p>"),
        ('<a href="javascript:alert(1)">j</a>', '<a rel="noopener">j</a>'),
        ('<a href=" JaVaScRiPt:alert(1)">j</a>', '<a rel="noopener">j</a>'),
        ('<a href="data:text/html,hi">d</a>', '<a rel="noopener">d</a>'),
        ('<img src="data:image/png;base64,AAAA" alt="">', '<img alt="">'),
        ("<form><input name=a><button>Go</button></form>", "Go"),
        ("<!-- note --><p>x</p>", "<p>x</p>"),
        ('<p style="color:red" class="x" id="waitlist-thanks">x</p>', "<p>x</p>"),
    ],
)
def test_sanitizer_removes_dangerous_markup(dirty: str, clean: str) -> None:
    assert sanitize_html(dirty) == clean


@pytest.mark.parametrize(
    "html",
    [
        "<p>Plain <strong>bold</strong> <em>em</em> <code>code</code></p>",
        "<h2>A</h2><h3>B</h3><h6>C</h6>",
        '<ul><li>a</li></ul><ol start="3"><li>b</li></ol><dl><dt>t</dt><dd>d</dd></dl>',
        '<a href="/products/tent/" title="Tent" rel="noopener">tent</a>',
        '<a href="https://example.com/" rel="noopener">x</a>',
        '<a href="mailto:hi@example.com" rel="noopener">mail</a>',
        '<img src="/assets/a.jpg" alt="A" width="10" height="20" loading="lazy">',
        "<blockquote><p>q</p></blockquote><hr><p>a<br>b</p><pre><code>x</code></pre>",
        '<figure><img src="a.png" alt=""><figcaption>cap</figcaption></figure>',
        '<table><caption>c</caption><thead><tr><th scope="col">h</th></tr></thead>'
        '<tbody><tr><td colspan="2">d</td></tr></tbody></table>',
        "<details><summary>More</summary><p>x</p></details>",
    ],
)
def test_sanitizer_keeps_normal_formatting(html: str) -> None:
    assert sanitize_html(html) == html


def test_sanitizer_demotes_h1_and_filters_values() -> None:
    assert sanitize_html('<H1 class="x">Title</H1>') == "<h2>Title</h2>"
    assert sanitize_html('<img src="a.png" alt="<h1>" loading="soon">') == (
        '<img src="a.png" alt="&lt;h1&gt;">'
    )
    assert sanitize_html('<th style="text-align:right;color:red">a</th>') == "a"
    assert (
        sanitize_html('<table><tr><th style="text-align:right;color:red">a</th></tr></table>')
        == '<table><tbody><tr><th style="text-align:right">a</th></tr></tbody></table>'
    )
    assert sanitize_html('<code class="language-py evil">x</code>') == (
        '<code class="language-py">x</code>'
    )


# --- Markdown ----------------------------------------------------------------------------


def test_markdown_renders_commonmark_tables_strikethrough_footnotes() -> None:
    html = render_markdown(
        "# Title\n\nSome **bold** and ~~old~~ text.[^1]\n\n"
        "| a | b |\n|:--|--:|\n| 1 | 2 |\n\n```python\nx = 1\n```\n\n[^1]: A note.\n"
    )
    assert html.startswith("<h2>Title</h2>\n<p>Some <strong>bold</strong> and <s>old</s> text.")
    assert '<th style="text-align:left">a</th>' in html
    assert '<td style="text-align:right">2</td>' in html
    assert '<pre><code class="language-python">x = 1\n</code></pre>' in html
    assert '<a href="#fn1" id="fnref1" rel="noopener">[1]</a>' in html
    assert '<li id="fn1" class="footnote-item">' in html
    assert render_markdown(html) == render_markdown(html)  # deterministic


def test_markdown_html_is_sanitized() -> None:
    html = render_markdown(
        'Hi <script>alert("x")</script>\n\n<div onclick="x()">box</div>\n\n'
        "[link](javascript:alert(1)) <iframe src=https://evil.test>frame</iframe>\n"
    )
    assert "<script" not in html and "onclick" not in html and "frame" not in html
    assert 'alert("x")' not in html
    assert "href" not in html  # markdown-it itself refuses javascript: links
    assert "<div>box</div>" in html
    assert (
        render_markdown('<a href="javascript:alert(1)">x</a>') == '<p><a rel="noopener">x</a></p>\n'
    )


def test_markdown_blank_is_empty() -> None:
    assert render_markdown("") == ""
    assert render_markdown("\n \n") == ""


def test_plain_prose_renders_as_the_parser_would() -> None:
    alphabet = [*"ab Z09,.;:?!'()/%$@+=-é\n", "\n\n", "1.", "2)", "a\n=", "\n+ b", "*", "&", "<"]
    generator = random.Random(3)
    for _ in range(3000):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(1, 20)))
        expected = sanitize_html(_markdown().render(text)) if text.strip() else ""
        assert render_markdown(text) == expected, repr(text)


# --- loading -----------------------------------------------------------------------------


def test_missing_folder_is_empty_content(tmp_path: Path) -> None:
    content = load_content(tmp_path / "nothing")
    assert content == Content()
    assert load_content(tmp_path / "nothing").digest == content.digest


def test_loads_every_kind(site: Path) -> None:
    content = load_content(site)
    tent = content.products["trail-tent"]
    assert tent.kind == "product" and tent.slug == "trail-tent"
    assert tent.source == "products/trail-tent.md"
    assert (
        tent.html
        == "<h2>Why we like it</h2>\n<p>It pitches in <strong>three minutes</strong>.</p>\n"
    )
    assert tent.meta["faq"] == [
        {"question": "Is it freestanding?", "answer": "Yes, with *two* poles.",
         "answer_html": "<p>Yes, with <em>two</em> poles.</p>\n"},
        {"question": "How heavy?", "answer": "1.9 kg.", "answer_html": "<p>1.9 kg.</p>\n"},
    ]  # fmt: skip
    # Attribute values are kept as written, not as YAML reads them (yes -> True, 1.90 -> 1.9).
    assert tent.meta["attributes"] == {
        "capacity": "2 people", "waterproof": "yes", "weight": "1.90 kg"
    }  # fmt: skip
    assert tent.meta["related"] == ["summit-stove", "river-pack"]
    assert tent.meta["replaced_by"] == "trail-tent-2"
    assert tent.lines["description"] == 2
    assert tent.lines["replaced_by"] == 6
    assert tent.lines["faq.0"] == 8
    assert tent.lines["faq.0.question"] == 8
    assert tent.lines["faq.1.answer"] == 11
    assert tent.lines["attributes.weight"] == 15
    assert tent.lines["related.1"] == 18

    soon = content.products["trail-tent-2"]
    assert soon.meta["status"] == "coming-soon"
    assert soon.meta["price"] == Decimal("349.90")
    assert str(soon.meta["price"]) == "349.90"
    assert soon.meta["available_from"] == dt.date(2025, 9, 1)
    assert content.coming_soon() == {"trail-tent-2"}

    tents = content.categories["tents"]
    assert tents.meta == {
        "title": "Tents", "description": "Shelters for every trip.", "types": ["Tent", "Shelter"],
        "tags": ["camping"], "products": ["trail-tent"], "image": "/assets/categories/tents.svg",
    }  # fmt: skip
    assert tents.lines["types.1"] == 4 and tents.lines["products.0"] == 8

    comparison = content.comparisons["trail-tent-vs-trail-tent-2"]
    assert comparison.meta["products"] == ["trail-tent", "trail-tent-2"]
    assert comparison.meta["attributes"] == ["price", "capacity"]
    assert content.guides["first-camp"].meta["products"] == ["trail-tent", "summit-stove"]
    assert content.pages["about"].meta == {"title": "About us", "description": "Who we are."}
    assert content.pages["about"].html == "<p>Hello.</p>\n"


def test_assets_map_to_urls(site: Path) -> None:
    content = load_content(site)
    assert content.assets == {
        "/assets/products/trail-tent.svg": site / "assets/products/trail-tent.svg"
    }


def test_digests_follow_file_bytes(site: Path) -> None:
    first = load_content(site)
    assert first.products["trail-tent"].digest == (
        __import__("hashlib").sha256((site / "products/trail-tent.md").read_bytes()).hexdigest()
    )
    assert load_content(site).digest == first.digest

    write(site, "pages/about.md", "---\ntitle: About\ndescription: Who we are.\n---\nHello.\n")
    second = load_content(site)
    assert second.digest != first.digest
    assert second.pages["about"].digest != first.pages["about"].digest
    assert second.products["trail-tent"].digest == first.products["trail-tent"].digest

    write(site, "assets/products/trail-tent.svg", "<svg></svg>")
    assert load_content(site).digest != second.digest


def test_bom_crlf_and_no_front_matter(tmp_path: Path) -> None:
    write(tmp_path, "products/a.md", b"\xef\xbb\xbf---\r\ntitle: A\r\n---\r\nBody\r\n")
    write(tmp_path, "products/b.md", "Only a body.\n")
    content = load_content(tmp_path)
    assert content.products["a"].meta == {"title": "A"}
    assert content.products["a"].html == "<p>Body</p>\n"
    assert content.products["b"].meta == {}
    assert content.products["b"].html == "<p>Only a body.</p>\n"


# --- errors ------------------------------------------------------------------------------


def test_error_format() -> None:
    error = ContentError("products/tent.md", 7, "unknown product 'x'")
    assert str(error) == "products/tent.md:7: unknown product 'x'"
    errors = ContentErrors([ContentError("b.md", 1, "two"), ContentError("a.md", 3, "one")])
    assert str(errors) == "a.md:3: one\nb.md:1: two"


def test_bad_yaml_reports_its_line(tmp_path: Path) -> None:
    write(tmp_path, "pages/a.md", "---\ntitle: A\ndescription: x: y\n---\n")
    write(tmp_path, "pages/b.md", "---\ntitle: A\ndescription: [x\n---\n")
    write(tmp_path, "pages/c.md", "---\ntitle: A\n  bad: indent\n---\n")
    write(tmp_path, "pages/d.md", "---\ntitle: A\ndescription: B\n")
    write(tmp_path, "pages/e.md", "---\n- a list\n---\n")
    assert errors_of(tmp_path) == [
        "pages/a.md:3: bad YAML: mapping values are not allowed in this context",
        "pages/b.md:4: bad YAML: did not find expected ',' or ']' "
        "(while parsing a flow sequence on line 3)",
        "pages/c.md:3: bad YAML: mapping values are not allowed in this context",
        "pages/d.md:1: front matter starts with '---' but has no closing '---' line",
        "pages/e.md:2: front matter must be 'field: value' lines",
    ]


def test_field_errors_name_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "products/tent.md",
        """---
title: 2024
colour: red
price: cheap
faq:
  - question: Warm?
  - just text
  - question: Q
    answer: A
    extra: x
related: river-pack
replaced_by: tent
description: ok
description: twice
---
""",
    )
    assert errors_of(tmp_path) == [
        "products/tent.md:2: 'title' must be text; put it in quotes",
        "products/tent.md:3: unknown field 'colour'; known: attributes, available_from, brand, "
        "category, demand_test, description, faq, image, image_alt, price, related, replaced_by, "
        "status, title",
        "products/tent.md:4: 'price' is only for coming-soon products (add status: coming-soon, "
        "or set it in the catalog)",
        "products/tent.md:4: 'price' must be a number of at least 0 like 49.90, not 'cheap'",
        "products/tent.md:6: 'faq.0' has no answer",
        "products/tent.md:7: 'faq.1' must have a question and an answer",
        "products/tent.md:10: unknown field 'extra' in a faq item; known: answer, question",
        "products/tent.md:11: 'related' must be a list ('- item' lines)",
        "products/tent.md:12: a product cannot be replaced by itself",
        "products/tent.md:14: 'description' is given twice",
    ]


def test_coming_soon_rules(tmp_path: Path) -> None:
    write(tmp_path, "categories/tents.md", "---\ntitle: T\ndescription: D\n---\n")
    write(
        tmp_path,
        "products/soon.md",
        """---
status: coming-soon
replaced_by: other
price: -1
available_from: next spring
category: boots
---
""",
    )
    write(tmp_path, "products/weird.md", "---\nstatus: sold-out\n---\n")
    assert errors_of(tmp_path) == [
        "products/soon.md:2: a coming-soon product needs a 'title'",
        "products/soon.md:3: a coming-soon product cannot be 'replaced_by' another",
        "products/soon.md:4: 'price' must be a number of at least 0 like 49.90, not '-1'",
        "products/soon.md:5: 'available_from' must be a date like 2025-09-01",
        "products/soon.md:6: unknown category 'boots'; categories: tents",
        "products/weird.md:2: 'status' can only be 'coming-soon' (leave it out for catalog "
        "products)",
    ]


def test_required_fields_and_kind_rules(tmp_path: Path) -> None:
    write(tmp_path, "categories/tents.md", "---\ntitle: Tents\ntypes: Tent\n---\n")
    write(tmp_path, "comparisons/a-vs-b.md", "---\ndescription: d\nproducts:\n  - a\n---\n")
    write(tmp_path, "comparisons/c-vs-d.md",
          "---\ndescription: d\nproducts:\n  - c\n  - c\n---\n")  # fmt: skip
    write(tmp_path, "comparisons/x.md", "---\ndescription: d\nproducts: [c, e, a]\n---\n")
    write(tmp_path, "guides/kit.md", "---\ntitle: Kit\ndescription: \nproducts: [Bad_One]\n---\n")
    write(tmp_path, "pages/admin.md", "---\ntitle: A\ndescription: B\n---\n")
    write(tmp_path, "pages/Big Page.md", "---\ntitle: A\ndescription: B\n---\n")
    assert errors_of(tmp_path) == [
        "categories/tents.md:1: missing required field 'description'",
        "categories/tents.md:3: 'types' must be a list ('- item' lines)",
        "comparisons/a-vs-b.md:3: a comparison compares exactly 2 products, not 1",
        "comparisons/c-vs-d.md:5: 'c' is listed twice in 'products'",
        "comparisons/x.md:3: a comparison compares exactly 2 products, not 3",
        "guides/kit.md:3: 'description' is empty",
        "guides/kit.md:4: 'Bad_One' is not a valid handle: use lowercase letters, digits, hyphens",
        "pages/Big Page.md:1: file name 'Big Page.md' is not a valid slug: use lowercase "
        "letters, digits and hyphens",
        "pages/admin.md:1: page slug 'admin' is reserved; choose another file name (reserved: "
        "admin, api, assets, categories, compare, guides, healthz, hooks, products, "
        "unsubscribe, waitlist)",
    ]


def test_comparison_pairs_are_unique(tmp_path: Path) -> None:
    write(tmp_path, "comparisons/a-vs-b.md", "---\ndescription: d\nproducts: [a, b]\n---\n")
    write(tmp_path, "comparisons/b-vs-a.md", "---\ndescription: d\nproducts: [c, d]\n---\n")
    write(tmp_path, "comparisons/best.md", "---\ndescription: d\nproducts:\n- b\n- a\n---\n")
    assert errors_of(tmp_path) == [
        "comparisons/b-vs-a.md:1: slug 'b-vs-a' is the redirect of comparisons/a-vs-b.md; "
        "rename one",
        "comparisons/b-vs-a.md:1: slug 'b-vs-a' is the redirect of comparisons/best.md; rename one",
        "comparisons/best.md:3: compares the same products as comparisons/a-vs-b.md; "
        "one comparison per pair",
    ]


def test_files_and_folders_that_are_not_content(tmp_path: Path) -> None:
    write(tmp_path, "products/notes.txt", "x")
    write(tmp_path, "products/old/tent.md", "x")
    write(tmp_path, "products/.tent.md.swp", "x")
    write(tmp_path, "products/tent.md~", "x")
    write(tmp_path, "product/tent.md", "x")
    write(tmp_path, "README.md", "notes for the team")
    write(tmp_path, "assets/My Photo.jpg", "x")
    assert errors_of(tmp_path) == [
        "assets/My Photo.jpg:1: rename it: asset names may use letters, digits, '.', '_' and "
        "'-' only",
        "product:1: unknown folder; content folders are: assets, categories, comparisons, "
        "guides, pages, products",
        "products/notes.txt:1: only <handle>.md files are read in products/",
        "products/old:1: folders are not read in products/",
    ]


def test_undecodable_file_reports_the_line(tmp_path: Path) -> None:
    write(tmp_path, "pages/a.md", b"---\ntitle: A\ndescription: caf\xe9\n---\n")
    assert errors_of(tmp_path) == [
        "pages/a.md:3: not UTF-8 text (byte 0xe9); save it as UTF-8",
    ]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "pages/a.md", "---\ntitle: A\n---\n")
    write(tmp_path, "guides/b.md", "---\ncolor: B\n---\n")
    assert len(errors_of(tmp_path)) == 4


# --- references --------------------------------------------------------------------------


def test_references_to_the_catalog(site: Path) -> None:
    content = load_content(site)
    catalog = {"trail-tent", "summit-stove", "river-pack"}
    assert check_references(content, catalog) == []

    errors = check_references(content, {"summit-stove"})
    assert [str(error) for error in errors] == [
        "categories/tents.md:8: unknown product 'trail-tent'",
        "comparisons/trail-tent-vs-trail-tent-2.md:3: unknown product 'trail-tent'",
        "guides/first-camp.md:4: unknown product 'trail-tent'",
        "products/trail-tent.md:1: no catalog product 'trail-tent'; add status: coming-soon "
        "to declare one",
        "products/trail-tent.md:18: unknown product 'river-pack'",
    ]


def test_reference_lines_and_comparison_rows(tmp_path: Path) -> None:
    write(tmp_path, "products/a.md", "---\nattributes:\n  capacity: 2\n---\n")
    write(tmp_path, "products/b.md", "---\nreplaced_by: gone\nrelated:\n  - a\n  - nope\n---\n")
    write(
        tmp_path,
        "comparisons/a-vs-b.md",
        """---
description: d
products:
  - a
  - b
attributes:
  - weight
  - capacity
  - colour
---
""",
    )
    content = load_content(tmp_path)
    assert [str(error) for error in check_references(content, {"a", "b"})] == [
        "comparisons/a-vs-b.md:8: row 'capacity' has no value for 'b'; add 'capacity: ...' "
        "under attributes in products/b.md",
        "comparisons/a-vs-b.md:9: row 'colour' has no value for 'a'; add 'colour: ...' "
        "under attributes in products/a.md",
        "comparisons/a-vs-b.md:9: row 'colour' has no value for 'b'; add 'colour: ...' "
        "under attributes in products/b.md",
        "products/b.md:2: unknown product 'gone'",
        "products/b.md:5: unknown product 'nope'",
    ]


def test_coming_soon_product_that_reaches_the_catalog_is_fine(site: Path) -> None:
    content = load_content(site)
    catalog = {"trail-tent", "trail-tent-2", "summit-stove", "river-pack"}
    assert check_references(content, catalog) == []
