"""Collaborative inference and request decisions for one device SRM state and one
``device_catalogue`` setting (docs/method.md, "The boundary").

With ``candidates`` the device holds only the items it was sent: it scores the cloud's lists
with candidate-only SRM scores and computes list features. With ``full`` it holds the item
table: it fuses over the cloud's list plus its own top-C and may read catalogue features.
Fusion weights, request thresholds and the learned policy are fit on validation users (and
fresh-window simulated requests, when given) and applied unchanged to test users. Target ranks
of every (phase, list age) are computed once; rows, per-user vectors and curve points derive
from them.
"""

from dataclasses import dataclass

import numpy as np
import torch

from recbole_lsc.device.features import feature_names
from recbole_lsc.device.fusion import ALPHA_GRID, fuse
from recbole_lsc.device.inference import StaleHistoryScores, candidate_set, request_columns, shown_order
from recbole_lsc.device.learned import fit_per_budget
from recbole_lsc.device.policies import (
    available_rules, calibrate_threshold, fixed_decision, policy_priority, request_noise, top_share,
)
from recbole_lsc.evaluation.metrics import mean_metrics, metric_by_rank, metric_values, per_user_metrics, summary
from recbole_lsc.evaluation.ranks import list_ranks
from recbole_lsc.results import result_row

AGES = ("stale", "fresh")


@dataclass
class PhaseLists:
    """What the device holds for one phase's users: both lists as received, scored by its SRM
    (from the fresh history; the stale list also from the history it was built from), and
    (``device_catalogue: full``) its scores of the whole item table."""

    targets: torch.Tensor
    stale: object  # CandidateList
    fresh: object  # CandidateList
    stale_srm: torch.Tensor
    fresh_srm: torch.Tensor
    then: object  # StaleHistoryScores: the SRM's scores from the stale history
    catalogue: object  # [N, n_items] tensor, or None when the device holds only its lists
    newest: torch.Tensor  # the interactions the cloud has not seen (0 = none)
    history_len: torch.Tensor
    users: np.ndarray  # user ids (with history_len, what the request noise is drawn from)


def phase_lists(srm, lists, protocol, phase, config, device_catalogue):
    """The phase's stale and fresh lists (from ``lists``) scored by ``srm`` with fresh histories."""
    samples = protocol.samples(phase)
    stale, fresh = lists.get(phase, "stale"), lists.get(phase, "fresh")
    interaction = protocol.interaction(samples, "fresh", srm.max_len, srm.fields)
    size, device = config["eval_batch_size"], config["device"]
    if device_catalogue == "full":
        catalogue = srm.score_catalogue(interaction, size, device)
        stale_srm, fresh_srm = catalogue.gather(1, stale.item_ids), catalogue.gather(1, fresh.item_ids)
    else:
        catalogue = None
        stale_srm, fresh_srm = (srm.score_lists(interaction, received.item_ids, size, device) for received in (stale, fresh))
    newest = torch.from_numpy(protocol.history(samples, "fresh", protocol.cloud_lag)[0])
    stale_history = protocol.interaction(samples, "stale", srm.max_len, srm.fields)
    stale_history[srm.fields["item_seq_len"]].clamp_(min=1)  # an empty history: one padding item (StaleHistoryScores)
    then = StaleHistoryScores.of(lambda ids: srm.score_lists(stale_history, ids, size, device), stale.item_ids, newest)
    return PhaseLists(torch.from_numpy(protocol.targets(samples)), stale, fresh, stale_srm, fresh_srm, then, catalogue,
                      newest, torch.from_numpy(samples.position), samples.user)


def phase_candidates(lists, age):
    """``(ids, llm_scores, srm_scores)`` the device fuses for the phase's lists of ``age``."""
    return candidate_set(getattr(lists, age), getattr(lists, f"{age}_srm"), lists.catalogue)


def tune_alpha(ids, llm, srm, targets, config):
    """``fusion_alpha`` if fixed, else the grid value with the best validation metric (first on ties)."""
    if config["fusion_alpha"] != "auto":
        return float(config["fusion_alpha"])
    return max(ALPHA_GRID, key=lambda alpha: metric_values(
        list_ranks(ids, fuse(llm, srm, alpha, config["fusion_norm"]), targets), config).mean())


class FusedPhase:
    """One phase's fused lists: target ranks per list age, the gain of a fresh list, request features."""

    def __init__(self, lists, alpha, config):
        self.lists = lists
        self.ranks, shown = {}, None
        for age in AGES:
            ids, llm, srm = phase_candidates(lists, age)
            fused = fuse(llm, srm, alpha[age], config["fusion_norm"])
            self.ranks[age] = list_ranks(ids, fused, lists.targets)
            if age == "stale":
                shown = shown_order(ids, fused)
        self.gain = metric_values(self.ranks["fresh"], config) - metric_values(self.ranks["stale"], config)
        self.columns = request_columns(lists.stale, lists.stale_srm, lists.then, lists.catalogue,
                                       lists.newest, lists.history_len, shown, metric_by_rank(config, lists.stale.size))


class Collaboration:
    """Fusion and request decisions for one SRM state, tuned on validation, scored on test.

    ``extra`` (optional) are more simulated requests for the learned policy's fit only (the
    fresh-window samples, scored by an SRM that never trained on their targets).
    """

    def __init__(self, config, valid, test, extra=None):
        self.config = config
        self.device_catalogue = "candidates" if valid.catalogue is None else "full"
        self.alpha = {age: tune_alpha(*phase_candidates(valid, age), valid.targets, config) for age in AGES}
        self.phases = {phase: FusedPhase(lists, self.alpha, config) for phase, lists in (("valid", valid), ("test", test))}
        self.ranks = {phase: fused.ranks for phase, fused in self.phases.items()}
        self.gain = {phase: fused.gain for phase, fused in self.phases.items()}
        names = self.feature_names = feature_names(valid.catalogue is not None)
        self.rules = available_rules(names)
        self.policies = ("random", *self.rules, "learned", "oracle")  # the curve's: what this device can run, the oracle
        fitting = [self.phases["valid"]] + ([FusedPhase(extra, self.alpha, config)] if extra is not None else [])
        self.fit_size = sum(len(phase.gain) for phase in fitting)
        self._fitting = ({name: np.concatenate([phase.columns[name] for phase in fitting]) for name in names},
                         np.concatenate([phase.gain for phase in fitting]))
        # each fitting row's user: a validation user's fresh-window rows stay in that user's folds
        self._fitting_users = np.concatenate([np.asarray(phase.lists.users) for phase in fitting])
        budgets = sorted({*config["request_curve_ratios"], config["request_ratio"]} - {0, 1})
        self.learned_by_budget = fit_per_budget(names, self.rules, *self._fitting, budgets,
                                                groups=self._fitting_users)  # {rho: policy}

    def requests(self, policy, ratio, seed):
        """``{phase: mask}`` of requesting users for ``policy`` at ``ratio``."""
        if policy == "oracle":  # labelled ceiling: the users who gain most (and gain at all)
            return {phase: top_share(gain, ratio) & (gain > 0) for phase, gain in self.gain.items()}
        everyone = fixed_decision(policy, ratio)
        if everyone is not None:
            return {phase: np.full(len(gain), everyone) for phase, gain in self.gain.items()}
        priority = {phase: self.priority(policy, ratio, phase, seed) for phase in ("valid", "test")}
        tau = calibrate_threshold(priority["valid"], ratio)
        return {phase: values >= tau for phase, values in priority.items()}

    def priority(self, policy, ratio, phase, seed):
        """Each ``phase`` user's request priority under ``policy`` (a thresholded one) at ``ratio``."""
        fused = self.phases[phase]
        noise = request_noise(seed, fused.lists.users, fused.lists.history_len.numpy())
        return policy_priority(policy, fused.columns, noise, self.learned_policy(ratio) if policy == "learned" else None)

    def learned_policy(self, ratio):
        """The learned policy chosen for a budget ``ratio`` (a device runs at one budget); fit on
        first use for a budget outside the configured ones."""
        if ratio not in self.learned_by_budget:
            self.learned_by_budget.update(fit_per_budget(self.feature_names, self.rules, *self._fitting, (ratio,),
                                                         groups=self._fitting_users))
        return self.learned_by_budget[ratio]

    def threshold(self, policy, ratio, seed):
        """The priority a device needs to request: a share ``ratio`` of validation users has it."""
        return calibrate_threshold(self.priority(policy, ratio, "valid", seed), ratio)

    def final_ranks(self, phase, mask):
        """Target ranks in the lists the users end with: fresh where they requested, else stale."""
        ranks = self.ranks[phase]
        return torch.where(torch.from_numpy(mask), ranks["fresh"], ranks["stale"])

    def row(self, name, role, policy, ratio, seed):
        """The results row of ``policy`` at ``ratio`` and its per-user test ``valid_metric``."""
        masks = self.requests(policy, ratio, seed)
        ranks = {phase: self.final_ranks(phase, mask) for phase, mask in masks.items()}
        row = result_row(name, role, summary(ranks["valid"], self.config), summary(ranks["test"], self.config))
        row.update(device_catalogue=self.device_catalogue, policy=policy, rho=ratio,
                   realized=round(float(masks["test"].mean()), 6), alpha_stale=self.alpha["stale"],
                   alpha_fresh=self.alpha["fresh"])
        return row, metric_values(ranks["test"], self.config)

    def curve(self, ratios, seed):
        """Curve points, and each point's per-user test ``valid_metric`` keyed ``(policy, rho)``."""
        points, per_user = [], {}
        metrics, topk = self.config["metrics"], self.config["topk"]
        for policy in self.policies:
            for ratio in ratios:
                mask = self.requests(policy, ratio, seed)["test"]
                ranks = self.final_ranks("test", mask)
                points.append({"device_catalogue": self.device_catalogue, "policy": policy, "rho": ratio,
                               "realized": round(float(mask.mean()), 6),
                               "test": mean_metrics(per_user_metrics(ranks, metrics, topk))})
                per_user[(policy, ratio)] = metric_values(ranks, self.config)
        return points, per_user

    def info(self):
        """What was tuned and chosen, for results.json."""
        by_budget = {str(ratio): policy for ratio, policy in self.learned_by_budget.items()}
        return {"device_catalogue": self.device_catalogue, "alpha_stale": self.alpha["stale"],
                "alpha_fresh": self.alpha["fresh"], "learned_policy_fit_users": self.fit_size,
                "learned_policy": {rho: policy.description for rho, policy in by_budget.items()},
                "learned_policy_weights": {rho: None if policy.weights is None else policy.weights.round(6).tolist()
                                           for rho, policy in by_budget.items()},
                "learned_policy_cv": {rho: {key: round(value, 6) for key, value in policy.cv_scores.items()}
                                      for rho, policy in by_budget.items()},
                "learned_policy_selection_gain": {rho: None if policy.selection_gain is None else
                                                  {key: float(f"{value:.4g}") if key == "p_holm" else round(value, 6)
                                                   for key, value in policy.selection_gain.items()}
                                                  for rho, policy in by_budget.items()}}
