"""Fusion invariants, per-user metrics by hand, request features, budgets and policies."""

import numpy as np
import pytest
import torch

from recbole_lsc.device.features import (
    FEATURE_NAMES, catalogue_features, drift_features, feature_columns, feature_matrix, list_features,
    rank_displacement,
)
from recbole_lsc.device.fusion import fuse, normalise, with_own_top
from recbole_lsc.device.learned import (
    L2_GRID, SELECTION_ALPHA, LearnedRequestPolicy, captured_gain, fit_per_budget, random_gain, selection_gain,
)
from recbole_lsc.device.policies import calibrate_threshold, policy_priority, request_noise, top_share
from recbole_lsc.evaluation.metrics import per_user_metrics
from recbole_lsc.evaluation.ranks import list_ranks
from recbole_lsc.evaluation.stats import paired_test


def request_features(llm, srm, full, ids, newest, history_len, shown_scores, metric_by_rank):
    """Every feature column of the stale lists ``ids`` shown in the order of ``shown_scores``
    (the SRM's view from the stale history is its fresh one)."""
    shown = ids.gather(1, torch.argsort(shown_scores, dim=1, descending=True, stable=True))
    return feature_matrix(feature_columns({**list_features(llm, srm, ids, newest, history_len),
                                           **drift_features(srm, srm, newest, torch.zeros(newest.shape)),
                                           **catalogue_features(full, ids, shown, metric_by_rank)}), FEATURE_NAMES)


def named(matrix, names=FEATURE_NAMES):
    return {name: matrix[:, index] for index, name in enumerate(names)}


def ranked_ids(ids, scores):
    return ids.gather(1, torch.argsort(scores, dim=1, descending=True, stable=True))


@pytest.fixture
def lists():
    torch.manual_seed(0)
    ids = torch.stack([torch.randperm(40)[:10] + 1 for _ in range(6)])
    llm = torch.sort(torch.randn(6, 10), dim=1, descending=True).values  # LLM order = list order
    srm = torch.randn(6, 10)
    return ids, llm, srm


@pytest.mark.parametrize("norm", ["rank", "prob"])
def test_alpha_one_is_the_llm_order_and_alpha_zero_the_srm_reranking(lists, norm):
    ids, llm, srm = lists
    assert torch.equal(ranked_ids(ids, fuse(llm, srm, 1.0, norm)), ids)
    assert torch.equal(ranked_ids(ids, fuse(llm, srm, 0.0, norm)), ranked_ids(ids, srm))


def test_ties_go_to_the_llm_order(lists):
    ids, llm, _ = lists
    flat = torch.zeros_like(llm)  # an SRM with no opinion
    assert torch.equal(ranked_ids(ids, fuse(llm, flat, 0.0, "prob")), ids)


def test_rank_normalisation_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    # ranks 3, 0, 2, 1 of 4 -> 1 - r / 4
    assert torch.allclose(normalise(scores, "rank"), torch.tensor([[0.25, 1.0, 0.5, 0.75]]))
    assert torch.allclose(normalise(scores, "prob").sum(1), torch.ones(1))


def test_fusion_rejects_bad_input(lists):
    ids, llm, srm = lists
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        fuse(llm, srm, 1.5, "rank")
    with pytest.raises(ValueError, match="fusion_norm"):
        normalise(llm, "softmaxx")


def test_target_rank_and_per_user_metrics_by_hand():
    ids = torch.tensor([[5, 6, 7], [5, 6, 7], [5, 6, 7]])
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [3.0, 2.0, 1.0]])
    targets = torch.tensor([6, 7, 9])
    ranks = list_ranks(ids, scores, targets)
    assert ranks.tolist() == [1, 1, 3]  # 9 is not in the list: rank = C = miss
    values = per_user_metrics(ranks.numpy(), ["Hit", "NDCG", "MRR"], [1, 2])
    assert values["hit@1"].tolist() == [0, 0, 0]
    assert values["hit@2"].tolist() == [1, 1, 0]
    assert np.allclose(values["ndcg@2"], [1 / np.log2(3), 1 / np.log2(3), 0])
    assert np.allclose(values["mrr@2"], [0.5, 0.5, 0])


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.1, 0.33, 0.5, 1.0])
def test_request_budget_is_respected(ratio):
    rng = np.random.default_rng(1)
    valid, test = rng.random(200), rng.random(200)
    assert top_share(test, ratio).sum() == round(ratio * 200)
    tau = calibrate_threshold(valid, ratio)
    assert abs((valid >= tau).sum() - ratio * 200) <= 1  # within one user of the target on validation


def test_top_share_picks_highest_priorities():
    assert top_share(np.array([0.1, 0.9, 0.5, 0.7]), 0.5).tolist() == [False, True, False, True]


def test_random_policy_is_seeded():
    features = named(np.zeros((50, len(FEATURE_NAMES))))
    users, positions = np.arange(50), np.full(50, 7)
    a = policy_priority("random", features, request_noise(3, users, positions))
    b = policy_priority("random", features, request_noise(3, users, positions))
    c = policy_priority("random", features, request_noise(4, users, positions))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_request_noise_is_one_devices_own_draw():
    """A user's noise depends on (seed, user, history length) only, not on who else is drawn."""
    users, positions = np.arange(2000), np.arange(2000) % 13 + 1
    everyone = request_noise(5, users, positions)
    alone = np.array([request_noise(5, [user], [position])[0] for user, position in zip(users[:20], positions[:20])])
    assert np.array_equal(everyone[:20], alone)
    assert everyone.min() >= 0 and everyone.max() < 1 and abs(everyone.mean() - 0.5) < 0.03
    assert not np.array_equal(request_noise(5, users, positions + 1), everyone)
    assert len(np.unique(everyone)) == len(everyone)


def test_top1_rule_requests_users_whose_device_favourite_is_missing_first():
    features = {"srm_top1_in_list": np.array([1.0, 0, 1, 0]), "srm_mass_in_list": np.array([0.1, 0.6, 0.2, 0.3])}
    priority = policy_priority("top1_missing", features, np.zeros(4))
    # missing favourites first (user 3 has less of the device's mass in the list than user 1), then the rest
    assert list(np.argsort(-priority)) == [3, 1, 0, 2]


def test_rank_displacement_by_hand():
    # SRM agrees with the LLM order -> 0; SRM reverses a list of 4 -> mean |r - j| / 4 = (3+1+1+3)/4/4
    assert rank_displacement(torch.tensor([[4.0, 3.0, 2.0, 1.0]]))[0] == 0
    assert rank_displacement(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))[0] == pytest.approx(0.5)


def test_request_features_shape_and_values():
    ids = torch.tensor([[3, 4, 5]])
    llm = torch.tensor([[-0.1, -1.0, -2.0]])
    srm = torch.tensor([[0.0, 1.0, 2.0]])
    full = torch.tensor([[-9.0, 0.0, 5.0, 0.0, 1.0, 2.0]])  # the SRM's top-1 is item 2: not in the list
    newest = torch.tensor([[4, 0]])  # one unseen item, and it is in the list
    hit_at_1 = torch.tensor([1.0, 0.0, 0.0])  # metric by rank: Hit@1
    feats = request_features(llm, srm, full, ids, newest, torch.tensor([7]), srm, hit_at_1)
    assert feats.shape == (1, len(FEATURE_NAMES))
    named = dict(zip(FEATURE_NAMES, feats[0]))
    assert named["srm_top1_in_list"] == 0 and named["newest_in_list"] == 1
    assert named["spearman"] == pytest.approx(-1.0)
    assert named["log_history_len"] == pytest.approx(np.log(8))
    # absolute scores: the cloud's probability that its list holds the next item, the SRM's raw logits
    assert named["llm_list_log_mass"] == pytest.approx(np.log(np.exp([-0.1, -1.0, -2.0]).sum()))
    assert named["llm_top1_log_prob"] == pytest.approx(-0.1)
    assert named["srm_list_logsumexp"] == pytest.approx(np.log(np.exp([0.0, 1.0, 2.0]).sum()))
    assert named["srm_max_logit"] == pytest.approx(2.0)
    # by hand: p = softmax over items 1..5 of [0, 5, 0, 1, 2]; the list shown in SRM order is 5, 4, 3,
    # so expected Hit@1 = p(5); the SRM's own top-1 is item 2: p(2); their difference is the regret
    p = torch.softmax(torch.tensor([0.0, 5.0, 0.0, 1.0, 2.0], dtype=torch.float64), 0).numpy()
    assert named["expected_metric_list"] == pytest.approx(p[4])
    assert named["expected_metric_own"] == pytest.approx(p[1])
    assert named["expected_regret"] == pytest.approx(p[1] - p[4])
    assert named["own_topk_mass_missing"] == pytest.approx(p[1])  # own top-3 = items 2, 5, 4: only 2 is missing
    assert named["best_in_list_gap"] == pytest.approx(np.log(p[1] / p[4]))


def test_drift_features_compare_the_srm_from_the_stale_and_the_fresh_history():
    fresh = torch.tensor([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]])  # from the fresh history: the SRM orders row 0 5, 4, 3
    then = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])  # from the history the list was built from: 3, 4, 5
    newest = torch.tensor([[7, 8], [0, 0]])  # row 1 has no interaction the cloud has not seen
    newest_then = torch.tensor([[-1.0, 0.0], [9.0, 9.0]])  # the SRM's logits of items 7 and 8 from the stale history
    feats = {name: column.numpy() for name, column in drift_features(fresh, then, newest, newest_then).items()}
    lse = np.log(np.exp([3.0, 2.0, 1.0]).sum())
    # log-sum-exp of [0, 1, 2] minus that of [3, 2, 1]: the same exponentials, shifted by 1 in the log
    assert feats["srm_logsumexp_drift"] == pytest.approx([-1.0, 0.0])
    assert feats["srm_order_stability"] == pytest.approx([-1.0, 1.0])  # the newest items reversed row 0's order
    # from the stale history the SRM agreed with the LLM's order (the list's) on row 0, reversed it on row 1
    assert feats["stale_rank_displacement"] == pytest.approx([0.0, (2 + 0 + 2) / 3 / 3])
    # row 0: the list's log-sum-exp from the stale history minus the newest items' mean logit (-0.5); row 1: none
    assert feats["newest_surprise"] == pytest.approx([lse + 0.5, 0.0])


def test_expected_regret_is_zero_when_the_list_is_the_devices_own_top_list():
    full = torch.tensor([[-9.0, 3.0, 2.0, 1.0, 0.0]])
    ids = torch.tensor([[1, 2, 3]])
    scores = torch.tensor([[3.0, 2.0, 1.0]])
    ndcg = 1.0 / np.log2(np.arange(3) + 2.0)
    feats = request_features(scores, scores, full, ids, torch.zeros(1, 2, dtype=torch.long), torch.tensor([3]),
                             scores, ndcg)
    named = dict(zip(FEATURE_NAMES, feats[0]))
    assert named["expected_regret"] == pytest.approx(0.0, abs=1e-12)
    assert named["own_topk_mass_missing"] == pytest.approx(0.0, abs=1e-12)
    # the same items shown in reverse order lose expected NDCG
    reverse = request_features(scores, scores, full, ids, torch.zeros(1, 2, dtype=torch.long), torch.tensor([3]),
                               -scores, ndcg)
    assert dict(zip(FEATURE_NAMES, reverse[0]))["expected_regret"] > 0.01


def test_regret_rule_requests_the_largest_expected_regret_first():
    features = {"expected_regret": np.array([0.02, 0.3, 0.1])}
    assert list(np.argsort(-policy_priority("regret", features, np.zeros(3)))) == [1, 2, 0]


def columns_of(features):
    return {f"x{index}": features[:, index] for index in range(features.shape[1])}


def test_learned_policy_recovers_a_linear_gain():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 3))
    gains = 2 * features[:, 0] - features[:, 2] + 0.01 * rng.normal(size=300)
    policy = LearnedRequestPolicy(["x0", "x1", "x2"], l2=1e-3).fit(columns_of(features), gains)
    assert np.corrcoef(policy.predict(columns_of(features)), gains)[0, 1] > 0.99
    with pytest.raises(RuntimeError, match="before fit"):
        LearnedRequestPolicy(["x0"]).predict(columns_of(features))


def test_learned_policy_cross_validates_ridge_priors_rules_and_random():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 2))
    columns = {"x0": features[:, 0], "rank_displacement": features[:, 1]}
    names = ("x0", "rank_displacement")
    # a gain that x0 explains: a ridge fit beats the consistency rule and random
    gains = np.maximum(features[:, 0], 0) + 0.05 * rng.normal(size=400)
    policy = LearnedRequestPolicy(names, rules=("consistency",)).fit(columns, gains)
    assert policy.choice[0] == "ridge" and policy.choice[2] in L2_GRID
    assert set(policy.cv_scores) == {f"ridge/{prior}/{l2}" for prior in ("none", "consistency") for l2 in L2_GRID} | {
        "rule/consistency", "random"}
    assert policy.cv_scores[policy.description] > policy.cv_scores["random"] + 0.05
    assert policy.cv_scores[policy.description] > policy.cv_scores["rule/consistency"] + 0.05
    assert np.corrcoef(policy.predict(columns), features[:, 0])[0, 1] > 0.95
    # a gain that only the rule's feature orders, as a step: the rule itself is chosen (nothing beats it)
    step = (features[:, 1] > 1.0).astype(float)
    assert LearnedRequestPolicy(names, rules=("consistency",)).fit(columns, step).description == "rule/consistency"
    # every user gains alike: no order beats random, and on a tie the simplest candidate wins
    fallback = LearnedRequestPolicy(names, rules=("consistency",)).fit(columns, np.full(400, 0.1))
    assert fallback.description == "random" and not fallback.predict(columns).any()  # the jitter decides


def test_learned_policy_keeps_random_when_a_lead_is_within_the_folds_noise():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 2))
    columns = {"x0": features[:, 0], "rank_displacement": features[:, 1]}
    names = ("x0", "rank_displacement")
    noisy = 0.05 * features[:, 0] + rng.normal(size=400)  # a faint signal under one-target label noise
    policy = LearnedRequestPolicy(names, rules=("consistency",)).fit(columns, noisy)
    leader = max(policy.cv_scores, key=policy.cv_scores.get)
    assert leader.startswith("ridge") and policy.cv_scores[leader] > policy.cv_scores["random"]  # a fit leads ...
    assert policy.description == "random"  # ... by less than one standard error: random is kept
    # by hand, 2 folds: the gap to the best per fold is (a, b), its error |a - b| / 2 (std / sqrt 2)
    rule = LearnedRequestPolicy(names, folds=2)
    ridge, rand = ("ridge", "none", 1.0), ("random", None, None)
    # gaps 0.1, 0.3: mean 0.2 > error 0.1, the ridge's lead is kept
    df = {ridge: 2.0}
    assert rule._one_standard_error_choice({ridge: np.array([1.0, 1.0]), rand: np.array([0.9, 0.7])}, df) == ridge
    # gaps 0.2, -0.1: mean 0.05 <= error 0.15, the simpler random is chosen
    assert rule._one_standard_error_choice({ridge: np.array([1.0, 1.0]), rand: np.array([0.8, 1.1])}, df) == rand


def test_learned_policy_is_chosen_per_budget():
    rng = np.random.default_rng(0)
    regret, displacement = rng.random(2000), rng.random(2000)
    # the few who gain most are the regret rule's top 5%; a wider group gains less, found by consistency
    gains = np.where(regret > 0.95, 1.0, np.where(displacement > 0.8, 0.5, 0.0))
    columns = {"rank_displacement": displacement, "expected_regret": regret}
    names, rules = tuple(columns), ("consistency", "regret")
    per_budget = fit_per_budget(names, rules, columns, gains, (0.05, 0.2))
    assert {rho: policy.description for rho, policy in per_budget.items()} == {0.05: "rule/regret",
                                                                              0.2: "rule/consistency"}
    # one score averaged over budgets weighs the largest most: it picks consistency for every budget
    averaged = LearnedRequestPolicy(names, rules, ratios=(0.05, 0.2)).fit(columns, gains)
    assert averaged.description == "rule/consistency"
    assert per_budget[0.05].cv_scores["rule/regret"] > 1.5 * per_budget[0.05].cv_scores["rule/consistency"]
    for rho, policy in per_budget.items():  # shared folds: the same scores as a fit for that budget alone
        alone = LearnedRequestPolicy(names, rules, ratios=(rho,)).fit(columns, gains)
        assert alone.cv_scores == pytest.approx(policy.cv_scores) and alone.choice == policy.choice
    few = fit_per_budget(names, rules, {name: values[:6] for name, values in columns.items()}, gains[:6], (0.1,))
    assert few[0.1].description == f"ridge/none/{L2_GRID[-1]}"  # too few users to fold: the most-penalised ridge


def sparse_noise_labels(seed, users=300):
    """Features that say nothing about the gain, and one-target labels: most 0, a few +-1."""
    rng = np.random.default_rng(seed)
    columns = {"rank_displacement": rng.random(users), "x1": rng.normal(size=users), "x2": rng.normal(size=users)}
    return columns, np.where(rng.random(users) < 0.1, rng.choice([-1.0, 1.0], users), 0.0)


def test_a_selection_that_does_not_beat_random_out_of_sample_requests_at_random():
    columns, gains = sparse_noise_labels(1)
    names, rules = tuple(columns), ("consistency",)
    plain = fit_per_budget(names, rules, columns, gains, (0.1, 0.2), nested=False)
    assert plain[0.1].description == "ridge/consistency/1000000.0"  # the folds that chose it favour it ...
    checked = fit_per_budget(names, rules, columns, gains, (0.1, 0.2))
    assert checked[0.1].description == "random" and checked[0.1].weights is None  # ... users it never saw do not
    assert checked[0.1].selection_gain["p_holm"] >= SELECTION_ALPHA and checked[0.1].cv_scores == plain[0.1].cv_scores
    assert not checked[0.1].predict(columns).any()  # the jitter decides, as for the random policy
    per_user = selection_gain(names, rules, columns, gains, (0.1, 0.2))
    assert per_user.shape == (300, 2)  # one value per held-out user and budget
    assert checked[0.2].selection_gain["mean"] == pytest.approx(per_user[:, 1].mean())
    assert checked[0.2].selection_gain["standard_error"] == pytest.approx(per_user[:, 1].std(ddof=1) / np.sqrt(300))


def test_the_nested_check_keeps_a_selection_that_finds_the_gain():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 2))
    columns = {"x0": features[:, 0], "rank_displacement": features[:, 1]}
    gains = np.maximum(features[:, 0], 0) + 0.05 * rng.normal(size=400)
    policy = fit_per_budget(tuple(columns), ("consistency",), columns, gains, (0.1,))[0.1]
    check = policy.selection_gain
    assert policy.choice[0] == "ridge" and check["mean"] > 0.05 and check["mean"] > 5 * check["standard_error"]
    assert check["p_holm"] < 1e-6
    # noise only: fewer departures from random than the selection alone makes, each with a check
    # whose Holm-corrected p is below the level
    departures = {"plain": 0, "checked": 0}
    for seed in range(6):
        columns, gains = sparse_noise_labels(seed)
        for key, nested in (("plain", False), ("checked", True)):
            for fitted in fit_per_budget(tuple(columns), ("consistency",), columns, gains, (0.1, 0.2), nested).values():
                departures[key] += fitted.choice[0] != "random"
                assert not nested or fitted.choice[0] == "random" or fitted.selection_gain["p_holm"] < SELECTION_ALPHA
    assert departures["checked"] < departures["plain"]


def test_selection_gain_of_a_selection_that_ends_at_random_is_zero():
    rng = np.random.default_rng(0)
    columns = {"rank_displacement": rng.random(100)}
    # every user gains alike: every outer fold's selection is random, worth exactly random's expectation
    assert not selection_gain(tuple(columns), ("consistency",), columns, np.full(100, 0.3), (0.1, 0.5)).any()


def test_random_gain_by_hand():
    gains = np.array([0.4, 0.0, -0.2, 0.6])
    # a share 0.5 of 4 users = 2 users, each worth the mean gain 0.2 on average: 0.4 / 4 users
    assert random_gain(gains, (0.5,)) == pytest.approx([2 / 4 * 0.2])
    assert random_gain(gains, (0.25, 0.5)) == pytest.approx([1 / 4 * 0.2, 2 / 4 * 0.2])  # one value per ratio


def test_full_catalogue_candidates_add_the_devices_own_top_items():
    cloud = torch.tensor([[4, 2, 7]])
    llm = torch.tensor([[-0.5, -1.0, -3.0]])
    catalogue = torch.tensor([[9.0, 1.0, 8.0, 0.0, 5.0, 7.0, 6.0, -1.0]])  # own order: 2, 5, 6, 4, 1, ...
    ids, llm_scores, srm = with_own_top(cloud, llm, catalogue)
    assert ids.tolist() == [[4, 2, 7, 5, 6, 1]]  # cloud list, then own items the cloud did not propose
    assert llm_scores.tolist() == [[-0.5, -1.0, -3.0, -3.0, -3.0, -3.0]]  # the floor: the list's lowest score
    assert srm.tolist() == [[5.0, 8.0, -1.0, 7.0, 6.0, 1.0]]
    for norm in ("rank", "prob"):  # alpha 1: the cloud's list first; alpha 0: the device's own ranking
        assert ranked_ids(ids, fuse(llm_scores, srm, 1.0, norm))[0, :3].tolist() == [4, 2, 7]
        assert ranked_ids(ids, fuse(llm_scores, srm, 0.0, norm))[0, :3].tolist() == [2, 5, 6]


def test_captured_gain_by_hand():
    gains = np.array([0.5, -0.2, 0.0, 1.0])
    priority = np.array([3.0, 4.0, 1.0, 2.0])
    # ratio 0.25 requests user 1 (-0.2); ratio 0.5 users 1 and 0 (0.3); per user of 4
    assert captured_gain(priority, gains, (0.25, 0.5)) == pytest.approx([-0.2 / 4, 0.3 / 4])


def test_paired_test_known_cases():
    same = paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert same == {"mean_diff": 0.0, "t_p": 1.0, "wilcoxon_p": 1.0}
    rng = np.random.default_rng(0)
    base = rng.random(200)
    better = paired_test(base + 0.1 + 0.01 * rng.random(200), base)
    assert better["mean_diff"] == pytest.approx(0.105, abs=0.01)
    assert better["t_p"] < 1e-10 and better["wilcoxon_p"] < 1e-10
    with pytest.raises(ValueError, match="same users"):
        paired_test([1, 2], [1, 2, 3])
