"""Collaborative inference and request decisions for one device SRM state.

Fusion weights, request thresholds and the learned policy are fit on validation users and
applied unchanged to test users. The target ranks of every (phase, list age) are computed
once here; rows, per-user vectors and request-curve points all derive from them.
"""

from dataclasses import dataclass

import numpy as np
import torch

from recbole_lsc.device.features import FEATURE_NAMES, catalogue_features, feature_matrix, list_features
from recbole_lsc.device.fusion import ALPHA_GRID, fuse
from recbole_lsc.device.learned import LearnedRequestPolicy
from recbole_lsc.device.policies import calibrate_threshold, policy_priority, top_share
from recbole_lsc.evaluation.metrics import mean_metrics, metric_by_rank, metric_values, per_user_metrics, summary
from recbole_lsc.evaluation.ranks import list_ranks
from recbole_lsc.results import result_row

CURVE_POLICIES = ("random", "consistency", "top1_missing", "regret", "learned", "oracle")
AGES = ("stale", "fresh")


@dataclass
class PhaseLists:
    """What the device holds for one phase's users: both candidate lists, scored by the SRM."""

    targets: torch.Tensor
    stale: object  # CandidateList
    fresh: object  # CandidateList
    stale_srm: torch.Tensor
    fresh_srm: torch.Tensor
    catalogue: torch.Tensor  # the SRM's scores of the whole item table
    newest: torch.Tensor  # the interactions the cloud has not seen (0 = none)
    history_len: torch.Tensor


def phase_lists(srm, lists, protocol, phase, config):
    """The phase's stale and fresh lists (from ``lists``) scored by ``srm`` with fresh histories."""
    samples = protocol.samples(phase)
    stale, fresh = lists.get(phase, "stale"), lists.get(phase, "fresh")
    interaction = protocol.interaction(samples, "fresh", srm.max_len, srm.fields)
    catalogue = srm.score_catalogue(interaction, config["eval_batch_size"], config["device"])
    newest, _ = protocol.history(samples, "fresh", protocol.cloud_lag)
    return PhaseLists(torch.from_numpy(protocol.targets(samples)), stale, fresh,
                      catalogue.gather(1, stale.item_ids), catalogue.gather(1, fresh.item_ids), catalogue,
                      torch.from_numpy(newest), torch.from_numpy(samples.position))


def tune_alpha(ids, llm, srm, targets, config):
    """``fusion_alpha`` if fixed, else the grid value with the best validation metric (first on ties)."""
    if config["fusion_alpha"] != "auto":
        return float(config["fusion_alpha"])
    return max(ALPHA_GRID, key=lambda alpha: metric_values(
        list_ranks(ids, fuse(llm, srm, alpha, config["fusion_norm"]), targets), config).mean())


def request_feature_matrix(lists, shown_scores, config):
    """Device-side features ``[N, len(FEATURE_NAMES)]`` of the stale lists as shown (ordered by ``shown_scores``)."""
    stale = lists.stale
    shown_order = torch.argsort(shown_scores, dim=1, descending=True, stable=True)
    columns = {
        **list_features(stale.scores, lists.stale_srm, stale.item_ids, lists.newest, lists.history_len),
        **catalogue_features(lists.catalogue, stale.item_ids, shown_order, metric_by_rank(config, stale.size)),
    }
    return feature_matrix(columns, FEATURE_NAMES)


class Collaboration:
    """Fusion and request decisions for one SRM state, tuned on validation, scored on test."""

    def __init__(self, config, valid, test):
        self.config = config
        self.phases = {"valid": valid, "test": test}
        self.alpha = {age: tune_alpha(getattr(valid, age).item_ids, getattr(valid, age).scores,
                                      getattr(valid, f"{age}_srm"), valid.targets, config) for age in AGES}
        self.fused = {phase: {age: fuse(getattr(lists, age).scores, getattr(lists, f"{age}_srm"), self.alpha[age],
                                        config["fusion_norm"]) for age in AGES}
                      for phase, lists in self.phases.items()}
        self.ranks = {phase: {age: list_ranks(getattr(lists, age).item_ids, self.fused[phase][age], lists.targets)
                              for age in AGES} for phase, lists in self.phases.items()}
        self.gain = {phase: metric_values(ranks["fresh"], config) - metric_values(ranks["stale"], config)
                     for phase, ranks in self.ranks.items()}
        self.features = {phase: request_feature_matrix(lists, self.fused[phase]["stale"], config)
                         for phase, lists in self.phases.items()}
        self.learned = LearnedRequestPolicy(prior_feature=FEATURE_NAMES.index("expected_regret")).fit(
            self.features["valid"], self.gain["valid"])

    @property
    def alpha_stale(self):
        return self.alpha["stale"]

    @property
    def alpha_fresh(self):
        return self.alpha["fresh"]

    def requests(self, policy, ratio, seed):
        """``{phase: mask}`` of requesting users for ``policy`` at ``ratio``."""
        if policy == "oracle":  # labelled ceiling: the users who gain most (and gain at all)
            return {phase: top_share(gain, ratio) & (gain > 0) for phase, gain in self.gain.items()}
        if policy in ("never", "always") or ratio in (0, 1):
            everyone = policy == "always" or (policy != "never" and ratio == 1)
            return {phase: np.full(len(gain), everyone) for phase, gain in self.gain.items()}
        rng = np.random.default_rng(seed)
        priority = {phase: policy_priority(policy, self.features[phase], rng, self.learned) for phase in ("valid", "test")}
        tau = calibrate_threshold(priority["valid"], ratio)
        return {phase: values >= tau for phase, values in priority.items()}

    def final_ranks(self, phase, mask):
        """Target ranks in the lists the users end with: fresh where they requested, else stale."""
        ranks = self.ranks[phase]
        return torch.where(torch.from_numpy(mask), ranks["fresh"], ranks["stale"])

    def row(self, name, role, policy, ratio, seed):
        """The results row of ``policy`` at ``ratio`` and its per-user test ``valid_metric``."""
        masks = self.requests(policy, ratio, seed)
        ranks = {phase: self.final_ranks(phase, mask) for phase, mask in masks.items()}
        row = result_row(name, role, summary(ranks["valid"], self.config), summary(ranks["test"], self.config))
        row.update(policy=policy, rho=ratio, realized=round(float(masks["test"].mean()), 6),
                   alpha_stale=self.alpha["stale"], alpha_fresh=self.alpha["fresh"])
        return row, metric_values(ranks["test"], self.config)

    def curve(self, ratios, seed):
        """Curve points, and each point's per-user test ``valid_metric`` keyed ``(policy, rho)``."""
        points, per_user = [], {}
        metrics, topk = self.config["metrics"], self.config["topk"]
        for policy in CURVE_POLICIES:
            for ratio in ratios:
                mask = self.requests(policy, ratio, seed)["test"]
                ranks = self.final_ranks("test", mask)
                points.append({"policy": policy, "rho": ratio, "realized": round(float(mask.mean()), 6),
                               "test": mean_metrics(per_user_metrics(ranks, metrics, topk))})
                per_user[(policy, ratio)] = metric_values(ranks, self.config)
        return points, per_user
