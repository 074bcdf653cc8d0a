"""RecBole's ``HyperTuning``, made to run with hyperopt >= 0.2.7 and to repeat itself.

Two changes, both outside RecBole's trial bookkeeping (``HyperTuning.trial`` is used as is):

* ``--algo exhaustive``: RecBole's ``exhaustive_search`` samples the grid with a
  ``numpy.random.RandomState``, which hyperopt's samplers no longer accept since they moved to
  ``numpy.random.Generator`` (``AttributeError: ... has no attribute 'integers'``). The grid is
  small and known, so :func:`grid_suggest` hands hyperopt its points in file order instead:
  every combination once, no random re-draws, the same order on every run.
* ``HyperTuning.run`` calls ``fmin`` without ``rstate``, so random and bayes searches draw other
  points on every run; :class:`Tuning` passes a generator seeded by ``--search_seed``.
"""

import numpy as np
from recbole.trainer.hyper_tuning import HyperTuning

try:  # the optional `tune` extra
    from hyperopt import fmin
    from hyperopt.base import miscs_update_idxs_vals
except ModuleNotFoundError:
    fmin = miscs_update_idxs_vals = None

# RecBole's default patience of random and bayes searches (trials without a better score)
EARLY_STOP = 10


def grid_suggest(names, points):
    """A hyperopt ``algo`` proposing ``points`` (tuples of choice indexes of ``names``) in order;
    it proposes nothing once every point was tried, which ends ``fmin``."""
    def suggest(new_ids, domain, trials, seed):
        docs = []
        for new_id in new_ids:
            done = len(trials.trials) + len(docs)
            if done >= len(points):
                break
            misc = {"tid": new_id, "cmd": domain.cmd, "workdir": domain.workdir}
            miscs_update_idxs_vals([misc], {name: [new_id] for name in names},
                                   {name: [index] for name, index in zip(names, points[done])})
            docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
        return docs
    return suggest


class Tuning(HyperTuning):
    """``HyperTuning`` with a seeded ``fmin`` and the grid of :func:`grid_suggest` for ``exhaustive``.

    ``early_stop`` 0 never stops early; None takes RecBole's 10 for random and bayes and runs
    the whole grid for exhaustive.
    """

    def __init__(self, objective, space, config_files, algo, max_evals, early_stop, seed, grid_points=()):
        if algo == "exhaustive":
            size = len(grid_points)
            algo, max_evals = grid_suggest(list(space), grid_points), min(max_evals or size, size)
            early_stop = 0 if early_stop is None else early_stop
        patience = EARLY_STOP if early_stop is None else early_stop
        super().__init__(objective, space=space, fixed_config_file_list=config_files, algo=algo,
                         max_evals=max_evals or 100, early_stop=max(patience, 1))
        self.early_stop_fn = self.early_stop_fn if patience else None
        self.seed = seed

    def run(self):
        fmin(self.trial, self.space, algo=self.algo, max_evals=self.max_evals, early_stop_fn=self.early_stop_fn,
             rstate=np.random.default_rng(self.seed), show_progressbar=False)
