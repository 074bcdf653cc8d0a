"""The learned request policy (docs/method.md, "Request").

Labels are sparse and noisy (one target per simulated request), so the policy is chosen, not
just fit, and the choice is checked before it is kept.

* **Folds by user.** The fitting rows are each validation user's row and that user's
  fresh-window rows, so every fold here (:func:`grouped_folds`) holds out whole users: a user's
  rows are all fit or all held out, and no user's other requests inform the score of their own.
* **Choice.** Repeated grouped k-fold cross-validation on the fitting users compares ridge
  regressions of the gain on every feature (shrunk towards zero or towards one rule's feature,
  for every penalty of ``L2_GRID``), every rule alone, and random, by the gain their held-out top
  shares capture at ``ratios``. The simplest candidate within one standard error of the best is
  refit on all users (the one-standard-error rule): random, then a rule, then the ridge whose
  ranking has the fewest effective degrees of freedom (:meth:`Ridge.ranking_df`). A ranking
  ignores the scale of the priority, so a ridge's complexity is the trace of its linear map from
  gains to fitted priorities on the standardised design (the usual effective degrees of freedom,
  intercept excluded) divided by that map's largest singular value: a ridge shrunk hard towards
  zero still ranks on every feature (its weights tend to the direction of X'y) and counts as
  about as many directions as the design has, while one shrunk hard towards a rule's feature
  tends to that feature alone (1). A lead smaller than the folds' noise does not buy a more
  complex policy, so the policy falls back to the best validated rule, or to random, when
  nothing clearly beats it.
* **Check.** :func:`fit_per_budget` makes that choice once per request budget, on shared folds,
  and then tests it: the best of up to 32 candidates looks better than random on the folds that
  chose it even when no feature predicts the gain. So the whole selection is rerun inside outer
  grouped folds (``OUTER_FOLDS``, ``OUTER_REPEATS``) and scored on the users it never saw
  (:func:`selection_gain`): each held-out user's gain captured by the inner selection's policy
  minus random's expectation for that user, averaged over the repeats so that each user counts
  once. Per budget, a one-sided paired t-test over these users asks whether the mean difference
  is above zero; Holm's correction runs across the budgets of the call, and a budget keeps its
  choice only if its corrected p is below ``SELECTION_ALPHA``, else it requests at random. When
  no policy beats random out of sample, the probability, per call, that any budget keeps a
  non-random choice is thus at most ``SELECTION_ALPHA`` (family-wise), up to the t-test's normal
  approximation and the dependence that shared inner selections induce between users.
"""

import numpy as np
from scipy import stats
from sklearn.model_selection import GroupKFold

from recbole_lsc.device.features import feature_matrix
from recbole_lsc.device.policies import rule_score, top_share

L2_GRID = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
OUTER_FOLDS, OUTER_REPEATS = 5, 2  # the nested check of the selection (``selection_gain``)
SELECTION_ALPHA = 0.05  # family-wise level of the nested check, across the budgets of one call
SIMPLEST = {"random": 0, "rule": 1, "ridge": 2}  # the one-standard-error rule's order of kinds
# the feature a ridge fit may be shrunk towards, per rule
PRIOR_FEATURE = {"consistency": "rank_displacement", "top1_missing": "srm_top1_in_list", "regret": "expected_regret"}


def user_groups(groups, rows):
    """Each row's user: ``groups``, or one user per row when None."""
    groups = np.arange(rows) if groups is None else np.asarray(groups)
    if len(groups) != rows:
        raise ValueError(f"{len(groups)} user ids for {rows} rows")
    return groups


def grouped_folds(groups, folds, repeats, seed):
    """(fit rows, held-out rows) of ``repeats`` ``folds``-fold splits by user: a user's rows
    (same value of ``groups``) are never split between the two. Each repeat relabels the users
    by a permutation drawn from ``seed`` before :class:`~sklearn.model_selection.GroupKFold`
    balances the folds' rows, so repeats differ and the folds are reproducible."""
    _, users = np.unique(np.asarray(groups), return_inverse=True)
    users = users.reshape(-1)
    rng, splitter = np.random.default_rng(seed), GroupKFold(n_splits=folds)
    for _ in range(repeats):
        yield from splitter.split(users.reshape(-1, 1), groups=rng.permutation(users.max() + 1)[users])


def captured_gain(priority, gains, ratios):
    """Gain per user won by requesting the top-priority share, per ratio of ``ratios`` (an array)."""
    return np.array([gains[top_share(priority, ratio)].sum() / len(gains) for ratio in ratios])


def random_gain(gains, ratios):
    """The gain per user that random requests capture on average, per ratio of ``ratios``."""
    return np.array([round(ratio * len(gains)) / len(gains) * gains.mean() for ratio in ratios])


def gain_over_random(priority, gains, ratio):
    """Per row: its gain if in the top share ``ratio`` by ``priority`` (else 0), minus what
    random requests capture from it on average (the same share of its gain). The mean over rows
    is ``captured_gain - random_gain``."""
    return gains * top_share(priority, ratio) - round(ratio * len(gains)) / len(gains) * gains


def holm(pvalues):
    """Holm's step-down adjusted p-values (same order as ``pvalues``): the i-th smallest of m is
    multiplied by m - i + 1, made non-decreasing in that order, and capped at 1."""
    pvalues = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(len(pvalues))
    adjusted[order] = np.minimum(np.maximum.accumulate((len(pvalues) - np.arange(len(pvalues))) * pvalues[order]), 1.0)
    return adjusted


def one_sided_t(differences):
    """Mean, standard error and the one-sided p-value of a t-test that the mean of
    ``differences`` (one value per user) is above zero; no spread: p 0 if the mean is positive, else 1."""
    differences = np.asarray(differences, dtype=np.float64)
    mean = differences.mean()
    error = differences.std(ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else 0.0
    if error <= 1e-15 * max(1.0, abs(mean)):
        return float(mean), float(error), 0.0 if mean > 0 else 1.0
    return float(mean), float(error), float(stats.t.sf(mean / error, len(differences) - 1))


class Ridge:
    """Ridge regression on standardised features, shrunk towards ``prior`` weights."""

    def __init__(self, features, gains, prior_column=None):
        self.mean, self.scale = features.mean(0), features.std(0) + 1e-9
        design = self.design(features)
        self.prior, self.prior_column = np.zeros(design.shape[1]), prior_column
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

    def _smoother(self, l2):
        """The nonzero block of the linear map S from gains to fitted priorities, with the
        intercept left out (the standardised columns Z are centred, so it separates):
        S = Z (Z'Z + l2 I)^-1 D Z', where D adds the prior's slope (D = I without prior). With
        Z = U s V', S = U K U' for K = s V' (Z'Z + l2 I)^-1 D V s, returned."""
        gram = self.gram[1:, 1:]
        mix = np.eye(len(gram))
        if self.prior_column is not None:  # the prior weight is z_k'y / z_k'z_k, linear in the gains
            mix[self.prior_column, self.prior_column] += l2 / max(gram[self.prior_column, self.prior_column], 1e-12)
        spectrum, basis = np.linalg.eigh(gram)
        root = np.sqrt(np.clip(spectrum, 0.0, None))
        inner = basis.T @ np.linalg.solve(gram + l2 * np.eye(len(gram)), mix) @ basis
        return root[:, None] * inner * root[None, :]

    def df(self, l2):
        """Effective degrees of freedom at penalty ``l2``: trace(S), the intercept excluded
        (without prior: trace(Z (Z'Z + l2 I)^-1 Z'); a prior's slope adds up to 1)."""
        return float(np.trace(self._smoother(l2)))

    def ranking_df(self, l2):
        """The degrees of freedom of the ranking the fit produces: trace(S) over S's largest
        singular value, invariant to the priority's scale as a ranking is (a projection on k
        directions counts k; 0 for a fit that ranks on nothing)."""
        smoother = self._smoother(l2)
        largest = np.linalg.norm(smoother, 2)
        return float(np.trace(smoother) / largest) if largest > 1e-12 else 0.0


class LearnedRequestPolicy:
    """A request priority learned from ``names`` feature columns (see the module docstring).

    Args:
        names: the feature columns it reads (what the device holds).
        rules: rule policies it may fall back to or shrink towards (their features among ``names``).
        l2: a fixed ridge penalty (no selection: ridge without prior); None selects by cross-validation.
        ratios: the request budgets whose captured gain, averaged, scores a candidate.
        folds, repeats, seed: the repeated grouped k-fold cross-validation (:func:`grouped_folds`).
    """

    def __init__(self, names, rules=(), l2=None, ratios=(0.05, 0.1, 0.2), folds=5, repeats=4, seed=0):
        self.names, self.rules, self.l2 = tuple(names), tuple(rules), l2
        self.ratios, self.folds, self.repeats, self.seed = tuple(ratios), folds, repeats, seed
        self.choice, self.cv_scores, self.weights, self._ridge = None, {}, None, None
        self.ranking_df = {}  # ``{candidate description: ranking degrees of freedom}`` of the ridges compared
        # the nested check, when it ran: {"mean", "standard_error", "p_holm"} (see ``fit_per_budget``)
        self.selection_gain = None

    def _priors(self):
        return {"none": None, **{rule: self.names.index(PRIOR_FEATURE[rule]) for rule in self.rules}}

    def held_out_scores(self, columns, gains, groups=None):
        """Captured gain of every candidate per held-out fold and ratio of ``ratios``:
        ``{candidate: array [folds, ratios]}``, on folds grouped by ``groups`` (each row's user;
        None: a user per row); None when there are too few users to fold."""
        features, gains = feature_matrix(columns, self.names), np.asarray(gains, dtype=np.float64)
        groups = user_groups(groups, len(gains))
        if len(np.unique(groups)) < 2 * self.folds:
            return None
        scores = {}
        for fit_rows, held_out in grouped_folds(groups, self.folds, self.repeats, self.seed):
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

    def _one_standard_error_choice(self, scored, ranking_df):
        """The simplest candidate whose mean held-out gain is within one standard error of the
        best's: random, then a rule, then the ridge with the fewest ranking degrees of freedom
        (``ranking_df``: ``{candidate: df}``; then the larger penalty). The error is that of the
        paired fold differences to the best, counting one repeat's folds as independent (the
        repeats reuse the same users)."""
        means = {key: values.mean() for key, values in scored.items()}
        best = scored[max(means, key=means.get)]

        def within_one_error(key):
            gap = best - scored[key]
            return gap.mean() <= gap.std(ddof=1) / np.sqrt(self.folds) + 1e-12

        def complexity(key):
            kind, _, l2 = key
            return SIMPLEST[kind], round(ranking_df[key], 9) if kind == "ridge" else 0.0, -(l2 or 0)

        return min((key for key in scored if within_one_error(key)), key=complexity)

    def _ranking_df(self, columns, gains):
        """``{ridge candidate: ranking degrees of freedom}`` of the refits on all users."""
        features = feature_matrix(columns, self.names)
        ridges = {prior: Ridge(features, gains, column) for prior, column in self._priors().items()}
        return {("ridge", prior, l2): ridge.ranking_df(l2) for prior, ridge in ridges.items() for l2 in L2_GRID}

    def choose(self, columns, gains, scored):
        """Choose among the fold scores ``scored`` (``{candidate: array over folds}``; None: too
        few users, the most-penalised ridge) and refit the choice on all users."""
        gains = np.asarray(gains, dtype=np.float64)
        if self.l2 is not None:
            self.choice = ("ridge", "none", self.l2)
        elif scored is None:
            self.choice = ("ridge", "none", L2_GRID[-1])
        else:
            self.cv_scores = {describe(key): float(values.mean()) for key, values in scored.items()}
            complexity = self._ranking_df(columns, gains)
            self.ranking_df = {describe(key): value for key, value in complexity.items()}
            self.choice = self._one_standard_error_choice(scored, complexity)
        kind, prior, l2 = self.choice
        if kind == "ridge":
            self._ridge = Ridge(feature_matrix(columns, self.names), gains, self._priors()[prior])
            self.weights = self._ridge.weights(l2)
        return self

    def fit(self, columns, gains, groups=None):
        """Choose and fit on named ``columns`` (arrays over rows), each row's gain and user
        (``groups``; None: a user per row)."""
        scored = None if self.l2 is not None else self.held_out_scores(columns, gains, groups)
        return self.choose(columns, gains, None if scored is None else
                           {key: values.mean(1) for key, values in scored.items()})

    def fall_back_to_random(self):
        """Request at random (the caller's jitter decides); the scores that led elsewhere stay."""
        self.choice, self.weights, self._ridge = ("random", None, None), None, None
        return self

    @property
    def description(self):
        """``ridge/<prior>/<l2>``, ``rule/<rule>`` or ``random``: what was chosen."""
        return describe(self.choice)

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


def describe(candidate):
    """``ridge/<prior>/<l2>``, ``rule/<rule>`` or ``random``."""
    return "/".join(str(part) for part in candidate if part is not None)


def fit_per_budget(names, rules, columns, gains, budgets, nested=True, groups=None):
    """One learned policy per request budget of ``budgets``, each chosen by its own captured
    gain on the same folds grouped by user (``groups``: each row's user; None: a user per row;
    the ridge fits are shared).

    A device runs at one budget, and which policy is best depends on it: the users a rule
    singles out at rho 0.2 need not be the few who gain most at rho 0.05, and a score averaged
    over budgets weighs the largest one most (captured gain grows with the share requested).
    With ``nested`` (and some budget's choice other than random), every budget gets the nested
    check: :func:`selection_gain` per held-out user, a one-sided paired t-test over users that
    its mean is above zero, Holm's correction across ``budgets``; a budget whose corrected p is
    not below ``SELECTION_ALPHA`` requests at random. ``selection_gain`` of each policy records
    ``{"mean", "standard_error", "p_holm"}`` (mean and error per fitting row, as the cv scores).
    """
    budgets, gains = tuple(budgets), np.asarray(gains, dtype=np.float64)
    groups = user_groups(groups, len(gains))
    scored = LearnedRequestPolicy(names, rules, ratios=budgets).held_out_scores(columns, gains, groups)
    chosen = {budget: LearnedRequestPolicy(names, rules, ratios=(budget,)).choose(
                  columns, gains, None if scored is None else {key: values[:, index] for key, values in scored.items()})
              for index, budget in enumerate(budgets)}
    if nested and scored is not None and any(policy.choice[0] != "random" for policy in chosen.values()):
        per_user = selection_gain(names, rules, columns, gains, budgets, groups=groups)
        tests = [one_sided_t(per_user[:, index]) for index in range(len(budgets))]
        corrected = holm([p for _, _, p in tests])
        for policy, (mean, error, _), p_holm in zip(chosen.values(), tests, corrected):
            policy.selection_gain = {"mean": mean, "standard_error": error, "p_holm": float(p_holm)}
            if not p_holm < SELECTION_ALPHA:
                policy.fall_back_to_random()
    return chosen


def selection_gain(names, rules, columns, gains, budgets, seed=1, groups=None):
    """What the selection of :func:`fit_per_budget` captures over random on users it never saw:
    ``[users, budgets]``, users in the order of their sorted ids (``groups``; None: a user per row).

    The selection (without the check) is rerun on every outer fit part of ``OUTER_REPEATS``
    grouped ``OUTER_FOLDS``-fold splits, and each held-out row scored by
    :func:`gain_over_random` within its fold; a row's values are averaged over the repeats and
    summed over the user's rows, so each user counts once. The values are scaled by users / rows,
    so their mean is the gain over random per fitting row. A selection that ends at random is worth
    exactly random's expectation (0).
    """
    gains = np.asarray(gains, dtype=np.float64)
    groups = user_groups(groups, len(gains))
    rows = np.zeros((len(gains), len(budgets)))
    for fit_rows, held_out in grouped_folds(groups, OUTER_FOLDS, OUTER_REPEATS, seed):
        inner = fit_per_budget(names, rules, {n: c[fit_rows] for n, c in columns.items()}, gains[fit_rows], budgets,
                               nested=False, groups=groups[fit_rows])
        held_columns, kept = {n: c[held_out] for n, c in columns.items()}, gains[held_out]
        for index, (budget, policy) in enumerate(inner.items()):
            if policy.choice[0] != "random":
                rows[held_out, index] += gain_over_random(policy.predict(held_columns), kept, budget)
    users, user_of_row = np.unique(groups, return_inverse=True)
    per_user = np.zeros((len(users), len(budgets)))
    np.add.at(per_user, user_of_row.reshape(-1), rows / OUTER_REPEATS)
    return per_user * len(users) / len(gains)
