"""Device-side request features of a stale candidate list (docs/method.md, "Request").

Each feature is a named column computed from what the device holds. ``LIST_FEATURES`` need
only the list the cloud sent (the cloud's and the SRM's scores of its candidates, the fresh
history); ``CATALOGUE_FEATURES`` read the SRM's softmax over the whole item table, so they
exist only when the device holds that table (``device_catalogue: full``).

Most list features are relative (ranks, a softmax over the list): they say how the two models
order the list, not whether it is likely to hold the next item at all. The absolute ones say
that: the cloud sends log-probabilities over its whole catalogue, so the log of their summed
probability is the cloud's own estimate that its (stale) list holds the next item; and the
SRM's raw logits of the listed items (dot products with embeddings the device holds) measure
how strongly the device's current state points at the list, before any normalisation over it.

The drift features compare the SRM's view of the list from two histories the device holds: the
one the cloud built the list from (the stale history, ``CandidateList.history_len`` items long)
and the fresh one. A list goes out of date when the newest interactions move the user away from
it; the SRM's logits of the list falling, or its order of the list changing, between the two
histories says that with the user's own offset removed (a user whose lists always fit poorly
keeps that offset in both).
"""

import numpy as np
import torch

from recbole_lsc.device.fusion import ranks

# what the device holds: only the items it was sent (and its history), or the whole item table
DEVICE_CATALOGUES = ("candidates", "full")
LIST_FEATURES = (
    "rank_displacement", "spearman", "top10_overlap", "srm_max_prob", "srm_entropy", "llm_max_prob",
    "newest_in_list", "log_history_len", "llm_list_log_mass", "llm_top1_log_prob", "srm_list_logsumexp",
    "srm_max_logit",
)
# the SRM's view of the list from the history it was built from against the fresh one
DRIFT_FEATURES = ("srm_logsumexp_drift", "srm_order_stability", "stale_rank_displacement", "newest_surprise")
LIST_FEATURES = LIST_FEATURES + DRIFT_FEATURES
CATALOGUE_FEATURES = (
    "srm_mass_in_list", "srm_top1_in_list", "expected_metric_list", "expected_metric_own", "expected_regret",
    "own_topk_mass_missing", "best_in_list_gap",
)
FEATURE_NAMES = LIST_FEATURES + CATALOGUE_FEATURES


def feature_names(catalogue):
    """The features a device computes: with the item table (``catalogue``) or from its lists alone."""
    return FEATURE_NAMES if catalogue else LIST_FEATURES


def rank_displacement(srm_scores):
    """The paper's inconsistency: mean |LLM rank - SRM rank| / C over the cached candidates.

    Candidates are listed in the LLM's order, so the LLM rank of column j is j.
    """
    count = srm_scores.size(1)
    llm_ranks = torch.arange(count, dtype=torch.float64, device=srm_scores.device)
    return (ranks(srm_scores).double() - llm_ranks).abs().mean(1) / count


def expected_metric(probs, ranked_ids, metric_by_rank):
    """Expected per-user metric of a ranked list when the next item follows ``probs``.

    ``metric_by_rank[r]`` is the metric's value for a target at 0-based rank ``r``
    (e.g. ``1 / log2(r + 2)`` for NDCG within the cut-off, 0 beyond it).
    """
    return (probs.gather(1, ranked_ids) * metric_by_rank[: ranked_ids.size(1)]).sum(1)


def spearman(ranks_a, ranks_b):
    """Row-wise Spearman correlation of two ``[N, C]`` rank matrices (0 where a row is constant)."""
    centred_a = ranks_a - ranks_a.mean(1, keepdim=True)
    centred_b = ranks_b - ranks_b.mean(1, keepdim=True)
    return torch.nan_to_num((centred_a * centred_b).sum(1) / (centred_a.norm(dim=1) * centred_b.norm(dim=1)))


def list_features(llm_scores, srm_scores, candidate_ids, newest_items, history_len):
    """The ``LIST_FEATURES`` columns but the drift ones: agreement of the two models on the list,
    their confidence within it and in it (the absolute scores: ``llm_scores`` are the cloud's
    log-probabilities over its catalogue, ``srm_scores`` the SRM's raw logits), how much of the
    newest history the list already holds, and the history length."""
    count = srm_scores.size(1)
    srm_ranks = ranks(srm_scores).double()
    llm_ranks = torch.arange(count, dtype=torch.float64).expand_as(srm_ranks)
    srm_logits, llm_log_probs = srm_scores.double(), llm_scores.double()
    srm_prob = torch.softmax(srm_logits, dim=1)
    newest_mask = newest_items > 0
    newest_hits = (candidate_ids.unsqueeze(2) == newest_items.unsqueeze(1)).any(1) & newest_mask
    return {
        "rank_displacement": rank_displacement(srm_scores),
        "spearman": spearman(srm_ranks, llm_ranks),
        "top10_overlap": (srm_ranks[:, : min(10, count)] < min(10, count)).double().mean(1),
        "srm_max_prob": srm_prob.max(1).values,
        "srm_entropy": -(srm_prob * srm_prob.clamp(min=1e-12).log()).sum(1),
        "llm_max_prob": torch.softmax(llm_log_probs, dim=1).max(1).values,
        "newest_in_list": newest_hits.sum(1).double() / newest_mask.sum(1).clamp(min=1),
        "log_history_len": torch.log1p(history_len.double()),
        "llm_list_log_mass": torch.logsumexp(llm_log_probs, dim=1),
        "llm_top1_log_prob": llm_log_probs.max(1).values,
        "srm_list_logsumexp": torch.logsumexp(srm_logits, dim=1),
        "srm_max_logit": srm_logits.max(1).values,
    }


def drift_features(srm_scores, stale_history_srm, newest_items, newest_srm):
    """The ``DRIFT_FEATURES`` columns: how the SRM's view of the list moved from the stale
    history (``stale_history_srm``: its logits of the list from the history the cloud built the
    list from) to the fresh one (``srm_scores``), and how unexpected the newest interactions
    were from the stale history (``newest_srm``: its logits of ``newest_items``, 0 = padding),
    measured against the list: the list's log-sum-exp minus the mean newest logit (high: the
    user went where the list did not point; 0 when there is no newest item)."""
    fresh, then = srm_scores.double(), stale_history_srm.double()
    then_logsumexp = torch.logsumexp(then, dim=1)
    newest_mask = newest_items > 0
    newest_mean = (newest_srm.double() * newest_mask).sum(1) / newest_mask.sum(1).clamp(min=1)
    return {
        "srm_logsumexp_drift": torch.logsumexp(fresh, dim=1) - then_logsumexp,
        "srm_order_stability": spearman(ranks(fresh).double(), ranks(then).double()),
        "stale_rank_displacement": rank_displacement(then),
        "newest_surprise": torch.where(newest_mask.any(1), then_logsumexp - newest_mean, torch.zeros_like(newest_mean)),
    }


def catalogue_features(catalogue_scores, received_ids, shown_ids, metric_by_rank):
    """The ``CATALOGUE_FEATURES`` columns, from the SRM's softmax over the whole item table.

    ``received_ids`` is the cloud's stale list, ``shown_ids`` the ranked list the user is shown.
    The softmax is the device's belief about the next item: ``expected_regret`` is the metric
    the device expects to lose by showing ``shown_ids`` instead of its own top-C, i.e. what a
    fresh list could win back.
    """
    count = received_ids.size(1)
    catalogue = catalogue_scores.double().clone()
    catalogue[:, 0] = -torch.inf  # padding is not an item
    full_prob = torch.softmax(catalogue, dim=1)
    list_prob = full_prob.gather(1, received_ids)
    metric_by_rank = torch.as_tensor(metric_by_rank, dtype=torch.float64)
    expected_list = expected_metric(full_prob, shown_ids[:, :count], metric_by_rank)
    own_ids = full_prob.topk(min(count, full_prob.size(1) - 1), dim=1).indices
    expected_own = expected_metric(full_prob, own_ids, metric_by_rank)
    own_top = own_ids[:, : min(10, count)]
    own_missing = ~(own_top.unsqueeze(2) == received_ids.unsqueeze(1)).any(2)
    return {
        "srm_mass_in_list": list_prob.sum(1),
        "srm_top1_in_list": (~own_missing[:, 0]).double(),  # the device's own top-1 is in the list
        "expected_metric_list": expected_list,
        "expected_metric_own": expected_own,
        "expected_regret": expected_own - expected_list,
        "own_topk_mass_missing": (full_prob.gather(1, own_top) * own_missing).sum(1),
        "best_in_list_gap": torch.log(full_prob.max(1).values) - torch.log(list_prob.max(1).values.clamp(min=1e-300)),
    }


def feature_columns(columns):
    """Named columns as float64 numpy arrays (what policies read)."""
    return {name: column.cpu().numpy().astype(np.float64) for name, column in columns.items()}


def feature_matrix(columns, names):
    """``[N, len(names)]`` float64 matrix of named ``columns``, in the order of ``names``."""
    return np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in names])
