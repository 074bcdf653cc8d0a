"""Per-user top-K metrics from target ranks, and the averages a results row reports.

With one target per user, RecBole's metrics are functions of the target's 0-based rank r:
Hit@K = Recall@K = [r < K], NDCG@K = 1 / log2(r + 2), MRR@K = 1 / (r + 1) and
Precision@K = [r < K] / K, each 0 beyond K. ``summary`` averages and rounds them exactly as
RecBole's Evaluator does (``metric_decimal_place``), so a row computed here equals the row
RecBole would report for the same scores.
"""

import math

import numpy as np


def per_user_metrics(ranks, metrics, topk):
    """``{"ndcg@10": array [N], ...}`` from 0-based target ranks (>= list length = miss),
    keyed in RecBole's order (metric, then K)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for metric in metrics:
        name = metric.lower()
        for k in topk:
            inside = ranks < k
            if name in ("hit", "recall"):
                values = inside.astype(np.float64)
            elif name == "ndcg":
                values = np.where(inside, 1.0 / np.log2(ranks + 2.0), 0.0)
            elif name == "mrr":
                values = np.where(inside, 1.0 / (ranks + 1.0), 0.0)
            elif name == "precision":
                values = inside / k
            else:
                raise ValueError(f"metric '{metric}' has no per-user form here; use Hit, Recall, NDCG, MRR or Precision")
            out[f"{name}@{k}"] = values
    return out


def mean_metrics(per_user, decimals=6):
    """Means of per-user metrics (NaN for no users), rounded to ``decimals``."""
    return {name: round(float(values.mean()), decimals) if len(values) else math.nan
            for name, values in per_user.items()}


def summary(ranks, config):
    """The metrics of a results row: RecBole's ``metrics`` x ``topk``, rounded as its Evaluator rounds."""
    return mean_metrics(per_user_metrics(ranks, config["metrics"], config["topk"]), config["metric_decimal_place"])


def metric_values(ranks, config):
    """Per-user values of ``valid_metric`` (what tuning, request labels and paired tests use)."""
    name, k = valid_metric(config)
    return per_user_metrics(ranks, [name], [k])[f"{name}@{k}"]


def valid_metric(config):
    """``("ndcg", 10)`` from ``valid_metric: NDCG@10``."""
    name, k = config["valid_metric"].lower().split("@")
    return name, int(k)


def metric_by_rank(config, size):
    """``valid_metric``'s value for a target at each rank ``0..size-1``."""
    return metric_values(np.arange(size), config)
