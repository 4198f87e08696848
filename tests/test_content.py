"""Content: the sanitizer, Markdown rendering, front matter, validation and references."""

from __future__ import annotations

import pytest

from engine.content import sanitize_html


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
        "<ul><li>a</li></ul><ol start=\"3\"><li>b</li></ol><dl><dt>t</dt><dd>d</dd></dl>",
        '<a href="/products/tent/" title="Tent" rel="noopener">tent</a>',
        '<a href="https://example.com/" rel="noopener">x</a>',
        '<a href="mailto:hi@example.com" rel="noopener">mail</a>',
        '<img src="/assets/a.jpg" alt="A" width="10" height="20" loading="lazy">',
        "<blockquote><p>q</p></blockquote><hr><p>a<br>b</p><pre><code>x</code></pre>",
        "<figure><img src=\"a.png\" alt=\"\"><figcaption>cap</figcaption></figure>",
        "<table><caption>c</caption><thead><tr><th scope=\"col\">h</th></tr></thead>"
        "<tbody><tr><td colspan=\"2\">d</td></tr></tbody></table>",
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
    assert sanitize_html(
        '<table><tr><th style="text-align:right;color:red">a</th></tr></table>'
    ) == '<table><tbody><tr><th style="text-align:right">a</th></tr></tbody></table>'
    assert sanitize_html('<code class="language-py evil">x</code>') == (
        '<code class="language-py">x</code>'
    )
