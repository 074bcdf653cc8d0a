"""The learned request policy's selection: folds by user, the ranking degrees of freedom of the
one-standard-error rule, and the nested check (a one-sided paired t-test over held-out users,
Holm's correction across budgets)."""

import numpy as np
import pytest
from scipy import stats

from recbole_lsc.device import learned
from recbole_lsc.device.learned import (
    L2_GRID, OUTER_FOLDS, OUTER_REPEATS, SELECTION_ALPHA, LearnedRequestPolicy, Ridge, fit_per_budget,
    gain_over_random, grouped_folds, holm, one_sided_t,
)
from recbole_lsc.device.policies import top_share

RULES = ("consistency",)


def noise_rows(seed, users=300, rows_per_user=2):
    """Each user's rows (a validation row and fresh-window rows): features that say nothing
    about the gain, and one-target labels (most 0, a few +-1)."""
    rng = np.random.default_rng(seed)
    rows = users * rows_per_user
    groups = np.repeat(rng.permutation(10 * users)[:users], rows_per_user)  # user ids, not row numbers
    columns = {"rank_displacement": rng.random(rows), "x1": rng.normal(size=rows), "x2": rng.normal(size=rows)}
    return columns, np.where(rng.random(rows) < 0.1, rng.choice([-1.0, 1.0], rows), 0.0), groups


def signal_rows(seed, users=300, rows_per_user=2):
    """As :func:`noise_rows`, but the gain is driven by ``x1``."""
    columns, _, groups = noise_rows(seed, users, rows_per_user)
    rng = np.random.default_rng(seed + 100)
    gains = np.maximum(columns["x1"], 0) + 0.1 * rng.normal(size=len(groups))
    return columns, gains, groups


# --- folds by user ---------------------------------------------------------------------------

def test_grouped_folds_never_split_a_user_and_hold_out_every_row_once_per_repeat():
    rng = np.random.default_rng(0)
    groups = np.repeat(rng.permutation(1000)[:60], rng.integers(1, 4, 60))  # 1 to 3 rows per user
    splits = list(grouped_folds(groups, 5, 3, seed=7))
    assert len(splits) == 15
    for repeat in range(3):
        held = np.concatenate([held_out for _, held_out in splits[5 * repeat:5 * repeat + 5]])
        assert np.array_equal(np.sort(held), np.arange(len(groups)))  # every row held out once per repeat
    for fit_rows, held_out in splits:
        assert not set(groups[fit_rows]) & set(groups[held_out])  # a user is all fit or all held out
        assert len(fit_rows) + len(held_out) == len(groups)
    again = list(grouped_folds(groups, 5, 3, seed=7))  # seeded
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    assert not np.array_equal(splits[0][1], splits[5][1])  # the repeats differ
    other = list(grouped_folds(groups, 5, 3, seed=8))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(splits, other))


def test_the_choice_and_the_nested_check_fold_by_user(monkeypatch):
    columns, gains, groups = signal_rows(0, users=120, rows_per_user=3)
    calls = []

    def recording(call_groups, folds, repeats, seed):
        splits = list(grouped_folds(call_groups, folds, repeats, seed))
        calls.append((np.asarray(call_groups), folds, splits))
        return iter(splits)

    monkeypatch.setattr(learned, "grouped_folds", recording)
    chosen = fit_per_budget(tuple(columns), RULES, columns, gains, (0.1, 0.2), groups=groups)
    assert all(policy.selection_gain is not None for policy in chosen.values())  # the nested check ran
    outer = [call for call in calls if len(call[0]) == len(gains) and call[1] == OUTER_FOLDS
             and len(call[2]) == OUTER_FOLDS * OUTER_REPEATS]
    assert outer and len(calls) == 2 + OUTER_FOLDS * OUTER_REPEATS  # choice, outer check, one choice per outer fit
    for call_groups, _, splits in calls:
        # the groups passed down are the users: each present user with all 3 of their rows
        assert set(np.unique(call_groups, return_counts=True)[1]) == {3}
        assert set(call_groups) <= set(groups)
        for fit_rows, held_out in splits:
            assert not set(call_groups[fit_rows]) & set(call_groups[held_out])


def test_folds_by_user_change_the_scores_and_count_users_to_fold():
    columns, gains, groups = signal_rows(1, users=100, rows_per_user=2)
    policy = LearnedRequestPolicy(tuple(columns), RULES, ratios=(0.1,))
    by_user = policy.held_out_scores(columns, gains, groups)
    by_row = policy.held_out_scores(columns, gains)
    assert set(by_user) == set(by_row)
    assert any(not np.allclose(by_user[key], by_row[key]) for key in by_user)
    # 8 users of 3 rows each: 24 rows, but fewer users than two per fold: no cross-validation
    few = {name: values[:24] for name, values in columns.items()}
    assert policy.held_out_scores(few, gains[:24], np.repeat(np.arange(8), 3)) is None


# --- the nested check ------------------------------------------------------------------------

def test_on_pure_noise_the_nested_check_falls_back_to_random_for_every_budget():
    budgets = (0.05, 0.1, 0.2)
    all_random, departures = 0, 0
    for seed in range(10):
        columns, gains, groups = noise_rows(seed)
        plain = fit_per_budget(tuple(columns), RULES, columns, gains, budgets, nested=False, groups=groups)
        departures += any(policy.choice[0] != "random" for policy in plain.values())
        checked = fit_per_budget(tuple(columns), RULES, columns, gains, budgets, groups=groups)
        all_random += all(policy.choice[0] == "random" for policy in checked.values())
        for policy in checked.values():
            assert policy.choice[0] == "random" or policy.selection_gain["p_holm"] < SELECTION_ALPHA
    # the selection alone leaves random on some noise sets (3 of 10 here); the check, at a
    # family-wise level of 0.05 per call, brings every budget back in at least 8 of 10 (all 10
    # here; 3 or more of 10 calls would have probability about 0.01 at the level itself)
    assert departures >= 2 and all_random >= 8


def test_a_gain_driven_by_one_feature_keeps_a_non_random_choice():
    columns, gains, groups = signal_rows(0)
    checked = fit_per_budget(tuple(columns), RULES, columns, gains, (0.05, 0.1, 0.2), groups=groups)
    for policy in checked.values():
        assert policy.choice[0] == "ridge" and policy.selection_gain["p_holm"] < 1e-4
        assert policy.selection_gain["mean"] > 4 * policy.selection_gain["standard_error"] > 0
        assert np.corrcoef(policy.predict(columns), columns["x1"])[0, 1] > 0.9


def test_selection_gain_is_per_user_gain_over_random():
    columns, gains, groups = signal_rows(2, users=80, rows_per_user=2)
    per_user = learned.selection_gain(tuple(columns), RULES, columns, gains, (0.1, 0.2), groups=groups)
    assert per_user.shape == (80, 2)
    # by hand: each held-out row's gain captured minus random's, averaged over the repeats, summed
    # per user; scaled by users / rows so that the mean is per fitting row
    rows = np.zeros((len(gains), 2))
    for fit_rows, held_out in grouped_folds(groups, OUTER_FOLDS, OUTER_REPEATS, 1):
        inner = fit_per_budget(tuple(columns), RULES, {n: c[fit_rows] for n, c in columns.items()}, gains[fit_rows],
                               (0.1, 0.2), nested=False, groups=groups[fit_rows])
        for index, (budget, policy) in enumerate(inner.items()):
            if policy.choice[0] != "random":
                priority = policy.predict({n: c[held_out] for n, c in columns.items()})
                kept = gains[held_out]
                share = round(budget * len(kept)) / len(kept)
                rows[held_out, index] += np.where(top_share(priority, budget), kept, 0.0) - share * kept
    users = np.unique(groups)
    expected = np.stack([rows[groups == user].sum(0) / OUTER_REPEATS for user in users]) * len(users) / len(gains)
    assert per_user == pytest.approx(expected)


def test_gain_over_random_by_hand():
    gains = np.array([0.5, -0.2, 0.0, 1.0])
    priority = np.array([3.0, 4.0, 1.0, 2.0])
    # ratio 0.5 requests users 1 and 0; random captures half of each user's gain on average
    assert gain_over_random(priority, gains, 0.5) == pytest.approx([0.25, -0.1, 0.0, -0.5])


def test_one_sided_t_matches_scipy():
    values = np.array([0.3, -0.1, 0.2, 0.05, 0.4, -0.2, 0.1])
    mean, error, p = one_sided_t(values)
    assert mean == pytest.approx(values.mean()) and error == pytest.approx(stats.sem(values))
    assert p == pytest.approx(stats.ttest_1samp(values, 0.0, alternative="greater").pvalue)
    assert one_sided_t(np.zeros(10)) == (0.0, 0.0, 1.0)  # a selection that ends at random: no evidence
    assert one_sided_t(-values)[2] > 0.5


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1: 0.03, 0.06, 0.04, made non-decreasing: 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.03]) == pytest.approx([0.03])  # one budget: no correction


def test_fit_per_budget_corrects_across_its_budgets(monkeypatch):
    columns, gains, groups = signal_rows(3, users=100)
    users = 100
    noise = np.random.default_rng(0).normal(size=users)
    noise = (noise - noise.mean()) / noise.std(ddof=1)  # mean 0, standard deviation 1

    def with_p(p):  # per-user differences whose one-sided t-test gives p
        return noise + stats.t.isf(p, users - 1) / np.sqrt(users)

    monkeypatch.setattr(learned, "selection_gain",
                        lambda *args, **kwargs: np.stack([with_p(0.03), with_p(0.4)][:len(args[4])], axis=1))
    both = fit_per_budget(tuple(columns), RULES, columns, gains, (0.1, 0.2), groups=groups)
    # raw p 0.03 and 0.4: Holm gives 0.06 and 0.4, so neither budget keeps its choice
    assert both[0.1].selection_gain["p_holm"] == pytest.approx(0.06)
    assert both[0.2].selection_gain["p_holm"] == pytest.approx(0.4)
    assert both[0.1].choice[0] == both[0.2].choice[0] == "random"
    assert both[0.1].selection_gain["mean"] == pytest.approx(with_p(0.03).mean())
    assert both[0.1].selection_gain["standard_error"] == pytest.approx(1 / np.sqrt(users))
    alone = fit_per_budget(tuple(columns), RULES, columns, gains, (0.1,), groups=groups)[0.1]
    assert alone.selection_gain["p_holm"] == pytest.approx(0.03) and alone.choice[0] == "ridge"  # a family of one


# --- degrees of freedom ----------------------------------------------------------------------

ORTHOGONAL = np.array([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])  # standardised, Z'Z = 4 I


def test_ridge_degrees_of_freedom_by_hand():
    gains = np.array([1.0, 2.0, 0.0, 3.0])
    plain = Ridge(ORTHOGONAL, gains)
    # trace(Z (Z'Z + l2 I)^-1 Z') = 2 * 4 / (4 + l2)
    assert plain.df(4.0) == pytest.approx(1.0) and plain.df(12.0) == pytest.approx(0.5)
    # a ranking ignores scale: every penalty orders users by Z'y here, 2 directions
    assert plain.ranking_df(4.0) == pytest.approx(2.0) and plain.ranking_df(1e6) == pytest.approx(2.0)
    # shrunk towards x0's own slope: x0 keeps n / (n + l2) + l2 / (n + l2) = 1, x1 has 4 / 8
    prior = Ridge(ORTHOGONAL, gains, prior_column=0)
    assert prior.df(4.0) == pytest.approx(1.5) and prior.ranking_df(4.0) == pytest.approx(1.5)
    assert prior.ranking_df(1e9) == pytest.approx(1.0, abs=1e-6)  # the rule's feature alone
    assert prior.ranking_df(0.0) == pytest.approx(2.0)  # no shrinkage: least squares


def test_degrees_of_freedom_are_the_trace_of_the_fit_map():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
    gains = rng.normal(size=30)
    for prior_column in (None, 1):
        ridge = Ridge(features, gains, prior_column)
        design = ridge.design(features)
        for l2 in (0.5, 30.0, 1e4):
            if prior_column is None:  # the textbook formula, intercept excluded
                penalty = l2 * np.diag([0.0, 1.0, 1.0, 1.0])
                hat = design @ np.linalg.solve(design.T @ design + penalty, design.T)
                assert ridge.df(l2) == pytest.approx(np.trace(hat) - 1.0)
            # d(fitted) / d(gains): linear in the gains, the prior's slope included
            fit_map = np.stack([design @ Ridge(features, unit, prior_column).weights(l2) for unit in np.eye(30)], 1)
            centred = fit_map - fit_map.mean(0)  # the intercept's share
            assert ridge.df(l2) == pytest.approx(np.trace(centred), rel=1e-6)
            singular = np.linalg.norm(centred, 2)
            assert ridge.ranking_df(l2) == pytest.approx(np.trace(centred) / singular, rel=1e-6)


def test_a_heavy_penalty_does_not_make_a_ranking_simpler():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(200, 3))
    gains = features @ np.array([0.3, -0.2, 0.1]) + rng.normal(size=200)
    light, heavy = (Ridge(features, gains).weights(l2) for l2 in (1.0, 1e6))
    assert np.abs(heavy[1:]).max() < 1e-3 < np.abs(light[1:]).min()  # tiny weights ...
    design = Ridge(features, gains).design(features)
    order = np.corrcoef(stats.rankdata(design @ light), stats.rankdata(design @ heavy))[0, 1]
    assert order > 0.95  # ... the same ranking on every feature
    ridge = Ridge(features, gains)
    assert ridge.df(1e6) < 0.01 and ridge.ranking_df(1e6) > 2.5  # regression df says 0, the ranking ~3


def test_one_standard_error_rule_prefers_the_ridge_ranking_on_fewer_directions():
    rng = np.random.default_rng(0)
    columns = {"rank_displacement": rng.random(300), "x1": rng.normal(size=300), "x2": rng.normal(size=300)}
    gains = rng.normal(size=300)
    policy = LearnedRequestPolicy(tuple(columns), RULES, ratios=(0.1,))
    ranking_df = policy._ranking_df(columns, gains)
    heavy, light = ("ridge", "none", 1e6), ("ridge", "consistency", 1e3)
    assert ranking_df[light] < 1.6 < 2.5 < ranking_df[heavy]
    tie = np.array([0.1, 0.12, 0.11, 0.1, 0.13])  # equal fold scores
    assert policy._one_standard_error_choice({heavy: tie, light: tie}, ranking_df) == light  # not the heavier penalty
    assert min(ranking_df, key=ranking_df.get) == ("ridge", "consistency", L2_GRID[-1])
    every_ridge = {key: tie for key in ranking_df}
    assert policy._one_standard_error_choice(every_ridge, ranking_df) == ("ridge", "consistency", L2_GRID[-1])
    # the kinds come first: a rule (1 feature) before any ridge, random before a rule
    rule, rand = ("rule", "consistency", None), ("random", None, None)
    assert policy._one_standard_error_choice({**every_ridge, rule: tie}, ranking_df) == rule
    assert policy._one_standard_error_choice({**every_ridge, rule: tie, rand: tie}, ranking_df) == rand
    # fit records the ranking degrees of freedom it compared
    fitted = LearnedRequestPolicy(tuple(columns), RULES, ratios=(0.1,)).fit(columns, gains)
    assert fitted.ranking_df["ridge/none/1000000.0"] == pytest.approx(ranking_df[heavy])
