"""Which users ask the cloud for a fresh candidate list (docs/method.md, "Request").

Within a budget of ``request_ratio`` (rho) requests per user, every policy turns device-side
features (:mod:`recbole_lsc.device.features`) into a priority per user; the users above a
threshold request. The threshold is calibrated on validation so that a share rho of the
validation users would request, then applied unchanged to test (the realised test ratio is
reported next to rho). The oracle ranks by the true gain: a labelled ceiling, not a policy.
"""

import numpy as np

from recbole_lsc.device.features import FEATURE_NAMES

REQUEST_POLICIES = ("never", "always", "random", "consistency", "top1_missing", "regret", "learned")


def top_share(priority, ratio):
    """Boolean mask of the ``round(ratio * N)`` users with the highest priority (stable)."""
    count = len(priority)
    chosen = int(round(ratio * count))
    mask = np.zeros(count, dtype=bool)
    if chosen:
        mask[np.argsort(-np.asarray(priority, dtype=np.float64), kind="stable")[:chosen]] = True
    return mask


def calibrate_threshold(valid_priority, ratio):
    """tau such that a share ``ratio`` of validation users has priority >= tau."""
    if ratio <= 0:
        return np.inf
    if ratio >= 1:
        return -np.inf
    ordered = np.sort(np.asarray(valid_priority, dtype=np.float64))[::-1]
    return ordered[max(int(round(ratio * len(ordered))) - 1, 0)]


def policy_priority(policy, features, rng, learned=None):
    """Request priority per user (higher = request first) of a thresholded policy.

    A tiny seeded jitter breaks ties (rank displacement takes few distinct values), so a
    threshold never lets a block of tied users overshoot the budget.
    """
    count = len(features)
    if policy == "random":
        return rng.random(count)
    if policy == "consistency":
        base = features[:, FEATURE_NAMES.index("rank_displacement")]
    elif policy == "top1_missing":  # a rule: the device's own favourite is not in the stale list
        missing = 1.0 - features[:, FEATURE_NAMES.index("srm_top1_in_list")]
        base = missing - 1e-3 * features[:, FEATURE_NAMES.index("srm_mass_in_list")]  # then: least mass in the list
    elif policy == "regret":  # a rule: the metric the device expects the stale list to lose against its own top-C
        base = features[:, FEATURE_NAMES.index("expected_regret")]
    elif policy == "learned":
        base = learned.predict(features)
    else:
        raise ValueError(f"policy '{policy}' has no priority; thresholded policies: random, consistency, top1_missing, "
                         "regret, learned")
    return base + 1e-9 * rng.random(count)
