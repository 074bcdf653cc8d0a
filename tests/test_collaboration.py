"""Collaboration on synthetic lists: alpha tuning, request budgets, the oracle ceiling, and
that everything fitted reads validation labels only."""

import dataclasses

import numpy as np
import pytest
import torch

from recbole_lsc.channel import CandidateList
from recbole_lsc.device.policies import top_share
from recbole_lsc.evaluation.metrics import metric_values
from recbole_lsc.experiment.collaboration import CURVE_POLICIES, Collaboration, PhaseLists, tune_alpha

CONFIG = {"fusion_alpha": "auto", "fusion_norm": "prob", "valid_metric": "NDCG@10", "metrics": ["Hit", "NDCG"],
          "topk": [5, 10], "metric_decimal_place": 4}
USERS, SIZE, ITEMS = 300, 20, 80


def candidate_list(generator):
    ids = torch.stack([torch.randperm(ITEMS - 1, generator=generator)[:SIZE] + 1 for _ in range(USERS)])
    scores = torch.sort(torch.randn(USERS, SIZE, generator=generator), dim=1, descending=True).values
    return CandidateList(ids, scores, "synthetic", torch.full((USERS,), 9))


def synthetic_phase(seed):
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
    return PhaseLists(targets, stale, fresh, catalogue.gather(1, stale.item_ids), catalogue.gather(1, fresh.item_ids),
                      catalogue, torch.randint(0, ITEMS, (USERS, 2), generator=generator),
                      torch.randint(3, 30, (USERS,), generator=generator))


@pytest.fixture(scope="module")
def phases():
    return synthetic_phase(0), synthetic_phase(1)


@pytest.fixture(scope="module")
def collab(phases):
    return Collaboration(CONFIG, *phases)


def test_alpha_tuning_picks_the_model_that_ranks_the_targets():
    generator = torch.Generator().manual_seed(3)
    lists = candidate_list(generator)
    srm = torch.randn(USERS, SIZE, generator=generator)
    llm_first = lists.item_ids[:, 0]  # the LLM's top item is every target: alpha = 1 wins
    assert tune_alpha(lists.item_ids, lists.scores, srm, llm_first, CONFIG) == 1.0
    srm_first = lists.item_ids.gather(1, srm.argmax(1, keepdim=True)).squeeze(1)
    assert tune_alpha(lists.item_ids, lists.scores, srm, srm_first, CONFIG) == 0.0
    assert tune_alpha(lists.item_ids, lists.scores, srm, srm_first, {**CONFIG, "fusion_alpha": 0.3}) == 0.3


def test_fixed_alpha_one_gives_the_llm_lists_own_order(phases):
    fixed = Collaboration({**CONFIG, "fusion_alpha": 1.0}, *phases)
    valid = phases[0]
    in_list = valid.stale.item_ids == valid.targets.unsqueeze(1)
    llm_rank = torch.where(in_list.any(1), in_list.float().argmax(1), torch.tensor(SIZE))
    assert torch.equal(fixed.ranks["valid"]["stale"], llm_rank)


@pytest.mark.parametrize("policy", ["random", "consistency", "top1_missing", "regret", "learned"])
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.3])
def test_thresholded_policies_spend_the_budget_on_validation(collab, policy, ratio):
    masks = collab.requests(policy, ratio, seed=5)
    assert masks["valid"].sum() == round(ratio * USERS)
    assert 0 < masks["test"].sum() < USERS


@pytest.mark.parametrize("policy", CURVE_POLICIES)
@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.5])
def test_no_policy_beats_the_oracle_with_as_many_requests(collab, policy, ratio):
    mask = collab.requests(policy, ratio, seed=5)["test"]
    achieved = metric_values(collab.final_ranks("test", mask), CONFIG).mean()
    gain = collab.gain["test"]
    stale = metric_values(collab.ranks["test"]["stale"], CONFIG).mean()
    ceiling = stale + gain[top_share(gain, mask.mean()) & (gain > 0)].sum() / USERS
    assert achieved <= ceiling + 1e-12


def test_everything_fitted_reads_validation_labels_only(phases, collab):
    valid, test = phases
    other_test = dataclasses.replace(test, targets=torch.roll(test.targets, 7))
    moved = Collaboration(CONFIG, valid, other_test)
    assert moved.alpha == collab.alpha
    assert np.array_equal(moved.learned.weights, collab.learned.weights)
    assert collab.row("x", "lsc4rec", "learned", 0.1, 5)[0]["test"] != moved.row("x", "lsc4rec", "learned", 0.1, 5)[0]["test"]
    other_valid = dataclasses.replace(valid, targets=torch.roll(valid.targets, 7))
    assert not np.array_equal(Collaboration(CONFIG, other_valid, test).learned.weights, collab.learned.weights)


def test_rho_zero_and_one_are_never_and_always(collab):
    for policy in ("random", "regret", "learned"):
        assert not collab.requests(policy, 0.0, 5)["test"].any()
        assert collab.requests(policy, 1.0, 5)["test"].all()
    row, per_user = collab.row("always", "lsc4rec", "always", 0.1, 5)
    assert row["realized"] == 1.0
    assert np.array_equal(per_user, metric_values(collab.ranks["test"]["fresh"], CONFIG))
