"""Collaboration on synthetic lists: alpha tuning, request budgets, the oracle ceiling, and
that everything fitted reads validation labels only."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from recbole_lsc.channel import CandidateList
from recbole_lsc.device.inference import StaleHistoryScores
from recbole_lsc.device.learned import SELECTION_ALPHA, LearnedRequestPolicy
from recbole_lsc.device.policies import top_share
from recbole_lsc.evaluation.metrics import metric_values
from recbole_lsc.experiment.collaboration import Collaboration, PhaseLists, tune_alpha

CONFIG = {"fusion_alpha": "auto", "fusion_norm": "prob", "valid_metric": "NDCG@10", "metrics": ["Hit", "NDCG"],
          "topk": [5, 10], "metric_decimal_place": 4, "request_ratio": 0.1, "request_curve_ratios": [0, 0.05, 0.2, 1]}
USERS, SIZE, ITEMS = 300, 20, 80


def candidate_list(generator):
    ids = torch.stack([torch.randperm(ITEMS - 1, generator=generator)[:SIZE] + 1 for _ in range(USERS)])
    scores = torch.sort(torch.randn(USERS, SIZE, generator=generator), dim=1, descending=True).values
    return CandidateList(ids, scores, "synthetic", torch.full((USERS,), 9))


def synthetic_phase(seed, holds_table=True):
    """Users whose target is in the fresh list more often than in the stale one (fresh lists help)."""
    generator = torch.Generator().manual_seed(seed)
    stale, fresh = candidate_list(generator), candidate_list(generator)
    catalogue = torch.randn(USERS, ITEMS, generator=generator)
    pick = torch.randint(0, SIZE, (USERS,), generator=generator)
    source = torch.rand(USERS, generator=generator)
    rows = torch.arange(USERS)
    targets = torch.where(source < 0.5, fresh.item_ids[rows, pick],
                          torch.where(source < 0.75, stale.item_ids[rows, pick], torch.tensor(ITEMS - 1)))
    catalogue[rows, targets] += 1.5  # the SRM knows something
    newest = torch.randint(0, ITEMS, (USERS, 2), generator=generator)
    then = StaleHistoryScores(catalogue.gather(1, stale.item_ids) + torch.randn(USERS, SIZE, generator=generator),
                              torch.randn(USERS, 2, generator=generator))
    return PhaseLists(targets, stale, fresh, catalogue.gather(1, stale.item_ids), catalogue.gather(1, fresh.item_ids),
                      then, catalogue if holds_table else None, newest,
                      torch.randint(3, 30, (USERS,), generator=generator), np.arange(USERS))


@pytest.fixture(scope="module")
def phases():
    return synthetic_phase(0), synthetic_phase(1)


@pytest.fixture(scope="module", params=["candidates", "full"])
def collab(request):
    full = request.param == "full"
    return Collaboration(CONFIG, synthetic_phase(0, full), synthetic_phase(1, full))


def test_alpha_tuning_picks_the_model_that_ranks_the_targets():
    generator = torch.Generator().manual_seed(3)
    lists = candidate_list(generator)
    srm = torch.randn(USERS, SIZE, generator=generator)
    llm_first = lists.item_ids[:, 0]  # the LLM's top item is every target: alpha = 1 wins
    assert tune_alpha(lists.item_ids, lists.scores, srm, llm_first, CONFIG) == 1.0
    srm_first = lists.item_ids.gather(1, srm.argmax(1, keepdim=True)).squeeze(1)
    assert tune_alpha(lists.item_ids, lists.scores, srm, srm_first, CONFIG) == 0.0
    assert tune_alpha(lists.item_ids, lists.scores, srm, srm_first, {**CONFIG, "fusion_alpha": 0.3}) == 0.3


@pytest.mark.parametrize("full", [False, True])
def test_fixed_alpha_one_gives_the_llm_lists_own_order(full):
    phases = synthetic_phase(0, full), synthetic_phase(1, full)
    fixed = Collaboration({**CONFIG, "fusion_alpha": 1.0}, *phases)
    valid = phases[0]
    in_list = valid.stale.item_ids == valid.targets.unsqueeze(1)
    llm_rank = torch.where(in_list.any(1), in_list.float().argmax(1), torch.tensor(SIZE))
    # with the item table the list goes on past C with the device's own items: compare the top C
    assert torch.equal(fixed.ranks["valid"]["stale"].clamp(max=SIZE), llm_rank)


def test_each_setting_runs_the_policies_it_can_compute(collab):
    expected = {"candidates": ("random", "consistency", "learned", "oracle"),
                "full": ("random", "consistency", "top1_missing", "regret", "learned", "oracle")}
    assert collab.policies == expected[collab.device_catalogue]


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.3])
def test_thresholded_policies_spend_the_budget_on_validation(collab, ratio):
    for policy in set(collab.policies) - {"oracle"}:
        masks = collab.requests(policy, ratio, seed=5)
        assert masks["valid"].sum() == round(ratio * USERS), policy
        assert 0 < masks["test"].sum() < USERS, policy


@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.5])
def test_no_policy_beats_the_oracle_with_as_many_requests(collab, ratio):
    for policy in collab.policies:
        mask = collab.requests(policy, ratio, seed=5)["test"]
        achieved = metric_values(collab.final_ranks("test", mask), CONFIG).mean()
        gain = collab.gain["test"]
        stale = metric_values(collab.ranks["test"]["stale"], CONFIG).mean()
        ceiling = stale + gain[top_share(gain, mask.mean()) & (gain > 0)].sum() / USERS
        assert achieved <= ceiling + 1e-12, policy


def test_everything_fitted_reads_validation_and_fresh_window_labels_only(phases):
    valid, test = phases
    extra = synthetic_phase(2)
    collab = Collaboration(CONFIG, valid, test, extra)
    other_test = dataclasses.replace(test, targets=torch.roll(test.targets, 7))
    moved = Collaboration(CONFIG, valid, other_test, extra)
    def cv_scores(fitted):
        return {rho: policy.cv_scores for rho, policy in fitted.learned_by_budget.items()}

    assert moved.alpha == collab.alpha and cv_scores(moved) == cv_scores(collab)
    assert collab.row("x", "lsc4rec", "learned", 0.1, 5)[0]["test"] != moved.row("x", "lsc4rec", "learned", 0.1, 5)[0]["test"]
    for changed in (Collaboration(CONFIG, dataclasses.replace(valid, targets=torch.roll(valid.targets, 7)), test, extra),
                    Collaboration(CONFIG, valid, test, dataclasses.replace(extra, targets=torch.roll(extra.targets, 7)))):
        assert cv_scores(changed) != cv_scores(collab)
    assert collab.fit_size == 2 * USERS
    # each fitting row's user: a validation user's fresh-window rows share the id, so they share a fold
    assert np.array_equal(collab._fitting_users, np.r_[valid.users, extra.users])


@pytest.mark.parametrize("full", [False, True])
def test_the_learned_policy_is_chosen_for_each_budget_a_device_may_run(full):
    collab = Collaboration(CONFIG, synthetic_phase(0, full), synthetic_phase(1, full))
    # the configured budgets (the curve's and request_ratio), not 0 and 1 where no one decides
    assert set(collab.info()["learned_policy"]) == {"0.05", "0.1", "0.2"}
    assert set(collab.info()["learned_policy_cv"]["0.1"]) >= {"random", "rule/consistency"}
    for rho, check in collab.info()["learned_policy_selection_gain"].items():  # random unless the check cleared it
        assert check is None or set(check) == {"mean", "standard_error", "p_holm"}
        assert json.loads(json.dumps(check)) == check
        assert collab.info()["learned_policy"][rho] == "random" or check["p_holm"] < SELECTION_ALPHA
    columns, gains = collab._fitting
    for rho in (0.1, 0.3):  # 0.3: fit on first use, on the same labels and users
        alone = LearnedRequestPolicy(collab.feature_names, collab.rules, ratios=(rho,)).fit(
            columns, gains, collab._fitting_users)
        assert collab.learned_policy(rho).cv_scores == pytest.approx(alone.cv_scores)
    assert "0.3" in collab.info()["learned_policy"]


def test_rho_zero_and_one_are_never_and_always(collab):
    for policy in ("random", "regret", "learned"):
        assert not collab.requests(policy, 0.0, 5)["test"].any()
        assert collab.requests(policy, 1.0, 5)["test"].all()
    row, per_user = collab.row("always", "lsc4rec", "always", 0.1, 5)
    assert row["realized"] == 1.0
    assert np.array_equal(per_user, metric_values(collab.ranks["test"]["fresh"], CONFIG))
