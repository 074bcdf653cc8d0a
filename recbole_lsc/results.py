"""``results.json`` and the result tables every run prints and logs.

Layout (stable; later stages add top-level keys)::

    {"dataset": str, "model": str, "config": {...}, "versions": {...},
     "results": [{"name": str, "role": str, "valid": {metric: value}, "test": {metric: value}}]}

Metric names are RecBole's, in lower case (``hit@10``, ``ndcg@10``, ``mrr@10``).
Roles: ``srm``, ``srm_rerank``, ``llm_stale``, ``llm_fresh``, ``lsc4rec``, ``ablation``.
"""

import datetime
import enum
import importlib.metadata
import logging
import os

from recbole.utils import set_color

from recbole_lsc.files import write_json_atomic

ROLES = ("srm", "srm_rerank", "llm_stale", "llm_fresh", "lsc4rec", "ablation", "replay")
VERSIONED = ("recbole-lsc", "recbole", "torch", "numpy", "pandas", "transformers", "peft")


def setting_key(device_catalogue, retrain_scope="device"):
    """The key of one LSC4Rec setting (per-user vectors, curves, device bundles):
    ``candidates`` / ``full`` for the default ``device`` re-training scope, ``<catalogue>-fleet``
    for one model re-trained on the whole fleet's fresh windows."""
    return device_catalogue if retrain_scope in (None, "device") else f"{device_catalogue}-{retrain_scope}"


def parse_setting(key):
    """``(device_catalogue, retrain_scope)`` of a :func:`setting_key`."""
    catalogue, _, scope = key.partition("-")
    return catalogue, scope or "device"


def point_setting(point):
    """The setting key of a row or curve point (``device_catalogue`` and ``retrain_scope``); None without one."""
    catalogue = point.get("device_catalogue")
    return None if catalogue is None else setting_key(catalogue, point.get("retrain_scope"))


def setting_label(device_catalogue, retrain_scope="device"):
    """How a row names its setting: ``candidates``, or ``candidates, fleet re-training``."""
    return device_catalogue if retrain_scope in (None, "device") else f"{device_catalogue}, {retrain_scope} re-training"


def metric_dict(result):
    """RecBole's evaluation OrderedDict as plain ``{lower-case name: float}``."""
    return {str(key).lower(): round(float(value), 6) for key, value in (result or {}).items()}


def result_row(name, role, valid, test, **extra):
    if role not in ROLES:
        raise ValueError(f"unknown result role '{role}', expected one of {ROLES}")
    return {"name": name, "role": role, "valid": metric_dict(valid), "test": metric_dict(test), **extra}


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return str(value)


def given_config(config):
    """The values the run was given (config files, dict, command line) as JSON-safe values: what
    rebuilds its config elsewhere, where RecBole's derived values (joined paths, devices) would not."""
    return _jsonable(dict(config.external_config_dict))


def config_snapshot(config):
    """The run's final config as JSON-safe values (enums by name, devices as strings)."""
    return _jsonable(dict(config.final_config_dict))


def package_versions(names=VERSIONED):
    """``{package: installed version or None}``: what a result or a cache entry was made with."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_directory(config):
    """``<results_dir>/<run_name>``; the run name defaults to ``<model>-<dataset>-<time>``."""
    name = config["run_name"] or "{}-{}-{}".format(
        config["model"], config["dataset"], datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    return os.path.join(config["results_dir"], name)


def write_results(config, rows, folder=None, **extra):
    """Write ``results.json`` for this run (in ``folder``, by default :func:`run_directory`) and
    return its path. A caller that wrote other files of the run first passes their folder: a
    default run name holds the time, which may have moved on to the next second."""
    payload = {
        "dataset": config["dataset"],
        "model": config["model"],
        "config": config_snapshot(config),
        "versions": package_versions(),
        "results": rows,
        **extra,
    }
    path = os.path.join(folder or run_directory(config), "results.json")
    write_json_atomic(path, payload)
    return path


def markdown_table(rows, split="test", metrics=None):
    """Rows as a markdown table of one split's metrics (all metrics of the first row by default)."""
    if not rows:
        return "(no results)"
    metrics = metrics or list(rows[0][split].keys())
    lines = [
        "| name | role | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for row in rows:
        values = " | ".join(f"{row[split][m]:.4f}" if m in row[split] else "-" for m in metrics)
        lines.append(f"| {row['name']} | {row['role']} | {values} |")
    return "\n".join(lines)


def curve_table(curve, metric):
    """The request curves as markdown: one row per (setting, policy), one column per request ratio."""
    rhos = sorted({point["rho"] for point in curve})
    lines = dict.fromkeys((point_setting(point), point["policy"]) for point in curve)
    by = {(point_setting(point), point["policy"], point["rho"]): point for point in curve}
    table = [f"| policy ({metric}; realised ratio) | " + " | ".join(f"rho {rho:g}" for rho in rhos) + " |",
             "|---|" + "---|" * len(rhos)]
    for mode, policy in lines:
        cells = [f"{by[(mode, policy, rho)]['test'][metric]:.4f} ({by[(mode, policy, rho)]['realized']:.2f})"
                 if (mode, policy, rho) in by else "-" for rho in rhos]
        label = f"{policy} ({mode})" if mode else policy
        table.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(table)


def report_table(title, table):
    """Log ``table`` under ``title`` through RecBole's logger, as RecBole logs its results, so
    the run's log file keeps it; and print it, so stdout carries the tables alone (the logger's
    console copy goes to stderr, with timestamps)."""
    logging.getLogger().info(set_color(title, "yellow") + f":\n{table}")
    print(table)
