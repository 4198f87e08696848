"""Content tests: a guide or coming-soon product that tests demand, and its verdict.

A test is declared in front matter (``demand_test``, see :mod:`engine.content`): the
products it tests, a goal (``signups_per_visitor`` at a rate), a minimum sample, a window.

**Numbers.** Visitors are the daily unique visitors of the test's pages summed over the
window (the coming-soon product's page; for a guide, the guide and the tested products'
pages), from roll-ups and today's raw views. Signups are new signups for the tested
products in the window (any page). Signups above visitors are capped at visitors.

**Rule.** With a Beta(1, 1) prior the signup rate's posterior is
Beta(1 + signups, 1 + visitors - signups); P = P(rate > goal) = 1 - I_goal(a, b), the
regularized incomplete beta function computed here exactly enough (continued fraction).

* below ``min_visitors``: **keep testing** (never a verdict on a small sample);
* P >= ``DEMAND_TEST_INVEST_PROBABILITY`` (0.95): **invest**;
* P <= ``DEMAND_TEST_PIVOT_PROBABILITY`` (0.05): **pivot**;
* otherwise **keep testing** (after the window ends too: the data do not decide).

Peeking: reading the verdict every day and stopping at the first "invest" inflates the
chance of a false call (five looks at a fixed-horizon 5 % test give about 14 %). The
minimum sample and the strict thresholds limit this; decide at the end of the window when
the cost of a wrong call is high.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.content import Content
from engine.demand import Window, product_path, traffic_by_page
from engine.models import Signup

VERDICTS = ("invest", "keep testing", "pivot")

_EPSILON = 1e-15
_TINY = 1e-300


def _beta_fraction(x: float, a: float, b: float) -> float:
    """Evaluate the continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    # Converges in O(sqrt(max(a, b))) steps; this bound covers millions of visitors.
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPSILON:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """Return I_x(a, b), the regularized incomplete beta function (the Beta CDF at x)."""
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be positive")
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast on the side of the mean; use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return min(1.0, front * _beta_fraction(x, a, b) / a)
    return max(0.0, 1.0 - front * _beta_fraction(1.0 - x, b, a) / b)


def probability_above(goal: float, successes: int, trials: int) -> float:
    """Return P(rate > goal) under the Beta(1 + successes, 1 + failures) posterior."""
    successes = max(0, min(successes, trials))
    return 1.0 - regularized_incomplete_beta(goal, 1.0 + successes, 1.0 + trials - successes)


def verdict(
    probability: float,
    visitors: int,
    min_visitors: int,
    *,
    invest_at: float = 0.95,
    pivot_at: float = 0.05,
) -> str:
    """Return "invest", "pivot" or "keep testing" by the module's stated rule."""
    if visitors < min_visitors:
        return "keep testing"
    if probability >= invest_at:
        return "invest"
    if probability <= pivot_at:
        return "pivot"
    return "keep testing"


@dataclass(frozen=True)
class DemandTest:
    """One declared test."""

    source: str  # the content file, e.g. "guides/choosing-a-backpacking-tent.md"
    pages: tuple[str, ...]
    products: tuple[str, ...]
    metric: str
    goal: float
    min_visitors: int
    window_days: int
    start: dt.date

    @property
    def end(self) -> dt.date:
        """Return the window's last day."""
        return self.start + dt.timedelta(days=self.window_days - 1)


def declared_tests(content: Content) -> list[DemandTest]:
    """Return the tests declared by coming-soon products and guides, by file."""
    tests: list[DemandTest] = []
    for handle, document in sorted(content.products.items()):
        spec = document.meta.get("demand_test")
        if spec:
            products = tuple(spec.get("products") or (handle,))
            pages = (product_path(handle), *(product_path(p) for p in products if p != handle))
            tests.append(_test(document.source, pages, products, spec))
    for slug, document in sorted(content.guides.items()):
        spec = document.meta.get("demand_test")
        if spec:
            products = tuple(spec.get("products") or document.meta.get("products") or ())
            pages = (f"/guides/{slug}/", *(product_path(p) for p in products))
            tests.append(_test(document.source, pages, products, spec))
    return tests


def _test(
    source: str, pages: tuple[str, ...], products: tuple[str, ...], spec: Mapping[str, Any]
) -> DemandTest:
    goal = spec["goal"]
    return DemandTest(
        source=source,
        pages=pages,
        products=products,
        metric=str(goal["metric"]),
        goal=float(goal["rate"]),
        min_visitors=int(spec["min_visitors"]),
        window_days=int(spec["window_days"]),
        start=spec["start"],
    )


@dataclass(frozen=True)
class TestResult:
    """A test's numbers and verdict."""

    test: DemandTest
    status: str  # "not started", "running", "ended"
    visitors: int
    signups: int
    rate: float | None
    probability: float
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """Return the result as plain values (for JSON)."""
        t = self.test
        return {
            "source": t.source,
            "products": list(t.products),
            "pages": list(t.pages),
            "metric": t.metric,
            "goal": t.goal,
            "min_visitors": t.min_visitors,
            "start": t.start.isoformat(),
            "end": t.end.isoformat(),
            "status": self.status,
            "visitors": self.visitors,
            "signups": self.signups,
            "rate": self.rate,
            "probability_above_goal": round(self.probability, 4),
            "verdict": self.verdict,
        }


def evaluate(
    session: Session, test: DemandTest, today: dt.date, settings: Mapping[str, Any]
) -> TestResult:
    """Return a test's numbers within its window (up to today) and its verdict."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(str(settings.get("TIMEZONE") or "UTC"))
    if today < test.start:
        probability = probability_above(test.goal, 0, 0)
        return TestResult(test, "not started", 0, 0, None, probability, "keep testing")
    end = min(test.end, today)
    window = Window(test.start, end, today, zone)
    traffic = traffic_by_page(session, window)
    visitors = sum(traffic[page].visitors for page in test.pages if page in traffic)
    first, after = window.utc_bounds()
    signups = 0
    if test.products:
        signups = int(
            session.scalar(
                select(func.count()).where(
                    Signup.product_handle.in_(test.products),
                    Signup.signed_up_at >= first,
                    Signup.signed_up_at < after,
                )
            )
            or 0
        )
    capped = min(signups, visitors)
    probability = probability_above(test.goal, capped, visitors)
    result = verdict(
        probability,
        visitors,
        test.min_visitors,
        invest_at=float(settings.get("DEMAND_TEST_INVEST_PROBABILITY", 0.95)),
        pivot_at=float(settings.get("DEMAND_TEST_PIVOT_PROBABILITY", 0.05)),
    )
    status = "ended" if today > test.end else "running"
    rate = round(signups / visitors, 4) if visitors else None
    return TestResult(test, status, visitors, signups, rate, probability, result)


def list_experiments(
    session: Session, content: Content, today: dt.date, settings: Mapping[str, Any]
) -> list[TestResult]:
    """Return every declared test with its verdict."""
    return [evaluate(session, test, today, settings) for test in declared_tests(content)]
