"""The statistics behind the study's verdicts: paired differences over seeds.

Every comparison of two students is paired by seed: the student of the LS
teacher and the student of the no-LS teacher that share a seed share their
initialisation, data order and augmentations, so their difference removes most
of the seed-to-seed noise. Over the seeds we take the mean of the differences
and a Student-t interval; the tests below read the verdict from that interval:

* **non-inferiority** ("as good or better"): *reproduced* when the one-sided 95%
  lower bound lies above ``-margin``; *contradicted* when the one-sided 95% upper
  bound lies below ``-margin`` (worse by more than the margin); otherwise
  *inconclusive*.
* **superiority** ("higher"): *reproduced* when the two-sided 95% interval lies
  above 0, *contradicted* when it lies below 0, *equivalent within ±m* when both
  one-sided 95% bounds (the 90% interval: TOST) lie inside ``(-m, m)``, otherwise
  *inconclusive*.

Absence of a significant difference is never read as equivalence.

The Student-t quantile is computed here (the regularised incomplete beta
function by Lentz's continued fraction, inverted by bisection), so the study
does not need scipy.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested by this study"


def equivalent(margin: float) -> str:
    return f"equivalent within ±{margin:g}"


def is_equivalent(verdict: str) -> bool:
    return verdict.startswith("equivalent within")


# ------------------------------------------------------------------ Student t
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (0 < q < 1)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------ intervals
@dataclass
class Interval:
    """Mean of paired differences over n seeds with its Student-t bounds (None when n < 2)."""

    n: int
    mean: float
    sd: Optional[float]
    lo95: Optional[float]  # two-sided 95%
    hi95: Optional[float]
    lo_one: Optional[float]  # one-sided 95% lower bound (= lower end of the 90% interval)
    hi_one: Optional[float]  # one-sided 95% upper bound

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and self.sd is not None

    def text(self, nd: int = 2) -> str:
        if not self.has_interval:
            return f"{self.mean:+.{nd}f} (n = {self.n}: no interval)"
        return f"{self.mean:+.{nd}f}, 95% CI [{self.lo95:+.{nd}f}, {self.hi95:+.{nd}f}], n = {self.n}"


def paired_diffs(a: Sequence[float], b: Sequence[float]) -> List[float]:
    if len(a) != len(b):
        raise ValueError(f"paired values of unequal length: {len(a)} and {len(b)}")
    return [float(x) - float(y) for x, y in zip(a, b)]


def mean_sd(xs: Sequence[float]):
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n >= 2 else None
    return m, sd


def t_interval(diffs: Sequence[float]) -> Interval:
    """Mean of ``diffs`` with the two-sided 95% and one-sided 95% Student-t bounds."""
    n = len(diffs)
    m, sd = mean_sd(diffs)
    if n < 2:
        return Interval(n, m, None, None, None, None, None)
    se = sd / math.sqrt(n)
    t2, t1 = t_ppf(0.975, n - 1), t_ppf(0.95, n - 1)
    return Interval(n, m, sd, m - t2 * se, m + t2 * se, m - t1 * se, m + t1 * se)


# ------------------------------------------------------------------ tests
def noninferiority(iv: Interval, margin: float) -> str:
    """"As good or better" within ``margin``: see the module docstring."""
    if not iv.has_interval:
        return INCONCLUSIVE
    if iv.lo_one > -margin:
        return REPRODUCED
    if iv.hi_one < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def superiority(iv: Interval, margin: float) -> str:
    """"Higher": the 95% interval excludes 0; TOST equivalence within ``margin`` otherwise."""
    if not iv.has_interval:
        return INCONCLUSIVE
    if iv.lo95 > 0:
        return REPRODUCED
    if iv.hi95 < 0:
        return CONTRADICTED
    if iv.lo_one > -margin and iv.hi_one < margin:
        return equivalent(margin)
    return INCONCLUSIVE


def flip(verdict: str) -> str:
    """The verdict of the opposite claim (reproduced <-> contradicted)."""
    return {REPRODUCED: CONTRADICTED, CONTRADICTED: REPRODUCED}.get(verdict, verdict)


def seeds_needed(iv: Interval, bound: float, one_sided: bool = True, max_n: int = 500) -> Optional[int]:
    """Seeds for the interval around the measured mean, at the measured sd, to clear ``bound``
    (lower bound above it when the mean is above it, upper bound below it otherwise);
    None when the mean sits on the bound or no sd was measured."""
    if not iv.has_interval or iv.sd == 0 or iv.mean == bound:
        return None
    return seeds_for_half_width(iv.sd, abs(iv.mean - bound), one_sided, max_n)


def seeds_for_half_width(sd: float, half_width: float, one_sided: bool = False, max_n: int = 500) -> Optional[int]:
    """The fewest seeds n whose 95% Student-t interval of a mean at standard deviation ``sd`` is
    narrower than ``half_width`` on each side (t(0.975, n-1) * sd / sqrt(n); one-sided: t(0.95)),
    or None beyond ``max_n``."""
    for n in range(2, max_n + 1):
        if t_ppf(0.95 if one_sided else 0.975, n - 1) * sd / math.sqrt(n) < half_width:
            return n
    return None


def sign_test(k: int, n: int) -> float:
    """One-sided exact binomial p-value of k or more successes out of n at p = 1/2."""
    if n <= 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0 ** n
