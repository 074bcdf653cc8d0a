"""The learned request policy (docs/method.md, "Request").

Labels are sparse and noisy (one target per simulated request), so the policy is chosen, not
just fit: repeated k-fold cross-validation on the fitting users compares ridge regressions of
the gain on every feature (shrunk towards zero or towards one rule's feature, for every
penalty of ``L2_GRID``), every rule alone, and random, by the gain their held-out top shares
capture at ``ratios``. The simplest candidate within one standard error of the best is refit on
all users (the one-standard-error rule; simplest: random, then a rule, then ridge with the
stronger penalty): a lead smaller than the folds' noise does not buy a more complex policy. So
the policy falls back to the best validated rule, or to random, when nothing clearly beats it.
:func:`fit_per_budget` makes that choice once per request budget, on shared folds, and then
checks it: the best of up to 32 candidates looks better than random on the folds that chose it
even when no feature predicts the gain, so the whole selection is rerun inside outer folds and
scored on the users it never saw (nested cross-validation). A budget whose selection does not
beat random there by more than one standard error requests at random: the same rule as the
choice's own, applied to the estimate that the choosing did not bias.
"""

import numpy as np
from sklearn.model_selection import RepeatedKFold

from recbole_lsc.device.features import feature_matrix
from recbole_lsc.device.policies import rule_score, top_share

L2_GRID = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
OUTER_FOLDS, OUTER_REPEATS = 5, 2  # the nested check of the selection (``selection_gain``)
# the feature a ridge fit may be shrunk towards, per rule
PRIOR_FEATURE = {"consistency": "rank_displacement", "top1_missing": "srm_top1_in_list", "regret": "expected_regret"}


def captured_gain(priority, gains, ratios):
    """Gain per user won by requesting the top-priority share, per ratio of ``ratios`` (an array)."""
    return np.array([gains[top_share(priority, ratio)].sum() / len(gains) for ratio in ratios])


def random_gain(gains, ratios):
    """The gain per user that random requests capture on average, per ratio of ``ratios``."""
    return np.array([round(ratio * len(gains)) / len(gains) * gains.mean() for ratio in ratios])


class Ridge:
    """Ridge regression on standardised features, shrunk towards ``prior`` weights."""

    def __init__(self, features, gains, prior_column=None):
        self.mean, self.scale = features.mean(0), features.std(0) + 1e-9
        design = self.design(features)
        self.prior = np.zeros(design.shape[1])
        if prior_column is not None:  # slope of the gain on the standardised prior feature alone
            column = design[:, 1 + prior_column]
            self.prior[1 + prior_column] = column @ (gains - gains.mean()) / max(column @ column, 1e-12)
        self.gram, self.moment = design.T @ design, design.T @ gains

    def design(self, features):
        """An intercept column and the standardised features."""
        return np.c_[np.ones(len(features)), (features - self.mean) / self.scale]

    def weights(self, l2):
        penalty = l2 * np.eye(len(self.gram))
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        return np.linalg.solve(self.gram + penalty, self.moment + penalty @ self.prior)


class LearnedRequestPolicy:
    """A request priority learned from ``names`` feature columns (see the module docstring).

    Args:
        names: the feature columns it reads (what the device holds).
        rules: rule policies it may fall back to or shrink towards (their features among ``names``).
        l2: a fixed ridge penalty (no selection: ridge without prior); None selects by cross-validation.
        ratios: the request budgets whose captured gain, averaged, scores a candidate.
    """

    def __init__(self, names, rules=(), l2=None, ratios=(0.05, 0.1, 0.2), folds=5, repeats=4, seed=0):
        self.names, self.rules, self.l2 = tuple(names), tuple(rules), l2
        self.ratios, self.folds, self.repeats, self.seed = tuple(ratios), folds, repeats, seed
        self.choice, self.cv_scores, self.weights, self._ridge = None, {}, None, None
        self.selection_gain = None  # (mean, standard error) of the nested check, when it ran

    def _priors(self):
        return {"none": None, **{rule: self.names.index(PRIOR_FEATURE[rule]) for rule in self.rules}}

    def held_out_scores(self, columns, gains):
        """Captured gain of every candidate per held-out fold and ratio of ``ratios``:
        ``{candidate: array [folds, ratios]}``; None when there are too few users to fold."""
        features, gains = feature_matrix(columns, self.names), np.asarray(gains, dtype=np.float64)
        if len(gains) < 2 * self.folds:
            return None
        folds = RepeatedKFold(n_splits=self.folds, n_repeats=self.repeats, random_state=self.seed)
        scores = {}
        for fit_rows, held_out in folds.split(features):
            kept = gains[held_out]
            for prior, column in self._priors().items():
                ridge = Ridge(features[fit_rows], gains[fit_rows], column)
                design = ridge.design(features[held_out])
                for l2 in L2_GRID:
                    scores.setdefault(("ridge", prior, l2), []).append(
                        captured_gain(design @ ridge.weights(l2), kept, self.ratios))
            for rule in self.rules:
                scores.setdefault(("rule", rule, None), []).append(
                    captured_gain(rule_score(rule, {n: c[held_out] for n, c in columns.items()}), kept, self.ratios))
            scores.setdefault(("random", None, None), []).append(random_gain(kept, self.ratios))
        return {candidate: np.asarray(values) for candidate, values in scores.items()}

    def _one_standard_error_choice(self, scored):
        """The simplest candidate whose mean held-out gain is within one standard error of the
        best's. The error is that of the paired fold differences to the best, counting one
        repeat's folds as independent (the repeats reuse the same users)."""
        means = {key: values.mean() for key, values in scored.items()}
        best = scored[max(means, key=means.get)]

        def within_one_error(key):
            gap = best - scored[key]
            return gap.mean() <= gap.std(ddof=1) / np.sqrt(self.folds) + 1e-12

        simplest = {"random": 0, "rule": 1, "ridge": 2}
        return min((key for key in scored if within_one_error(key)), key=lambda key: (simplest[key[0]], -(key[2] or 0)))

    def choose(self, columns, gains, scored):
        """Choose among the fold scores ``scored`` (``{candidate: array over folds}``; None: too
        few users, the most-penalised ridge) and refit the choice on all users."""
        if self.l2 is not None:
            self.choice = ("ridge", "none", self.l2)
        elif scored is None:
            self.choice = ("ridge", "none", L2_GRID[-1])
        else:
            self.cv_scores = {"/".join(str(part) for part in key if part is not None): float(values.mean())
                              for key, values in scored.items()}
            self.choice = self._one_standard_error_choice(scored)
        kind, prior, l2 = self.choice
        if kind == "ridge":
            self._ridge = Ridge(feature_matrix(columns, self.names), np.asarray(gains, dtype=np.float64),
                                self._priors()[prior])
            self.weights = self._ridge.weights(l2)
        return self

    def fit(self, columns, gains):
        """Choose and fit on named ``columns`` (arrays over users) and each user's gain."""
        scored = None if self.l2 is not None else self.held_out_scores(columns, gains)
        return self.choose(columns, gains, None if scored is None else
                           {key: values.mean(1) for key, values in scored.items()})

    def fall_back_to_random(self):
        """Request at random (the caller's jitter decides); the scores that led elsewhere stay."""
        self.choice, self.weights, self._ridge = ("random", None, None), None, None
        return self

    @property
    def description(self):
        """``ridge/<prior>/<l2>``, ``rule/<rule>`` or ``random``: what was chosen."""
        return "/".join(str(part) for part in self.choice if part is not None)

    def to_dict(self):
        """What a device needs to apply the fitted policy (JSON-serialisable; floats round-trip)."""
        if self.choice is None:
            raise RuntimeError("LearnedRequestPolicy.to_dict called before fit")
        kind, name, l2 = self.choice
        state = {"names": list(self.names), "rules": list(self.rules), "choice": [kind, name, l2]}
        if kind == "ridge":
            state.update(mean=self._ridge.mean.tolist(), scale=self._ridge.scale.tolist(),
                         weights=self.weights.tolist())
        return state

    @classmethod
    def from_dict(cls, state):
        """The fitted policy of :meth:`to_dict` (no refit: the device applies what the cloud chose)."""
        policy = cls(state["names"], state["rules"])
        policy.choice = tuple(state["choice"])
        if policy.choice[0] == "ridge":
            ridge = Ridge.__new__(Ridge)
            ridge.mean, ridge.scale = np.asarray(state["mean"]), np.asarray(state["scale"])
            policy._ridge, policy.weights = ridge, np.asarray(state["weights"])
        return policy

    def predict(self, columns):
        if self.choice is None:
            raise RuntimeError("LearnedRequestPolicy.predict called before fit")
        kind, rule, _ = self.choice
        if kind == "ridge":
            return self._ridge.design(feature_matrix(columns, self.names)) @ self.weights
        if kind == "rule":
            return rule_score(rule, columns)
        return np.zeros(len(next(iter(columns.values()))))  # random: the caller's jitter decides


def fit_per_budget(names, rules, columns, gains, budgets, nested=True):
    """One learned policy per request budget of ``budgets``, each chosen by its own captured
    gain on the same folds (the ridge fits are shared).

    A device runs at one budget, and which policy is best depends on it: the users a rule
    singles out at rho 0.2 need not be the few who gain most at rho 0.05, and a score averaged
    over budgets weighs the largest one most (captured gain grows with the share requested).
    With ``nested``, a budget whose selection does not beat random on users it never saw
    (:func:`selection_gain`) by more than one standard error requests at random.
    """
    budgets = tuple(budgets)
    scored = LearnedRequestPolicy(names, rules, ratios=budgets).held_out_scores(columns, gains)
    chosen = {budget: LearnedRequestPolicy(names, rules, ratios=(budget,)).choose(
                  columns, gains, None if scored is None else {key: values[:, index] for key, values in scored.items()})
              for index, budget in enumerate(budgets)}
    if nested and scored is not None and any(policy.choice[0] != "random" for policy in chosen.values()):
        gaps = selection_gain(names, rules, columns, gains, budgets)
        for index, policy in enumerate(chosen.values()):
            # one repeat's folds counted as independent, as in the choice's own error
            mean, error = gaps[:, index].mean(), gaps[:, index].std(ddof=1) / np.sqrt(OUTER_FOLDS)
            policy.selection_gain = (float(mean), float(error))
            if mean <= error:
                policy.fall_back_to_random()
    return chosen


def selection_gain(names, rules, columns, gains, budgets, seed=1):
    """Captured gain minus random's on held-out users of the policies :func:`fit_per_budget`
    selects without them: ``[OUTER_FOLDS * OUTER_REPEATS, budgets]``.

    It estimates what the selection procedure (not one candidate) is worth out of sample; a
    selection that ends at random is worth exactly random's expectation (gap 0).
    """
    gains = np.asarray(gains, dtype=np.float64)
    outer = RepeatedKFold(n_splits=OUTER_FOLDS, n_repeats=OUTER_REPEATS, random_state=seed)
    gaps = []
    for fit_rows, held_out in outer.split(gains.reshape(-1, 1)):
        inner = fit_per_budget(names, rules, {n: c[fit_rows] for n, c in columns.items()}, gains[fit_rows], budgets,
                               nested=False)
        held_columns, kept = {n: c[held_out] for n, c in columns.items()}, gains[held_out]
        gaps.append([0.0 if policy.choice[0] == "random" else
                     (captured_gain(policy.predict(held_columns), kept, (budget,)) - random_gain(kept, (budget,)))[0]
                     for budget, policy in inner.items()])
    return np.asarray(gaps)
