"""``recbole-lsc tune``: search a params file's space, one ordinary run per trial, then the table.

Usage: ``recbole-lsc tune --model=M --dataset=D --params_file=FILE [--config_files="a.yaml"]
[--algo=exhaustive|random|bayes] [--max_evals=N] [--early_stop=N] [--search_seed=N] [--out=DIR]
[--row=NAME] [--key=value ...]``. Everything is checked (hyperopt installed, the params
file, every tuned key and value) before the first trial trains; the best trial is the one
with the best validation score (``valid_metric``), never chosen on test. The trials land in
``<out>/trial-NNN`` and the table in ``<out>/tune.{md,csv,json}`` (written atomically).
"""

import argparse
import datetime
import json
import os

from recbole_lsc.arguments import config_overrides
from recbole_lsc.files import write_json_atomic, write_text_atomic
from recbole_lsc.results import report_table
from recbole_lsc.tables import csv_text, markdown_lines
from recbole_lsc.tuning.checks import check_params
from recbole_lsc.tuning.objective import Objective
from recbole_lsc.tuning.params_file import grid, read_params, require_hyperopt, search_space
from recbole_lsc.tuning.search import Tuning

ALGOS = ("exhaustive", "random", "bayes")


def parse_arguments(argv):
    """``(args, --key=value overrides)`` of ``recbole-lsc tune``."""
    parser = argparse.ArgumentParser(prog="recbole-lsc tune", allow_abbrev=False,
                                     description="Hyper-parameter search, RecBole's HyperTuning over recbole-lsc runs.")
    parser.add_argument("--model", "-m", default="LSC4Rec", help="model name (default: LSC4Rec)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--params_file", required=True, help="RecBole params file: 'name type values' a line")
    parser.add_argument("--algo", choices=ALGOS, default="exhaustive", help="search (default: exhaustive)")
    parser.add_argument("--max_evals", type=int, default=None,
                        help="trials at most (default: the whole grid for exhaustive, 100 otherwise)")
    parser.add_argument("--early_stop", type=int, default=None,
                        help="stop after N trials without a better score; 0 never (default: 10, exhaustive: never)")
    parser.add_argument("--search_seed", type=int, default=2020, help="seed of random and bayes (default: 2020)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: <results_dir>/tune/<model>-<dataset>-<time>)")
    parser.add_argument("--row", default=None,
                        help="the row whose validation score is the trial's (default: the model's)")
    return config_overrides(parser, argv)


def best_trial(trials, bigger):
    """The trial with the best validation score (the first of equals)."""
    best = trials[0]
    for trial in trials[1:]:
        if (trial["valid_score"] > best["valid_score"]) if bigger else (trial["valid_score"] < best["valid_score"]):
            best = trial
    return best


def cell(value):
    """A value as a table cell: numbers to 4 places, lists and dicts as JSON."""
    if isinstance(value, float):
        return f"{value:.4f}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def table_rows(trials, best):
    """``(header, rows)``: trial, each parameter, the scored row, valid score, test metrics, folder, best."""
    names = list(trials[0]["params"])
    tests = list(trials[0]["test"])
    header = ["trial", *names, "row", f"valid {trials[0]['valid_metric']}", *(f"test {m}" for m in tests),
              "results", "best"]
    rows = [[trial["trial"], *(trial["params"][n] for n in names), trial["row"], trial["valid_score"],
             *(trial["test"].get(m) for m in tests), trial["results"], trial is best] for trial in trials]
    return header, rows


def table_cell(value):
    """A cell of the trials' table: the best trial marked, other flags blank."""
    return "**best**" if value is True else "" if value is False else cell(value)


def write_tables(out, summary):
    """``tune.md``, ``tune.csv`` and ``tune.json`` in ``out``; the markdown table is returned."""
    trials = summary["trials"]
    best = next(trial for trial in trials if trial["trial"] == summary["best_trial"])
    header, rows = table_rows(trials, best)
    table = "\n".join(markdown_lines(header, rows, table_cell))
    write_text_atomic(os.path.join(out, "tune.md"), f"# {summary['model']} on {summary['dataset']}: "
                      f"{len(trials)} trials, best on valid {summary['valid_metric']}\n\n{table}\n")
    flat = [[json.dumps(v) if isinstance(v, (list, dict)) else v for v in row] for row in rows]
    write_text_atomic(os.path.join(out, "tune.csv"), csv_text(header, flat))
    write_json_atomic(os.path.join(out, "tune.json"), summary)
    return table


def default_out(config):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(config["results_dir"], "tune", f"{config['model']}-{config['dataset']}-{stamp}")


def search(args, overrides):
    """Check everything, run the trials; ``(config without tuning, out folder, objective)``."""
    require_hyperopt()
    files = args.config_files.split() if args.config_files else None
    params = read_params(args.params_file)
    points = grid(params) if args.algo == "exhaustive" else ()
    config = check_params(params, args.model, args.dataset, files, overrides)
    out = args.out or default_out(config)
    objective = Objective(args.model, args.dataset, overrides, out, [param.name for param in params], args.row)
    Tuning(objective, search_space(params), files, args.algo, args.max_evals, args.early_stop, args.search_seed,
           points).run()
    return config, out, objective


def main(argv):
    args, overrides = parse_arguments(argv)
    config, out, objective = search(args, overrides)
    bigger = config["valid_metric_bigger"]
    best = best_trial(objective.trials, bigger)
    summary = {"model": config["model"], "dataset": config["dataset"], "algo": args.algo,
               "params_file": args.params_file, "overrides": overrides, "config_files": args.config_files,
               "valid_metric": objective.trials[0]["valid_metric"], "valid_score_bigger": bigger,
               "best_trial": best["trial"], "best_params": best["params"], "trials": objective.trials}
    table = write_tables(out, summary)
    report_table(f"tuning trials (best: trial {best['trial']}, on valid {summary['valid_metric']})", table)
    print(f"tuning table written to {os.path.join(out, 'tune.md')}")
    return 0
