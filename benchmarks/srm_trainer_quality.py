"""Converged quality and cost of the SRM trainers: whole-sequence windows against RecBole's.

For each seed, the ``srm`` reference (every training target, as the main job trains it) is
trained to early stopping once per trainer variant, from the same initial weights (each is
drawn right after reseeding): ``recbole`` (stock RecBole, one sample per prefix) and
``sequence/S`` (whole-sequence windows advancing by S targets). Reported per variant: epochs,
best epoch, wall seconds, seconds per epoch, mean validation and test ``valid_metric``; and
against ``recbole``, over users (each user's value averaged over the seeds): the mean
difference and the paired Wilcoxon p, two-sided and one-sided that the variant is worse.
Choose a variant on validation only; test is reported, never chosen on.

    python benchmarks/srm_trainer_quality.py --seeds=3 --variants=recbole,sequence/1,sequence/5,sequence/10
    python benchmarks/srm_trainer_quality.py --dataset=ml-1m --seeds=1 --variants=recbole,sequence/5
"""

import sys
import time

import numpy as np
from scipy import stats

from _common import base_config_dict, emit, markdown, parse, parser, run, scratch_cwd
from recbole_lsc.config import LSCConfig
from recbole_lsc.evaluation.metrics import metric_values
from recbole_lsc.experiment.lsc4rec import load_data, srm_ranks
from recbole_lsc.experiment.seeds import with_seed
from recbole_lsc.experiment.stages import train_srm


def variant_overrides(variant):
    if variant == "recbole":
        return {"srm_trainer": "recbole"}
    trainer, _, stride = variant.partition("/")
    if trainer != "sequence" or not stride.isdigit():
        raise SystemExit(f"error: unknown variant '{variant}'; use recbole or sequence/S (S an integer stride)")
    return {"srm_trainer": "sequence", "srm_window_stride": int(stride)}


def train_variant(config, data):
    """The ``srm`` reference trained one way: its log and per-user valid and test values."""
    started = time.time()
    srm, log = train_srm(config, data, "train", saved=True)  # RecBole reloads its best epoch, as the main job
    values = {phase: metric_values(srm_ranks(config, srm, data.protocol, phase), config) for phase in ("valid", "test")}
    return {**log, "wall_seconds": round(time.time() - started, 1)}, values


def paired(variant, stock):
    """Mean difference and Wilcoxon p (two-sided; one-sided that ``variant`` is worse)."""
    diff = variant - stock
    if not np.any(diff):
        return {"mean_diff": 0.0, "p_two_sided": 1.0, "p_worse": 1.0}
    return {"mean_diff": round(float(diff.mean()), 6),
            "p_two_sided": round(float(stats.wilcoxon(variant, stock).pvalue), 6),
            "p_worse": round(float(stats.wilcoxon(variant, stock, alternative="less").pvalue), 6)}


def main(argv=None):
    p = parser(__doc__, users=None)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", default="recbole,sequence/1,sequence/5,sequence/10")
    args, overrides = parse(p, argv)
    variants = args.variants.split(",")
    settings = {variant: variant_overrides(variant) for variant in variants}
    logs = {variant: [] for variant in variants}
    values = {variant: {"valid": [], "test": []} for variant in variants}
    with scratch_cwd():
        base = {**base_config_dict(args, overrides), "trained_srm_cache": None}
        config = LSCConfig("LSC4Rec", args.dataset, config_dict=base, cmd_args=overrides)
        for seed in range(config["seed"], config["seed"] + args.seeds):
            for variant in variants:
                seeded = with_seed(LSCConfig("LSC4Rec", args.dataset, config_dict={**base, **settings[variant]},
                                             cmd_args=overrides), seed)
                log, per_user = train_variant(seeded, load_data(seeded))
                logs[variant].append({**log, "seed": seed})
                print(f"seed {seed} {variant}: {log['epochs_trained']} epochs (best {log['best_epoch']}), "
                      f"{log['wall_seconds']} s", file=sys.stderr, flush=True)
                for phase in ("valid", "test"):
                    values[variant][phase].append(per_user[phase])
    means = {variant: {phase: np.mean(values[variant][phase], axis=0) for phase in ("valid", "test")}
             for variant in variants}
    figures = {"benchmark": "srm_trainer_quality", "dataset": args.dataset, "srm": config["srm"],
               "metric": config["valid_metric"], "overrides": overrides, "variants": {}}
    rows = []
    for variant in variants:
        entry = {"runs": logs[variant],
                 "valid": round(float(means[variant]["valid"].mean()), 6),
                 "test": round(float(means[variant]["test"].mean()), 6)}
        if "recbole" in means and variant != "recbole":
            entry["against_recbole"] = {phase: paired(means[variant][phase], means["recbole"][phase])
                                        for phase in ("valid", "test")}
        figures["variants"][variant] = entry
        against = entry.get("against_recbole", {})
        rows.append([variant, " ".join(f"{run['epochs_trained']}({run['best_epoch']})" for run in logs[variant]),
                     round(float(np.mean([run["wall_seconds"] for run in logs[variant]])), 1),
                     round(float(np.mean([run["seconds"] / max(run["epochs_trained"], 1) for run in logs[variant]])), 2),
                     entry["valid"], entry["test"],
                     against.get("valid", {}).get("p_worse"), against.get("test", {}).get("p_worse")])
    lines = markdown(["variant", "epochs (best) per seed", "wall s", "s/epoch", f"valid {config['valid_metric']}",
                      f"test {config['valid_metric']}", "p worse (valid)", "p worse (test)"], rows)
    emit(figures, lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
