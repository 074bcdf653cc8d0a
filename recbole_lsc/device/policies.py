"""Which users ask the cloud for a fresh candidate list (docs/method.md, "Request").

Within a budget of ``request_ratio`` (rho) requests per user, every policy turns device-side
features (:mod:`recbole_lsc.device.features`, named columns) into a priority per user; the users above a
threshold request. The threshold is calibrated on validation so that a share rho of the
validation users would request, then applied unchanged to test (the realised test ratio is
reported next to rho). The oracle ranks by the true gain: a labelled ceiling, not a policy.
"""

import numpy as np

REQUEST_POLICIES = ("never", "always", "random", "consistency", "top1_missing", "regret", "learned")
# the rule policies and the feature columns each reads
RULE_FEATURES = {
    "consistency": ("rank_displacement",),  # the paper's rule
    "top1_missing": ("srm_top1_in_list", "srm_mass_in_list"),
    "regret": ("expected_regret",),
}


def fixed_decision(policy, ratio):
    """True (everyone requests) or False (no one) when ``policy`` at ``ratio`` needs no
    priority: never / always, or a budget of 0 or 1; None for a thresholded decision."""
    if policy in ("never", "always") or ratio in (0, 1):
        return policy == "always" or (policy != "never" and ratio == 1)
    return None


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


def available_rules(names):
    """The rule policies whose features are among the columns ``names``."""
    return tuple(rule for rule, needs in RULE_FEATURES.items() if set(needs) <= set(names))


def rule_score(rule, columns):
    """A rule's request priority per user (higher = request first), without tie-breaking."""
    if rule == "consistency":  # the paper's inconsistency of the two models on the list
        return columns["rank_displacement"]
    if rule == "top1_missing":  # the device's own favourite is not in the stale list, then least mass in it
        return (1.0 - columns["srm_top1_in_list"]) - 1e-3 * columns["srm_mass_in_list"]
    if rule == "regret":  # the metric the device expects the stale list to lose against its own top-C
        return columns["expected_regret"]
    raise ValueError(f"'{rule}' is not a rule policy; rules: {', '.join(RULE_FEATURES)}")


def request_noise(seed, users, positions):
    """A uniform number in [0, 1) per (seed, user, history length), the same on every machine.

    It is the random policy's priority and the tie-breaking jitter of the others. A function of
    what one device knows (its user id and how long its history is), not of a draw over the
    whole population, so a device deciding alone makes the simulation's decision.
    (SplitMix64 finaliser over the three integers.)
    """
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
             + np.asarray(users, dtype=np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
             + np.asarray(positions, dtype=np.uint64) * np.uint64(0x94D049BB133111EB))
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def policy_priority(policy, columns, noise, learned=None):
    """Request priority per user (higher = request first) of a thresholded policy.

    ``noise`` (:func:`request_noise` of each user) is the random policy's priority; scaled by
    1e-9 it breaks the other policies' ties (rank displacement takes few distinct values), so a
    threshold never lets a block of tied users overshoot the budget.
    """
    if policy == "random":
        return np.asarray(noise, dtype=np.float64)
    if policy == "learned":
        base = learned.predict(columns)
    elif policy in RULE_FEATURES:
        base = rule_score(policy, columns)
    else:
        raise ValueError(f"policy '{policy}' has no priority; thresholded policies: random, "
                         f"{', '.join(RULE_FEATURES)}, learned")
    return base + 1e-9 * np.asarray(noise, dtype=np.float64)
