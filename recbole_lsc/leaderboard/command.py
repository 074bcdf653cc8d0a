"""``recbole-lsc benchmark``: run a sweep and write the leaderboard files and plots.

Usage::

    recbole-lsc benchmark --srm SASRec GRU4Rec NARM --dataset ml-100k --seeds 3 \\
        [--variants tiny.yaml smollm2.yaml] [--config_files a.yaml] [--out leaderboard] [--workers N]
        [--ray_address ADDR] [--key=value ...]

Writes ``<out>/leaderboard.{md,csv,json}``,
``<out>/curve_<dataset>_[<variant>_]<srm>_<device_catalogue>.png`` and ``<out>/bars_<dataset>.png``
(each file atomically), from every finished job of the plan.
"""

import argparse
import json
import logging
import os
import sys

from recbole_lsc.leaderboard import plots
from recbole_lsc.leaderboard.sweep import plan, run_jobs
from recbole_lsc.leaderboard.table import aggregate, cost_rows, csv_rows, markdown
from recbole_lsc.arguments import config_overrides
from recbole_lsc.files import write_json_atomic, write_text_atomic
from recbole_lsc.results import package_versions, point_setting
from recbole_lsc.tables import csv_text


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="recbole-lsc benchmark", allow_abbrev=False,
        description="LSC4Rec and its baselines for every SRM backbone x dataset x seed, as a leaderboard.",
    )
    parser.add_argument("--srm", nargs="+", default=["SASRec"], help="device SRMs (RecBole model names)")
    parser.add_argument("--dataset", nargs="+", default=["ml-100k"], help="datasets")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per job: seed, seed + 1, ...")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files for every job")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="yaml files, each one variant of every job (named by its file name), e.g. one per cloud")
    parser.add_argument("--out", default="leaderboard", help="output folder (runs/, tables, plots)")
    parser.add_argument("--workers", type=int, default=1, help="parallel jobs on a local Ray instance")
    parser.add_argument("--ray_address", default=None, help="address of a running Ray cluster")
    args, rest = config_overrides(parser, argv)
    if args.seeds < 1 or args.workers < 1:
        parser.error("--seeds and --workers must be >= 1")
    return args, rest


def collect(jobs):
    """Finished jobs as the run dicts ``table.aggregate`` reads."""
    runs = []
    for job in jobs:
        if os.path.isfile(job.results_path):
            with open(job.results_path, encoding="utf-8") as handle:
                results = json.load(handle)
            runs.append({"dataset": job.dataset, "variant": job.variant, "srm": job.srm, "seed": job.seed,
                         "config_id": job.config_id, "path": job.results_path, "results": results})
    return runs


def table_metrics(config):
    """``(metric, metrics)``: the metric that ranks (``valid_metric``) and the table's columns
    (every metric of the config at 10, or the ranking metric alone) of a config or its snapshot."""
    metric = config["valid_metric"].lower()
    return metric, [f"{name.lower()}@{k}" for name in config["metrics"] for k in config["topk"] if k == 10] or [metric]


def _csv_of(rows):
    return csv_text(list(rows[0]), [list(row.values()) for row in rows]) if rows else ""


def write_leaderboard(out, runs, configs, metric, metrics, complete):
    """Tables and plots from ``runs``; returns the leaderboard rows and the figures' paths."""
    os.makedirs(out, exist_ok=True)
    rows, costs = aggregate(runs, metric), cost_rows(runs)
    write_json_atomic(os.path.join(out, "leaderboard.json"), {
        "metric": metric, "complete": complete, "versions": package_versions(), "rows": rows, "costs": costs,
        "configs": configs,
    })
    write_text_atomic(os.path.join(out, "leaderboard.csv"), _csv_of(csv_rows(rows, metrics, metric)))
    write_text_atomic(os.path.join(out, "leaderboard.md"), markdown(rows, metrics, configs, costs, metric))
    figures = []
    for dataset in sorted({run["dataset"] for run in runs}):
        ours = [row for row in rows if row["dataset"] == dataset]
        figures.append(os.path.join(out, f"bars_{dataset}.png"))
        plots.bar_chart(ours, metric, f"{dataset}: test {metric}", figures[-1])
        for variant, srm in sorted({(run["variant"], run["srm"]) for run in runs if run["dataset"] == dataset}):
            payloads = [run["results"] for run in runs
                        if (run["dataset"], run["variant"], run["srm"]) == (dataset, variant, srm)]
            figures += write_curves(out, payloads, metric, dataset, variant, srm)
    return rows, figures


def write_curves(out, payloads, metric, dataset, variant, srm):
    """One request-curve plot per setting (``device_catalogue``, ``retrain_scope``) of these runs;
    returns their paths (none for runs without request curves: a plain SRM or LLMRec run)."""
    modes = dict.fromkeys(point_setting(point) for payload in payloads for point in payload.get("request_curve", ()))
    paths = []
    prefix = f"{dataset}_{variant}_{srm}" if variant else f"{dataset}_{srm}"
    for mode in modes:
        suffix = f"_{mode}" if mode else ""
        where = f"{dataset}, {variant}" if variant else dataset
        title = f"{where}, device {srm} ({mode or 'all'}): LSC4Rec request policies"
        paths.append(os.path.join(out, f"curve_{prefix}{suffix}.png"))
        plots.request_curve_plot(payloads, metric, title, paths[-1], device_catalogue=mode)
    return paths


def main(argv):
    args, overrides = parse_args(argv)
    files = args.config_files.split() if args.config_files else None
    jobs, configs = plan(args.dataset, args.srm, args.seeds, files, overrides, args.out, args.variants)
    metric, metrics = table_metrics(next(iter(configs.values()))["config"])
    failures = run_jobs(jobs, workers=args.workers, ray_address=args.ray_address)
    runs = collect(jobs)
    complete = len(runs) == len(jobs)
    rows = write_leaderboard(args.out, runs, configs, metric, metrics, complete=complete)[0] if runs else []
    print(markdown(rows, metrics, configs, cost_rows(runs), metric))
    for job, message in failures:
        print(f"error: job {job.run_name} failed: {message}", file=sys.stderr)
    if not complete:
        print(f"error: {len(jobs) - len(runs)} of {len(jobs)} jobs have no results; the leaderboard is marked "
              "incomplete; fix the cause and re-run the same command to finish them", file=sys.stderr)
        return 1
    logging.getLogger().info(f"leaderboard written to {os.path.abspath(args.out)}")
    return 1 if failures else 0  # a job that failed after writing its results is still a failure
