"""Aggregation over seeds and paired significance tests over users."""

import numpy as np
from scipy import stats


def paired_test(ours, theirs):
    """Paired tests of per-user metrics: ``{"mean_diff", "t_p", "wilcoxon_p"}``.

    ``t_p`` is the two-sided paired t-test, ``wilcoxon_p`` the two-sided Wilcoxon signed-rank
    test (users with equal values dropped); p = 1.0 when the two are identical.
    """
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"paired test needs the same users on both sides, got {ours.shape} and {theirs.shape}")
    diff = ours - theirs
    if len(diff) < 2:  # no test on a single user
        return {"mean_diff": round(float(diff.mean()), 6) if len(diff) else 0.0, "t_p": float("nan"),
                "wilcoxon_p": float("nan")}
    if not np.any(diff):
        return {"mean_diff": 0.0, "t_p": 1.0, "wilcoxon_p": 1.0}
    # a constant non-zero difference is certain (the t statistic would divide by ~0)
    t_p = float(stats.ttest_rel(ours, theirs).pvalue) if np.ptp(diff) > 1e-12 else 0.0
    return {
        "mean_diff": round(float(diff.mean()), 6),
        "t_p": t_p,
        "wilcoxon_p": float(stats.wilcoxon(ours, theirs).pvalue),
    }


def sample_std(values):
    """Sample standard deviation (ddof = 1) of ``values``; 0.0 for a single value (not NaN)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.std(values, ddof=1)) if values.size > 1 else 0.0


def mean_std(dicts):
    """Per-key mean and sample standard deviation (ddof = 1) of a list of ``{name: number}`` dicts.

    This is the spread over seeds reported everywhere as "± std": the sample std, which is
    0.0 when there is a single dict (one seed). Both are rounded to 6 decimals.
    """
    keys = dicts[0].keys()
    mean = {key: round(float(np.mean([d[key] for d in dicts])), 6) for key in keys}
    std = {key: round(sample_std([d[key] for d in dicts]), 6) for key in keys}
    return mean, std
