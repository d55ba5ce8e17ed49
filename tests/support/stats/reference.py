#!/usr/bin/env python3
"""Independent reference for bakery's canary judge (src/canary/judge.rs, docs/canary.md).

Reads {"cases": [{"id", "config", "baseline", "canary"}]} on stdin and writes
{"results": [...]} on stdout: per case the score, the verdict, the group scores and per metric
the classification, the critical failure flag, the Hodges-Lehmann estimate, the interval and the
mean ratio. Values are lists of numbers; null is NaN, "inf"/"-inf" are infinities.

Nothing here shares code with bakery. The statistics come from numpy and scipy:

- the m*n pairwise differences canary - baseline are built and sorted with numpy
  (np.subtract.outer), the Hodges-Lehmann estimate is np.median of them;
- the interval's rank K uses scipy.stats.norm.ppf and the tie-corrected variance of the
  rank-sum statistic;
- and the interval is checked against the definition, by inverting scipy.stats.mannwhitneyu
  (method="asymptotic", use_continuity=True): every shift between two adjacent distinct
  differences is tested, and the accepted shifts must form exactly [D_(K+1), D_(mn-K)]
  (only around the two ends when there are many distinct differences). Any disagreement is
  reported in "duality_failures".

The judging and scoring rules are the issue's and Kayenta NetflixACAJudge's, written out again
from the docs.
"""

import json
import math
import sys
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from scipy import stats

TOLERANCE = 0.25
FULL_INVERSION_LIMIT = 80
# tests/canary_reference.rs generates values on this grid (counts are integers)
GRID = 0.001


def values(raw):
    out = []
    for v in raw:
        if v is None:
            out.append(math.nan)
        elif isinstance(v, str):
            out.append(float(v))
        else:
            out.append(float(v))
    return np.array(out, dtype=float)


def fences(x, factor):
    p = lambda q: np.percentile(x, q, method="linear")
    q1, q3 = p(25), p(75)
    iqr = q3 - q1
    return min(p(1), q1 - factor * iqr), max(p(99), q3 + factor * iqr)


def ties_sum(x):
    _, counts = np.unique(x, return_counts=True)
    return float(np.sum(counts.astype(float) ** 3 - counts))


def interval_rank(c, b, confidence):
    m, n = len(c), len(b)
    big_n = m + n
    tie = ties_sum(c) + ties_sum(b)
    var = m * n / 12.0 * ((big_n + 1) - (tie / (big_n * (big_n - 1)) if big_n > 1 else 0.0))
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    return math.floor(m * n / 2 - 0.5 - z * math.sqrt(max(var, 0.0)))


def accepted(c, b, delta, alpha):
    """Does the two-sided asymptotic rank-sum test keep the shift delta?"""
    p = stats.mannwhitneyu(c - delta, b, alternative="two-sided", method="asymptotic",
                           use_continuity=True).pvalue
    return p > alpha


def check_duality(c, b, d_sorted, lo, hi, alpha, failures, name):
    """The interval [lo, hi] (None = unbounded) must be the closure of the shifts scipy keeps.

    The generated data lie on a 0.001 grid, so two differences that are equal on paper may
    differ in the last bits of their floats; the shifts tested sit between differences that
    differ by more than GRID/2, where no rounding can create or hide a tie.
    """
    distinct = np.unique(np.round(d_sorted / GRID)) * GRID

    def mid(g):
        if g == 0:
            return distinct[0] - 1.0
        if g == len(distinct):
            return distinct[-1] + 1.0
        return (distinct[g - 1] + distinct[g]) / 2.0

    def near(a, b):
        if a is None or b is None:
            return a is None and b is None
        return abs(a - b) <= GRID / 100

    def lower_end(g):  # the closure of an accepted gap starts here
        return None if g == 0 else float(distinct[g - 1])

    def upper_end(g):
        return None if g == len(distinct) else float(distinct[g])

    if len(distinct) <= FULL_INVERSION_LIMIT:
        acc = [g for g in range(len(distinct) + 1) if accepted(c, b, mid(g), alpha)]
        if not acc:
            # No shift between differences is kept: the refused shifts below are refused for a
            # canary too high, those above for one too low, and the interval must be the one
            # difference where that turns (heavily tied data, e.g. one value a side).
            if lo is None or not near(lo, hi):
                failures.append(f"{name}: scipy keeps no gap, formula {(lo, hi)}")
                return
            k = int(np.argmin(np.abs(distinct - lo)))
            half = len(c) * len(b) / 2
            u = lambda delta: stats.mannwhitneyu(c - delta, b, method="asymptotic").statistic
            if not (u(mid(k)) > half and u(mid(k + 1)) < half):
                failures.append(f"{name}: scipy keeps no gap and {lo} is not where the test turns")
            return
        if acc != list(range(acc[0], acc[-1] + 1)):
            failures.append(f"{name}: accepted shifts are not an interval")
        want = (lower_end(acc[0]), upper_end(acc[-1]))
        if not (near(want[0], lo) and near(want[1], hi)):
            failures.append(f"{name}: test inversion gives {want}, formula {(lo, hi)}")
        return
    # Many differences: the gaps at each end (inside kept, outside refused).
    for end, inside_first in ((lo, True), (hi, False)):
        if end is None:
            g = 0 if inside_first else len(distinct)
            if not accepted(c, b, mid(g), alpha):
                failures.append(f"{name}: unbounded end but scipy refuses {mid(g)}")
            continue
        k = int(np.argmin(np.abs(distinct - end)))
        inside, outside = (k + 1, k) if inside_first else (k, k + 1)
        if not accepted(c, b, mid(inside), alpha):
            failures.append(f"{name}: scipy refuses {mid(inside)} just inside {end}")
        if accepted(c, b, mid(outside), alpha):
            failures.append(f"{name}: scipy keeps {mid(outside)} just outside {end}")


def classify(mc, confidence, braw, craw, failures):
    b = values(braw)
    c = values(craw)
    b = np.sort(b[np.isfinite(b)])
    c = np.sort(c[np.isfinite(c)])
    out = mc.get("outliers")
    if out and out.get("strategy") == "remove":
        factor = out.get("factor", 3.0)
        if len(b):
            lo, hi = fences(b, factor)
            b = b[(b >= lo) & (b <= hi)]
        if len(c):
            lo, hi = fences(c, factor)
            c = c[(c >= lo) & (c <= hi)]
    critical = mc.get("critical", False)
    must = mc.get("must-have-data", False)
    res = {"name": mc["name"], "estimate": None, "interval": None, "ratio": None,
           "critical_failure": False}
    if len(b) == 0 or len(c) == 0:
        res["classification"] = "NodataFailMetric" if (must and not critical) else "Nodata"
        res["critical_failure"] = critical
        return res
    mb, mcn = float(np.mean(b)), float(np.mean(c))
    ratio = None if (mb == 0.0 or mcn == 0.0) else mcn / mb
    res["ratio"] = ratio
    d = np.sort(np.subtract.outer(c, b).ravel())
    est = float(np.median(d))
    k = interval_rank(c, b, confidence)
    total = len(d)
    lo = float(d[k]) if k >= 0 else None
    hi = float(d[total - 1 - k]) if k >= 0 else None
    res["estimate"] = est
    res["interval"] = [lo, hi]
    check_duality(c, b, d, lo, hi, 1 - confidence, failures, mc["name"])
    if np.array_equal(b, c) or (b[0] == b[-1] and c[0] == c[-1] and b[0] == c[0]):
        res["classification"] = "Pass"
        return res
    eff = mc.get("effect-size", {})
    allowed_inc = eff.get("allowed-increase", 1.0)
    allowed_dec = eff.get("allowed-decrease", 1.0)
    crit_inc = eff.get("critical-increase", 1.0)
    crit_dec = eff.get("critical-decrease", 1.0)
    direction = mc.get("direction", "either")
    tol = TOLERANCE * abs(est)
    high = (direction in ("increase", "either") and lo is not None and lo > tol
            and (ratio is None or ratio >= allowed_inc))
    low = (direction in ("decrease", "either") and hi is not None and hi < -tol
           and (ratio is None or ratio <= allowed_dec))
    if high:
        res["classification"] = "High"
        res["critical_failure"] = critical and (ratio is None or ratio >= crit_inc)
    elif low:
        res["classification"] = "Low"
        res["critical_failure"] = critical and (ratio is None or ratio <= crit_dec)
    else:
        res["classification"] = "Pass"
    return res


def round2(x):
    return float(Decimal(repr(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def judge(case):
    cfg = case["config"]
    confidence = cfg.get("confidence", 0.98)
    th = cfg.get("thresholds", {})
    pass_t, marg_t = th.get("pass", 95.0), th.get("marginal", 75.0)
    failures = []
    metrics = [classify(m, confidence, case["baseline"].get(m["name"], []),
                        case["canary"].get(m["name"], []), failures)
               for m in cfg["metrics"]]
    group_of = {m["name"]: m.get("group", "default") for m in cfg["metrics"]}
    used = sorted(set(group_of.values()))
    weights = cfg.get("groups", {})
    free = [g for g in used if g not in weights]
    share = (100.0 - sum(weights.values())) / len(free) if free else 0.0
    groups = {}
    summary = 0.0
    for g in used:
        labels = [r["classification"] for r in metrics if group_of[r["name"]] == g]
        p = labels.count("Pass")
        denom = p + labels.count("High") + labels.count("Low") + labels.count("NodataFailMetric")
        s = 100.0 if denom == 0 else p / denom * 100.0
        w = weights.get(g, share)
        summary += s * (w / 100.0)
        groups[g] = round2(s)
    score = round2(summary)
    why = None
    nodata = sum(1 for r in metrics if r["classification"] in ("Nodata", "NodataFailMetric"))
    if any(r["critical_failure"] for r in metrics):
        score, why = 0.0, "critical"
    elif nodata * 2 >= len(metrics):
        score, why = 0.0, "nodata"
    verdict = "Pass" if score >= pass_t else "Marginal" if score >= marg_t else "Fail"
    return {"id": case["id"], "score": score, "classification": verdict, "why": why,
            "groups": groups, "metrics": metrics, "duality_failures": failures}


def main():
    doc = json.load(sys.stdin)
    results = [judge(c) for c in doc["cases"]]
    json.dump({"results": results, "scipy": __import__("scipy").__version__,
               "numpy": np.__version__}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
