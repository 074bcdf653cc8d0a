"""Runs over several seeds: means and sample stds (ddof = 1) of rows and curves, paired tests over users."""

import copy

import numpy as np

from recbole_lsc.evaluation.stats import mean_std, paired_test
from recbole_lsc.results import parse_setting

SINGLE_MODELS = ("srm", "srm_rerank", "llm_stale", "llm_fresh")


def with_seed(config, seed):
    """A copy of ``config`` with ``seed`` (the caller's config is never changed)."""
    seeded = copy.deepcopy(config)
    seeded["seed"] = seed
    return seeded


PER_SEED_KEYS = ("realized", "alpha_stale", "alpha_fresh")  # what each seed chose or realised, kept per seed


def aggregate_rows(runs):
    """Rows with mean and sample std (ddof = 1) over seeds of every metric, the mean realised
    ratio, and ``per_seed``: each seed's realised ratio and tuned alphas (not the first seed's)."""
    if len(runs) == 1:
        return runs[0]["rows"]
    rows = []
    for index, first in enumerate(runs[0]["rows"]):
        row = copy.deepcopy(first)
        for split in ("valid", "test"):
            row[split], row[f"{split}_std"] = mean_std([run["rows"][index][split] for run in runs])
        per_seed = {key: [run["rows"][index][key] for run in runs] for key in PER_SEED_KEYS if key in row}
        if per_seed:
            row["per_seed"] = per_seed
        if "realized" in row:
            row["realized"] = round(float(np.mean(per_seed["realized"])), 6)
        for key in ("alpha_stale", "alpha_fresh"):
            row.pop(key, None)  # a seed's choice is not the run's: see per_seed
        rows.append(row)
    return rows


def aggregate_curve(runs):
    """Request-curve points with mean and sample std (ddof = 1) over seeds of the test metrics, and the
    mean realised request ratio over seeds (``realized``; below ``rho`` for the oracle)."""
    if len(runs) == 1:
        return runs[0]["curve"]
    points = []
    for index, first in enumerate(runs[0]["curve"]):
        mean, std = mean_std([run["curve"][index]["test"] for run in runs])
        realized = float(np.mean([run["curve"][index]["realized"] for run in runs]))
        points.append({"device_catalogue": first.get("device_catalogue"), "retrain_scope": first.get("retrain_scope"),
                       "policy": first["policy"], "rho": first["rho"], "realized": round(realized, 6), "test": mean,
                       "test_std": std, "realized_per_seed": [run["curve"][index]["realized"] for run in runs]})
    return points


def mean_per_user(runs, role):
    """Per-user test ``valid_metric`` of ``role``, averaged over seeds."""
    return np.mean([run["per_user"][role] for run in runs], axis=0)


def model_tests(runs, mode):
    """LSC4Rec with ``device_catalogue`` = ``mode`` against each single model: paired tests over test users."""
    ours = mean_per_user(runs, f"lsc4rec/{mode}")
    return {role: paired_test(ours, mean_per_user(runs, role)) for role in SINGLE_MODELS}


def policy_tests(runs, ratios):
    """The learned policy against random and every rule policy the device can run, per
    ``device_catalogue`` and ratio in (0, 1): paired tests over test users (per-user metric
    averaged over seeds)."""
    tests = []
    curves = runs[0]["curve_per_user"]
    for mode in dict.fromkeys(key[0] for key in curves):
        others = [policy for policy in dict.fromkeys(key[1] for key in curves if key[0] == mode)
                  if policy not in ("learned", "oracle")]
        for ratio in ratios:
            if ratio in (0, 1):
                continue
            mean = {policy: np.mean([run["curve_per_user"][(mode, policy, ratio)] for run in runs], axis=0)
                    for policy in ("learned", *others)}
            catalogue, scope = parse_setting(mode)
            tests += [{"device_catalogue": catalogue, "retrain_scope": scope, "rho": ratio, "policy": "learned",
                       "versus": other, **paired_test(mean["learned"], mean[other])} for other in others]
    return tests
