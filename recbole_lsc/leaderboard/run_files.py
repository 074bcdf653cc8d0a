"""The finished runs behind a results page: ``results.json`` files found on disk, each labelled
as the leaderboard labels a sweep's jobs (dataset, variant, SRM backbone, seed, config id).

A sweep's files sit at ``runs/<dataset>/[<variant>/]<srm>-<config id>/seed<k>/results.json``; any
other file (a single run, a copy in ``docs/results/``) is labelled from its own config. Runs of one
dataset and backbone whose configs differ are kept apart as variants named by their config ids,
so seeds of different experiments are never averaged into one row.
"""

import json
import os

from recbole_lsc.errors import ConfigError
from recbole_lsc.leaderboard.sweep import snapshot_id

CLOUD_MODELS = ("LLMRec",)


def find_results(paths):
    """Every ``results.json`` named by ``paths`` (files, or folders searched recursively), sorted,
    each once. A path that names no results file is refused (one error line, nothing written)."""
    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
            continue
        if not os.path.isdir(path):
            raise ConfigError(f"'{path}' does not exist; pass results.json files or folders holding them")
        inside = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                        for name in names if name == "results.json")
        if not inside:
            raise ConfigError(f"no results.json under '{path}'; pass the folder of a finished run or sweep")
        found += inside
    return list(dict.fromkeys(os.path.normpath(path) for path in found))


def load_payload(path):
    """A results.json payload; a file that is not one is refused in one line."""
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"'{path}' is not a readable results.json ({err})") from None
    if not isinstance(payload, dict) or not {"dataset", "model", "config", "results"} <= set(payload):
        raise ConfigError(f"'{path}' is not a recbole-lsc results.json (it needs dataset, model, config and "
                          "results); pass the results.json a run wrote")
    return payload


def backbone_of(payload):
    """The device SRM of a LSC4Rec run, the model of a plain SRM run, ``-`` for the cloud alone."""
    if payload["model"] == "LSC4Rec":
        return payload["config"]["srm"]
    return "-" if payload["model"] in CLOUD_MODELS else payload["model"]


def _sweep_variant(path, dataset):
    """The variant folder of a sweep's results path (``""`` without variants), None outside a sweep's layout."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    if len(parts) < 5 or parts[-1] != "results.json" or not parts[-2].startswith("seed"):
        return None
    if parts[-4] == dataset:
        return ""
    return parts[-4] if parts[-5] == dataset else None


def label_runs(paths):
    """The run dicts :func:`recbole_lsc.leaderboard.table.aggregate` reads, from results files."""
    runs = []
    for path in paths:
        payload = load_payload(path)
        runs.append({"dataset": payload["dataset"], "srm": backbone_of(payload),
                     "seed": payload["config"]["seed"], "config_id": snapshot_id(payload["config"]),
                     "variant": _sweep_variant(path, payload["dataset"]), "path": path, "results": payload})
    _name_unnamed_variants(runs)
    return runs


def _name_unnamed_variants(runs):
    """A run outside a sweep's layout gets variant ``""``; where one dataset, variant and backbone
    hold several configs, each config id joins the variant's name. A seed given twice with one
    config is refused (which copy would count?)."""
    configs, seen = {}, {}
    for run in runs:
        run["variant"] = run["variant"] or ""
        configs.setdefault((run["dataset"], run["variant"], run["srm"]), set()).add(run["config_id"])
    for run in runs:
        if len(configs[(run["dataset"], run["variant"], run["srm"])]) > 1:
            run["variant"] = " ".join(filter(None, (run["variant"], run["config_id"])))
        key = (run["dataset"], run["variant"], run["srm"], run["seed"])
        if key in seen:
            raise ConfigError(f"'{seen[key]}' and '{run['path']}' are the same run (dataset {key[0]}, backbone "
                              f"{key[2]}, seed {key[3]}, config {run['config_id']}); pass one of them")
        seen[key] = run["path"]
