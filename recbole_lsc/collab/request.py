"""Collaborative-decision request (LSC4REC.md section 5): which users should ask the cloud
for a fresh candidate list, within a budget of ``request_ratio`` (rho) requests per user.

Every policy turns device-side information into a priority per user; the users above a
threshold request. The threshold is calibrated on validation so that a share rho of the
validation users would request, then applied unchanged to test (the realised test ratio
is reported next to rho). The oracle ranks by the true test gain: a labelled ceiling.
"""

import numpy as np
import torch

from recbole_lsc.collab.fusion import ranks

REQUEST_POLICIES = ("never", "always", "random", "consistency", "top1_missing", "regret", "learned")
FEATURE_NAMES = (
    "rank_displacement", "spearman", "top10_overlap", "srm_max_prob", "srm_entropy",
    "llm_max_prob", "srm_mass_in_list", "srm_top1_in_list", "newest_in_list", "log_history_len",
    "expected_metric_list", "expected_metric_own", "expected_regret", "own_topk_mass_missing", "best_in_list_gap",
)


def _ranks(scores):
    return ranks(scores).double()


def rank_displacement(srm_scores):
    """The paper's inconsistency: mean |LLM rank - SRM rank| / C over the cached candidates.

    Candidates are listed in the LLM's order, so the LLM rank of column j is j.
    """
    count = srm_scores.size(1)
    llm_ranks = torch.arange(count, dtype=torch.float64, device=srm_scores.device)
    return ((_ranks(srm_scores) - llm_ranks).abs().mean(1) / count).cpu().numpy()


def expected_metric(probs, ranked_ids, metric_by_rank):
    """Expected per-user metric of a ranked list when the next item follows ``probs``.

    ``metric_by_rank[r]`` is the metric's value for a target at 0-based rank ``r``
    (e.g. ``1 / log2(r + 2)`` for NDCG within the cut-off, 0 beyond it).
    """
    return (probs.gather(1, ranked_ids) * metric_by_rank[: ranked_ids.size(1)]).sum(1)


def request_features(llm_scores, srm_scores, srm_full_scores, candidate_ids, newest_items, history_len,
                     list_scores, metric_by_rank):
    """Device-side features ``[N, len(FEATURE_NAMES)]`` of a stale candidate list.

    Args:
        llm_scores, srm_scores: ``[N, C]`` scores of the candidates (LLM order).
        srm_full_scores: ``[N, n_items]`` the SRM's scores of the whole catalogue it holds.
        candidate_ids: ``[N, C]`` item ids.
        newest_items: ``[N, g]`` the interactions the cloud has not seen (0 = none).
        history_len: ``[N]`` length of the fresh history.
        list_scores: ``[N, C]`` the final scores that order the stale list the user is shown.
        metric_by_rank: ``[C]`` the validation metric's value at each rank (see ``expected_metric``).

    The ``expected_*`` features read the SRM's softmax over the catalogue as the device's
    belief about the next item: ``expected_regret`` is the metric the device expects to lose
    by showing the stale list instead of its own top-C, i.e. what a fresh list could win back.
    """
    count = srm_scores.size(1)
    srm_ranks = _ranks(srm_scores)
    llm_ranks = torch.arange(count, dtype=torch.float64, device=srm_ranks.device).expand_as(srm_ranks)
    centred_srm = srm_ranks - srm_ranks.mean(1, keepdim=True)
    centred_llm = llm_ranks - llm_ranks.mean(1, keepdim=True)
    spearman = torch.nan_to_num((centred_srm * centred_llm).sum(1) / (centred_srm.norm(dim=1) * centred_llm.norm(dim=1)))
    top = min(10, count)
    top10_overlap = (srm_ranks[:, :top] < top).double().mean(1)
    srm_prob = torch.softmax(srm_scores.double(), dim=1)
    llm_prob = torch.softmax(llm_scores.double(), dim=1)
    catalogue = srm_full_scores.double().clone()
    catalogue[:, 0] = -torch.inf  # padding is not an item
    full_prob = torch.softmax(catalogue, dim=1)
    list_prob = full_prob.gather(1, candidate_ids)
    newest_mask = newest_items > 0
    newest_hits = (candidate_ids.unsqueeze(2) == newest_items.unsqueeze(1)).any(1) & newest_mask
    newest_in_list = newest_hits.sum(1).double() / newest_mask.sum(1).clamp(min=1)
    metric_by_rank = torch.as_tensor(metric_by_rank, dtype=torch.float64, device=full_prob.device)
    shown = candidate_ids.gather(1, torch.argsort(list_scores, dim=1, descending=True, stable=True))
    expected_list = expected_metric(full_prob, shown, metric_by_rank)
    own_ids = full_prob.topk(min(count, full_prob.size(1) - 1), dim=1).indices
    expected_own = expected_metric(full_prob, own_ids, metric_by_rank)
    own_top = own_ids[:, :top]
    own_missing = ~(own_top.unsqueeze(2) == candidate_ids.unsqueeze(1)).any(2)
    columns = [
        torch.from_numpy(rank_displacement(srm_scores)).to(srm_ranks.device),
        spearman,
        top10_overlap,
        srm_prob.max(1).values,
        -(srm_prob * srm_prob.clamp(min=1e-12).log()).sum(1),
        llm_prob.max(1).values,
        list_prob.sum(1),
        (~own_missing[:, 0]).double(),  # the device's own top-1 is in the list
        newest_in_list,
        torch.log1p(history_len.double()),
        expected_list,
        expected_own,
        expected_own - expected_list,
        (full_prob.gather(1, own_top) * own_missing).sum(1),
        torch.log(full_prob.max(1).values) - torch.log(list_prob.max(1).values.clamp(min=1e-300)),
    ]
    return torch.stack(columns, dim=1).cpu().numpy()


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


L2_GRID = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


def captured_gain(priority, gains, ratios):
    """Mean over ``ratios`` of the gain per user won by requesting the top-priority share."""
    return float(np.mean([gains[top_share(priority, ratio)].sum() / len(gains) for ratio in ratios]))


class LearnedRequestPolicy:
    """Ridge regression from device-side features to the gain of a fresh list.

    Fit on validation users (simulated requests, labels from the validation target); it
    never sees a test label. ``predict`` gives the expected gain used as request priority.
    Gains are sparse and noisy (one target per user), so the weights are shrunk towards a
    prior: the one-feature fit on column ``prior_feature`` (the expected regret: a strong
    penalty gives back that rule) or, without one, towards zero. With ``l2=None`` the penalty
    is chosen from ``L2_GRID`` by repeated k-fold cross-validation on those same validation
    users, scored by the gain the held-out users' top shares would capture at ``ratios``.
    """

    def __init__(self, l2=None, prior_feature=None, ratios=(0.05, 0.1, 0.2), folds=5, repeats=4, seed=0):
        self.l2, self.prior_feature = l2, prior_feature
        self.ratios, self.folds, self.repeats, self.seed = ratios, folds, repeats, seed
        self.mean = self.scale = self.weights = None
        self.cv_scores = {}

    @staticmethod
    def _design(features, mean, scale):
        """An intercept column and the standardised features."""
        return np.c_[np.ones(len(features)), (np.asarray(features, dtype=np.float64) - mean) / scale]

    def _normal_equations(self, features, gains):
        """Standardisation, ``X'X``, ``X'y`` and the prior weights: all a penalty needs."""
        mean, scale = features.mean(0), features.std(0) + 1e-9
        design = self._design(features, mean, scale)
        prior = np.zeros(design.shape[1])
        if self.prior_feature is not None:  # slope of the gain on the standardised prior feature alone
            column = design[:, 1 + self.prior_feature]
            prior[1 + self.prior_feature] = column @ (gains - gains.mean()) / max(column @ column, 1e-12)
        return mean, scale, design.T @ design, design.T @ gains, prior

    @staticmethod
    def _weights(gram, moment, prior, l2):
        penalty = l2 * np.eye(len(gram))
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        return np.linalg.solve(gram + penalty, moment + penalty @ prior)

    def select_l2(self, features, gains):
        from sklearn.model_selection import RepeatedKFold

        folds = RepeatedKFold(n_splits=self.folds, n_repeats=self.repeats, random_state=self.seed)
        scores = {l2: [] for l2 in L2_GRID}
        for fit_rows, held_out in folds.split(features):
            mean, scale, gram, moment, prior = self._normal_equations(features[fit_rows], gains[fit_rows])
            design = self._design(features[held_out], mean, scale)
            for l2 in L2_GRID:
                priority = design @ self._weights(gram, moment, prior, l2)
                scores[l2].append(captured_gain(priority, gains[held_out], self.ratios))
        self.cv_scores = {l2: float(np.mean(values)) for l2, values in scores.items()}
        best = max(self.cv_scores.values())
        return max(l2 for l2, score in self.cv_scores.items() if score >= best - 1e-12)  # ties: the stronger penalty

    def fit(self, features, gains):
        features = np.asarray(features, dtype=np.float64)
        gains = np.asarray(gains, dtype=np.float64)
        if self.l2 is None:
            self.l2 = self.select_l2(features, gains) if len(gains) >= 2 * self.folds else L2_GRID[-1]
        self.mean, self.scale, gram, moment, prior = self._normal_equations(features, gains)
        self.weights = self._weights(gram, moment, prior, self.l2)
        return self

    def predict(self, features):
        if self.weights is None:
            raise RuntimeError("LearnedRequestPolicy.predict called before fit")
        return self._design(features, self.mean, self.scale) @ self.weights


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
