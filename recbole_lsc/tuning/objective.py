"""The objective RecBole's ``HyperTuning`` calls: one trial is one ordinary run of the plugin.

``Objective(config_dict, config_file_list)`` runs ``run_recbole_lsc`` with the trial's values
as ``config_dict`` (the command line's ``--key=value`` still win, and a tuned key may not also
be given there: the params file refuses that) and returns RecBole's result dict (``model``,
``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``).

Which row of a run is the model's score (:func:`scored_row`):

* a RecBole model: its one ``srm`` row (the best epoch's validation, test at that epoch, as
  RecBole's own ``objective_function``);
* ``LLMRec``: the ``llm_<llm_select_on>`` row, the history view its epoch is selected on;
* ``LSC4Rec``: the first ``lsc4rec`` row, the final LSC4Rec of the first ``device_catalogue`` x
  ``retrain_scope`` setting (``LSC4Rec (candidates)`` with the default yaml): fusion plus the
  configured request policy at ``request_ratio``, after cooperative training and re-training.
  The srm, LLM-alone and ablation rows of the same run are baselines, never the score.

``--row=NAME`` picks another row by name. The score is the row's validation value of
``valid_metric``; the test metrics are only reported. Each trial writes its run folder as
``<out>/trial-NNN`` (its own ``results.json``); the trained-LLM and SRM stores are the usual
ones, so trials that change only device keys (``fusion_alpha``, ``candidate_num``, request or
re-training keys) load the same trained cloud and device SRMs instead of training them again.
"""

import numpy as np

from recbole_lsc.errors import ConfigError
from recbole_lsc.quick_start import run_recbole_lsc


def plain(value):
    """A hyperopt sample as JSON-ready Python values (numpy scalars to numbers, tuples to lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def scored_row(rows, config, name=None):
    """The row whose validation score is the trial's (see the module docstring)."""
    if name is not None:
        wanted = lambda row: row["name"] == name  # noqa: E731
    elif config["model"] == "LSC4Rec":
        wanted = lambda row: row["role"] == "lsc4rec"  # noqa: E731
    elif config["model"] == "LLMRec":
        wanted = lambda row: row["role"] == f"llm_{config['llm_select_on']}"  # noqa: E731
    else:
        wanted = lambda row: row["role"] == "srm"  # noqa: E731
    for row in rows:
        if wanted(row):
            return row
    names = ", ".join(f"'{row['name']}'" for row in rows)
    raise ConfigError(f"--row='{name}' is not a row of this run; use one of {names}")


class Objective:
    """RecBole's ``objective_function`` for the parameters ``names``; keeps every trial's record
    in :attr:`trials`."""

    def __init__(self, model, dataset, overrides, out_dir, names, row=None):
        self.model, self.dataset, self.overrides = model, dataset, list(overrides)
        self.names = list(names)  # the params file's order (hyperopt hands them over sorted)
        self.out_dir, self.row = out_dir, row
        self.trials = []

    def __call__(self, config_dict, config_file_list):
        number = len(self.trials) + 1
        params = {name: plain(config_dict[name]) for name in self.names}
        where = [f"--results_dir={self.out_dir}", f"--run_name=trial-{number:03d}"]
        out = run_recbole_lsc(self.model, self.dataset, config_file_list, config_dict=dict(params),
                              cmd_args=[*self.overrides, *where])
        config = out["config"]
        row = scored_row(out["rows"], config, self.row)
        metric = config["valid_metric"].lower()
        self.trials.append({"trial": number, "params": params, "row": row["name"], "valid_metric": metric,
                            "valid_score": row["valid"][metric], "valid": row["valid"], "test": row["test"],
                            "results": out["path"]})
        return {"model": config["model"], "best_valid_score": row["valid"][metric],
                "valid_score_bigger": config["valid_metric_bigger"], "best_valid_result": row["valid"],
                "test_result": row["test"]}
