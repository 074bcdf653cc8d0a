"""The learned request policy: ridge regression from device-side features to the gain of a
fresh list, fit on validation users only (docs/method.md, "Request")."""

import numpy as np
from sklearn.model_selection import RepeatedKFold

from recbole_lsc.device.policies import top_share

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


