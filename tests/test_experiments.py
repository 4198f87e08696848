"""Content tests: the incomplete beta function, verdicts, demand_test front matter, the CLI."""

from __future__ import annotations

import datetime as dt
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import insert

from engine.content import ContentErrors, load_content
from engine.db import Database, utcnow
from engine.experiments import (
    declared_tests,
    probability_above,
    regularized_incomplete_beta,
    verdict,
)
from engine.models import PageViewDaily, Signup


def exact_beta_cdf(x: Fraction, a: int, b: int) -> Fraction:
    """I_x(a, b) for whole a, b: P(Binomial(a + b - 1, x) >= a), in exact fractions."""
    n = a + b - 1
    return sum(
        (Fraction(math.comb(n, j)) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1)),
        Fraction(0),
    )


@pytest.mark.parametrize(
    ("x", "a", "b"),
    [("1/20", 1, 1), ("1/20", 6, 96), ("1/20", 31, 271), ("1/10", 3, 498), ("1/2", 40, 40),
     ("3/100", 16, 286), ("7/10", 120, 45), ("1/20", 60, 940), ("99/100", 2, 2)],
)  # fmt: skip
def test_incomplete_beta_matches_exact_binomial_sums(x: str, a: int, b: int) -> None:
    exact = float(exact_beta_cdf(Fraction(x), a, b))
    assert regularized_incomplete_beta(float(Fraction(x)), a, b) == pytest.approx(
        exact, rel=1e-10, abs=1e-14
    )


def test_incomplete_beta_closed_forms() -> None:
    assert regularized_incomplete_beta(0.3, 1, 5) == pytest.approx(1 - 0.7**5, rel=1e-12)
    assert regularized_incomplete_beta(0.3, 4, 1) == pytest.approx(0.3**4, rel=1e-12)
    assert regularized_incomplete_beta(0.5, 2.5, 2.5) == pytest.approx(0.5, rel=1e-12)
    # A published value: I_0.4(2, 3) = 0.5248.
    assert regularized_incomplete_beta(0.4, 2, 3) == pytest.approx(0.5248, rel=1e-12)
    assert regularized_incomplete_beta(0.0, 2, 3) == 0.0
    assert regularized_incomplete_beta(1.0, 2, 3) == 1.0
    # Large samples converge (a million visitors).
    value = regularized_incomplete_beta(0.05, 50_001, 950_001)
    assert 0.0 < value < 1.0


@pytest.mark.parametrize(
    ("signups", "visitors", "min_visitors", "expected"),
    [
        (30, 300, 100, "invest"),  # 10 % against a 5 % goal
        (2, 500, 100, "pivot"),  # 0.4 %
        (15, 300, 100, "keep testing"),  # 5 %: P about one half
        (10, 50, 100, "keep testing"),  # 20 %, but below the minimum sample
    ],
)
def test_verdicts(signups: int, visitors: int, min_visitors: int, expected: str) -> None:
    probability = probability_above(0.05, signups, visitors)
    assert verdict(probability, visitors, min_visitors) == expected


def test_probability_values() -> None:
    # No data: the uniform prior puts 95 % of its mass above 0.05.
    assert probability_above(0.05, 0, 0) == pytest.approx(0.95)
    assert probability_above(0.05, 15, 300) == pytest.approx(
        1 - float(exact_beta_cdf(Fraction(1, 20), 16, 286)), rel=1e-9
    )


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


COMING_SOON = """---
status: coming-soon
title: Summit Stove
demand_test:
  goal:
    metric: signups_per_visitor
    rate: 0.05
  start: {start}
---
A stove.
"""
GUIDE = """---
title: Stoves
description: Choosing a stove.
products: [summit-stove]
demand_test:
  products: [summit-stove]
  goal: {{rate: 0.2}}
  min_visitors: 50
  window_days: 14
  start: {start}
---
Body.
"""


def test_front_matter_defaults_and_pages(tmp_path: Path) -> None:
    write(tmp_path, "products/summit-stove.md", COMING_SOON.format(start="2026-11-01"))
    write(tmp_path, "guides/stoves.md", GUIDE.format(start="2026-11-10"))
    tests = {t.source: t for t in declared_tests(load_content(tmp_path))}
    product = tests["products/summit-stove.md"]
    assert product.products == ("summit-stove",)
    assert product.pages == ("/products/summit-stove/",)
    assert (product.goal, product.min_visitors, product.window_days) == (0.05, 100, 28)
    assert product.end == dt.date(2026, 11, 28)
    guide = tests["guides/stoves.md"]
    assert guide.pages == ("/guides/stoves/", "/products/summit-stove/")
    assert (guide.goal, guide.min_visitors, guide.window_days) == (0.2, 50, 14)


def test_front_matter_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "guides/bad.md",
        "---\ntitle: T\ndescription: D\ndemand_test:\n  goal:\n    metric: clicks\n"
        "    rate: 2\n  min_visitors: -1\n  colour: red\n---\n",
    )
    write(
        tmp_path,
        "products/tent.md",
        "---\ndemand_test:\n  goal: {rate: 0.1}\n  start: 2026-01-01\n---\n",
    )
    with pytest.raises(ContentErrors) as caught:
        load_content(tmp_path)
    assert [str(error) for error in caught.value.errors] == [
        "guides/bad.md:4: 'demand_test' needs 'start'",
        "guides/bad.md:6: unknown metric 'clicks'; known: signups_per_visitor",
        "guides/bad.md:7: 'demand_test.goal.rate' must be a number between 0 and 1",
        "guides/bad.md:8: 'demand_test.min_visitors' must be a whole number of at least 1",
        "guides/bad.md:9: unknown field 'colour' in demand_test; known: goal, min_visitors, "
        "products, start, window_days",
        "products/tent.md:2: 'demand_test' is only for coming-soon products (add status: "
        "coming-soon, or set it in the catalog)",
    ]


def test_cli_lists_verdicts(runner: FlaskCliRunner, db: Database, config: dict[str, str]) -> None:
    today = utcnow().date()
    start = today - dt.timedelta(days=10)
    content = Path(config["CONTENT_DIR"])
    write(content, "products/summit-stove.md", COMING_SOON.format(start=start.isoformat()))
    write(content, "guides/stoves.md", GUIDE.format(start=(today + dt.timedelta(days=1))))
    now = utcnow()
    with db.session() as session:
        session.execute(
            insert(PageViewDaily),
            [
                {"day": today - dt.timedelta(days=back), "path": "/products/summit-stove/",
                 "views": 40, "visitors": 30, "entries": 30}
                for back in range(1, 11)
            ],
        )  # fmt: skip
        for i in range(36):  # 36 signups / 300 visitors = 12 % against a 5 % goal
            when = now - dt.timedelta(days=1 + i % 5)
            session.add(
                Signup(product_handle="summit-stove", signed_up_at=when, pending_since=when,
                       consent_version="v1", consent_at=when)
            )  # fmt: skip
    result = runner.invoke(args=["experiments", "list", "--json"])
    assert result.exit_code == 0, result.output
    results = {r["source"]: r for r in json.loads(result.output)}
    stove = results["products/summit-stove.md"]
    assert (stove["visitors"], stove["signups"], stove["verdict"]) == (300, 36, "invest")
    assert stove["probability_above_goal"] > 0.99
    assert results["guides/stoves.md"]["status"] == "not started"
    assert results["guides/stoves.md"]["verdict"] == "keep testing"
    text = runner.invoke(args=["experiments", "list"]).output
    assert "products/summit-stove.md: INVEST - P(rate > 5.00%)" in text
    assert "36 signups / 300 visitors = 12.00%" in text
