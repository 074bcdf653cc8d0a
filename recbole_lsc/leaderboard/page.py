"""The sections of a results page that a leaderboard does not have: how each model was trained
and which fine-tuning stage was kept (per seed), what the learned request policy chose, and the
exact command, versions and wall time of every run, so each figure can be traced to its run."""

import os

from recbole_lsc.tables import markdown_lines

STAGE_COLUMNS = ("seed", "stage", "epochs", "best epoch", "kept", "rule", "p", "valid before", "valid after",
                 "seconds")


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _by_seed(runs):
    return sorted(runs, key=lambda run: (run["dataset"], run["variant"], run["srm"], run["seed"]))


def stage_table(runs):
    """One line per training stage and seed: epochs and best epoch (``epochs_trained`` for a model
    trained to early stopping, ``epochs`` for a fine-tuning stage), whether a fine-tuning stage
    was kept and by which rule, its paired test's p and the validation score before and after."""
    rows = [(run["seed"], stage, info.get("epochs_trained", info.get("epochs")), info.get("best_epoch"),
             info.get("kept"), info.get("rule"), info.get("p"), info.get("valid_before", info.get("best_valid")),
             info.get("valid_after"), info.get("seconds"))
            for run in _by_seed(runs) for log in run["results"].get("runs", [])
            for stage, info in log.get("stages", {}).items()]
    return markdown_lines(STAGE_COLUMNS, rows, _cell) if rows else []


def _setting(mode):
    scope = mode.get("retrain_scope", "device")
    return mode["device_catalogue"] + ("" if scope == "device" else f", {scope} re-training")


def policy_table(runs):
    """The learned request policy's choice at each request ratio, per seed and setting (``random``
    where no learned rule passed its held-out test)."""
    modes = [(run["seed"], mode) for run in _by_seed(runs) for log in run["results"].get("runs", [])
             for mode in log.get("modes", [])]
    if not modes:
        return []
    rhos = list(modes[0][1].get("learned_policy") or {})
    rows = [(seed, _setting(mode), mode.get("learned_policy_fit_users"),
             *(mode.get("learned_policy") or {}).values()) for seed, mode in modes]
    return markdown_lines(("seed", "setting", "fit users", *(f"rho {rho}" for rho in rhos)), rows, _cell)


def run_list(runs, out):
    """Each run: its results file (relative to the page), command, versions and wall seconds."""
    lines = []
    for run in _by_seed(runs):
        payload = run["results"]
        where = os.path.relpath(run["path"], out)
        wall = sum(sum(log.get("wall_seconds", {}).values()) for log in payload.get("runs", []))
        versions = ", ".join(f"{name} {version}" for name, version in payload.get("versions", {}).items() if version)
        lines += [f"- **{run['dataset']} / {run['srm']} / seed {run['seed']}**"
                  f"{' / ' + run['variant'] if run['variant'] else ''}: [`{where}`]({where}); "
                  f"config `{run['config_id']}`; wall {_cell(wall or None)} s; {versions}",
                  "", "  ```", f"  {payload.get('command', '(not recorded: an older run; its config is in the file)')}",
                  "  ```", ""]
    return lines
