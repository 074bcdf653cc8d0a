"""Leaderboard rows from finished runs: mean and sample std (ddof = 1) over seeds, ranks, paired tests.

A row is one dataset x variant x method x SRM backbone (the variant is the sweep's yaml file
that row ran with, e.g. its cloud backbone; empty without variants). The cloud-only rows
(``llm_stale``, ``llm_fresh``) do not depend on the SRM backbone (the cloud is trained once
per dataset, variant and seed), so they appear once per dataset and variant with backbone
``-``. Ranks order every row of a dataset, across variants, by mean test ``metric`` (1 = best;
ties share the better rank). Each LSC4Rec row carries the paired tests (over test users,
per-user metric averaged over seeds) against every single model of its variant and backbone,
and every row its validation figures (``valid``, mean over seeds): defaults and variants are
chosen on them, never on test, so the table shows what a choice was made on.
"""

import numpy as np

from recbole_lsc.evaluation.stats import mean_std, paired_test
from recbole_lsc.results import point_setting

CLOUD_ROLES = ("llm_stale", "llm_fresh")
SINGLE_ROLES = ("srm", "srm_rerank", "llm_stale", "llm_fresh")
_METHOD_OF_ROLE = {"srm": "SRM (full catalogue)", "srm_rerank": "SRM re-rank"}


def method_name(row):
    return _METHOD_OF_ROLE.get(row["role"], row["name"])


def aggregate(runs, metric):
    """Leaderboard rows from ``runs``: dicts with ``dataset``, ``srm``, ``seed``, ``config_id``, ``results``.

    ``results`` is a run's results.json payload. Returns rows sorted by dataset and rank.
    """
    groups, per_user = {}, {}
    for run in runs:
        payload, variant = run["results"], run.get("variant", "")
        for row in payload["results"]:
            backbone = "-" if row["role"] in CLOUD_ROLES else run["srm"]
            key = (run["dataset"], variant, method_name(row), backbone)
            group = groups.setdefault(key, {"role": row["role"], "device_catalogue": row.get("device_catalogue"),
                                            "retrain_scope": row.get("retrain_scope"), "seeds": {},
                                            "valid": {}, "config_ids": set(), "runs": []})
            if run["seed"] in group["seeds"]:  # a cloud row seen through another backbone
                continue
            group["seeds"][run["seed"]] = row["test"]
            group["valid"][run["seed"]] = row.get("valid", {})
            group["config_ids"].add(run["config_id"])
            group["runs"].append(run["path"])
        users = payload.get("per_user_test")
        if users:
            per_user.setdefault((run["dataset"], variant, run["srm"]), []).append(users)

    rows = []
    for (dataset, variant, method, backbone), group in groups.items():
        seeds = sorted(group["seeds"])
        mean, std = mean_std([group["seeds"][seed] for seed in seeds])
        rows.append({
            "dataset": dataset, "variant": variant, "method": method, "role": group["role"], "backbone": backbone,
            "device_catalogue": group["device_catalogue"], "retrain_scope": group["retrain_scope"],
            "seeds": seeds, "test": mean, "test_std": std, "valid": _valid_mean([group["valid"][seed] for seed in seeds]),
            "config_id": sorted(group["config_ids"]), "runs": group["runs"],
        })
    _attach_paired_tests(rows, per_user)
    _rank(rows, metric)
    return sorted(rows, key=lambda row: (row["dataset"], row["rank"], row["variant"], row["method"], row["backbone"]))


def _attach_paired_tests(rows, per_user):
    for row in rows:
        key = (row["dataset"], row["variant"], row["backbone"])
        if row["role"] != "lsc4rec" or key not in per_user:
            continue
        seeds = per_user[key]
        ours = f"lsc4rec/{point_setting(row)}"
        if any(role not in s for s in seeds for role in (ours, *SINGLE_ROLES)):
            continue  # a run from before these rows were stored: no test rather than a partial one
        sizes = {len(s[role]) for s in seeds for role in (ours, *SINGLE_ROLES)}
        if len(sizes) != 1:
            raise ValueError(f"{row['dataset']} / {row['variant'] or '-'} / {row['backbone']}: the runs scored "
                             f"different numbers of test users {sorted(sizes)}; paired tests need the same users "
                             "(same data and filters)")
        mean = {role: np.mean([np.asarray(s[role]) for s in seeds], axis=0) for role in (ours, *SINGLE_ROLES)}
        row["paired_tests"] = {
            "metric": seeds[0]["metric"],
            **{role: paired_test(mean[ours], mean[role]) for role in SINGLE_ROLES},
        }


def _valid_mean(per_seed):
    """Mean over seeds of each validation metric every seed reports (a row without validation
    figures in one seed, e.g. a replay's, leaves that metric out rather than half-averaged)."""
    common = set.intersection(*(set(valid) for valid in per_seed)) if per_seed else set()
    return mean_std([{key: valid[key] for key in common} for valid in per_seed])[0] if common else {}


def _rank(rows, metric):
    def score(row):  # a missing or NaN metric ranks last
        value = row["test"].get(metric, float("-inf"))
        return float("-inf") if value != value else value

    for dataset in {row["dataset"] for row in rows}:
        ours = [row for row in rows if row["dataset"] == dataset]
        for row in ours:
            row["rank"] = 1 + sum(score(other) > score(row) for other in ours)


def markdown(rows, metrics, configs, costs=(), valid_metric=None):
    """The leaderboard as markdown: one table per dataset, the costs, then the configs by id (when
    given); with ``valid_metric``, a column of its validation mean beside the test columns."""
    lines = []
    with_variant = any(row["variant"] for row in rows)
    for dataset in sorted({row["dataset"] for row in rows}):
        lines += [f"## {dataset}", ""]
        spread = f"mean ± sample std over {seed_count([len(r['seeds']) for r in rows if r['dataset'] == dataset])}"
        head = ["rank", *(["variant"] if with_variant else []), "method", "backbone", "seeds",
                *(f"{metric} ({spread})" for metric in metrics),
                *([f"valid {valid_metric} (mean)"] if valid_metric else []), "p vs SRM", "p vs re-rank", "p vs LLM stale", "p vs LLM fresh", "config"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in (r for r in rows if r["dataset"] == dataset):
            cells = [str(row["rank"]), *([row["variant"] or "-"] if with_variant else []), row["method"],
                     row["backbone"], str(len(row["seeds"]))]
            cells += [_mean_std(row, metric) for metric in metrics]
            if valid_metric:
                cells.append(_valid(row, valid_metric))
            tests = row.get("paired_tests", {})
            cells += [_p(tests.get(role)) for role in SINGLE_ROLES]
            cells.append(" ".join(row["config_id"]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Metrics: test, mean ± sample standard deviation (ddof = 1) over the row's seeds (the mean alone with "
              "one seed)" + ("; valid: the validation figure every choice is made on, mean over the seeds" if valid_metric
                             else "") + ". p: two-sided Wilcoxon signed-rank test over test users of LSC4Rec against the single model "
              "(per-user metric averaged over seeds).", ""]
    if costs:
        lines += ["## costs", "", "| " + " | ".join(COST_COLUMNS) + " |", "|" + "---|" * len(COST_COLUMNS)]
        lines += ["| " + " | ".join(_cell(cost[column]) for column in COST_COLUMNS) + " |" for cost in costs]
        lines += ["", "Means over seeds. LLM seconds and epochs are those of the run that trained the cloud "
                  "(a cloud loaded from the trained-LLM store reports its training run's); per user: one "
                  "candidate list (cloud) and one re-ranking (device), batched as in the simulation; device_scoring: "
                  "whether the device read only the candidates' embeddings or scored the whole catalogue and "
                  "gathered the candidates' scores (an SRM whose scores are not dot products with an item table).", ""]
    if configs:  # a sweep's plan; a results page lists each run's command instead
        lines += ["## configs", ""]
        for config_id, spec in sorted(configs.items()):
            lines.append(f"- `{config_id}`: config files {spec['config_files'] or '-'}; overrides "
                         f"`{' '.join(spec['overrides']) or '-'}`; full config in leaderboard.json")
    return "\n".join(lines) + "\n"


COST_COLUMNS = ("dataset", "variant", "backbone", "seeds", "llm_parameters", "srm_parameters",
                "llm_epochs_per_seed", "srm_epochs_per_seed", "device_srm_epochs_per_seed", "llm_epochs",
                "llm_seconds", "llm_seconds_per_epoch", "llm_train_seconds_per_epoch", "llm_valid_seconds_per_pass",
                "cloud_seconds_per_user", "device_seconds_per_user", "device_scoring")


def cost_rows(runs):
    """One row per dataset x variant x SRM backbone: model sizes, the cloud's training budget
    (epochs, seconds, seconds per epoch) and the per-user cost of cloud and device, means over seeds."""
    groups = {}
    for run in runs:
        groups.setdefault((run["dataset"], run.get("variant", ""), run["srm"]), []).append(run["results"])
    rows = []
    for (dataset, variant, srm), payloads in sorted(groups.items()):
        llm = [stage["stages"]["llm"] for payload in payloads for stage in payload.get("runs", [])
               if "llm" in stage.get("stages", {})]
        epochs = [log["epochs_trained"] for log in llm]
        seconds = [log["seconds"] for log in llm]
        cost = [payload.get("cost", {}) for payload in payloads]
        rows.append({
            "dataset": dataset, "variant": variant or "-", "backbone": srm, "seeds": len(payloads),
            "llm_parameters": _mean(c.get("llm_parameters") for c in cost),
            "srm_parameters": _mean(c.get("srm_parameters") for c in cost),
            **{f"{model}_epochs_per_seed": _epochs_per_seed(payloads, model) for model in ("llm", "srm", "device_srm")},
            "llm_epochs": _mean(epochs), "llm_seconds": _mean(seconds),
            "llm_seconds_per_epoch": _mean(s / e for s, e in zip(seconds, epochs) if e),
            "llm_train_seconds_per_epoch": _mean(log.get("train_seconds_per_epoch") for log in llm),
            "llm_valid_seconds_per_pass": _mean(log.get("valid_seconds_per_pass") for log in llm),
            "cloud_seconds_per_user": _mean(c.get("cloud_seconds_per_user") for c in cost),
            "device_seconds_per_user": _mean(c.get("device_seconds_per_user") for c in cost),
            # the SRM read only the candidates' embeddings, or scored the whole catalogue and gathered
            "device_scoring": ", ".join(dict.fromkeys(c["srm_candidate_scoring"] for c in cost
                                                      if "srm_candidate_scoring" in c)) or None,
        })
    return rows


def _epochs_per_seed(payloads, model):
    """``"12 (best 3), 27 (best 18)"``: each seed's epochs trained and best epoch of ``model``
    (a stage of ``runs[i].stages``); None when no run logged them."""
    logs = [stage["stages"][model] for payload in payloads for stage in payload.get("runs", [])
            if "epochs_trained" in stage.get("stages", {}).get(model, {})]
    return ", ".join(f"{log['epochs_trained']} (best {log['best_epoch']})" for log in logs) or None


def _mean(values):
    values = [value for value in values if value is not None]
    return float(np.mean(values)) if values else None


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def csv_rows(rows, metrics, valid_metric=None):
    """Flat rows for ``leaderboard.csv`` (test means, sample stds over seeds, the validation mean
    of ``valid_metric``, p-values, config id)."""
    flat = []
    for row in rows:
        item = {key: row[key] for key in ("dataset", "variant", "rank", "method", "role", "backbone")}
        item["seeds"] = " ".join(map(str, row["seeds"]))
        for metric in metrics:
            item[metric] = row["test"].get(metric)
            item[f"{metric}_std"] = row["test_std"].get(metric)
        if valid_metric:
            item[f"valid_{valid_metric}"] = row.get("valid", {}).get(valid_metric)
        for role in SINGLE_ROLES:
            item[f"p_vs_{role}"] = row.get("paired_tests", {}).get(role, {}).get("wilcoxon_p")
        item["config_id"] = " ".join(row["config_id"])
        flat.append(item)
    return flat


def seed_count(counts):
    """``"3 seeds"`` (``"1 seed"``, ``"2-3 seeds"`` when the counts differ) for table headers and legends."""
    counts = list(counts)
    if not counts:
        return "seeds"
    low, high = min(counts), max(counts)
    return f"{low} seed{'s' if low != 1 else ''}" if low == high else f"{low}-{high} seeds"


def _mean_std(row, metric):
    """``mean ± sample std``; the mean alone for one seed, whose sample std is undefined."""
    if metric not in row["test"]:
        return "-"
    if len(row["seeds"]) < 2:
        return f"{row['test'][metric]:.4f}"
    return f"{row['test'][metric]:.4f} ± {row['test_std'][metric]:.4f}"


def _valid(row, metric):
    value = row.get("valid", {}).get(metric)
    return "-" if value is None else f"{value:.4f}"


def _p(test):
    return "-" if not test else f"{test['wilcoxon_p']:.2g}"
