"""Per-user top-K metrics of candidate lists, and their RecBole-Evaluator averages.

With one target per user, RecBole's Hit@K, NDCG@K and MRR@K are functions of the target's
rank alone (Hit = [r < K], NDCG = 1 / log2(r + 2), MRR = 1 / (r + 1) within the top K).
Per-user values are what request policies, oracles and paired tests need; the averages are
also computed through RecBole's own Evaluator (``evaluate_lists``) and tests check both agree.
"""

import math

import numpy as np
import torch

from recbole_lsc.evaluation import FullRankingEvaluator


def per_user_metrics(ranks, metrics, topk):
    """``{"ndcg@10": array [N], ...}`` from 0-based target ranks (>= list length = miss)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in topk:
        inside = ranks < k
        for metric in metrics:
            name = metric.lower()
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


def mean_metrics(per_user):
    return {name: round(float(values.mean()), 6) if len(values) else math.nan for name, values in per_user.items()}


def scores_matrix(candidate_ids, scores, n_items):
    """Full-catalogue scores: the candidates keep their scores, every other item is -inf."""
    full = torch.full((candidate_ids.size(0), n_items), -torch.inf, dtype=torch.float64)
    full.scatter_(1, candidate_ids.long(), scores.double())
    return full


def evaluate_lists(config, candidate_ids, scores, targets, n_items):
    """RecBole Evaluator metrics of scored candidate lists over the full catalogue."""
    evaluator = FullRankingEvaluator(config)
    evaluator.add(scores_matrix(candidate_ids, scores, n_items), targets)
    return evaluator.result()
