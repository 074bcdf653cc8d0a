"""Which re-training recipe the fleet should use: validation only (the development dataset's).

Trains the cloud LLM (or loads it from the trained-LLM store), the device SRM and the
cooperative stage exactly as the main job does, then re-trains with each recipe of the grid
(``--replays`` x ``--learning_rates``) for each ``device_catalogue`` setting and each
``--scopes`` value (``device``: every device on its own data; ``fleet``: one model), and reports the validation ``valid_metric`` the fleet's
chosen epoch reaches (mean over validation users), its gain over the SRM it started from, the
one-sided paired p of that gain, the chosen epoch and the seconds. Test figures are neither
computed nor printed: this is how the defaults are chosen (docs/method.md, "Training").

    python benchmarks/retrain_recipe.py --seeds=3 --md=benchmarks/results/retrain_recipe.md \\
        --out=benchmarks/results/retrain_recipe.json
"""

import copy

import numpy as np
from recbole.utils import init_seed

import recbole_lsc.experiment.lsc4rec as experiment
from _common import base_config_dict, emit, environment, markdown, parse, parser, run
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.cloud.trainer import train_or_load
from recbole_lsc.config import LSCConfig
from recbole_lsc.experiment.lists import CloudLists
from recbole_lsc.experiment.seeds import with_seed
from recbole_lsc.experiment.stages import FineTuningStages, train_reference_and_device_srm
from recbole_lsc.files import write_text_atomic
from recbole_lsc.lsc4rec import LSC4Rec
from recbole_lsc.utils import get_model


def _replay(value):
    return value if value == "all" else float(value)


def cooperative_srm(config):
    """``(config, stages, SRM after the cooperative stage)`` of one seed, as ``run_one_seed``."""
    data = experiment.load_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = LSC4Rec(config, data.dataset, get_model(config["srm"]), data.srm_config).to(config["device"])
    train_or_load(config, model.llm, data.protocol, data.dataset)
    model.llm.requires_grad_(False)
    _, independent, _ = train_reference_and_device_srm(config, data, saved=True)
    cloud = InProcessCloud(model.llm, config["eval_batch_size"], config["device"])
    lists = CloudLists(cloud, data.protocol, config)
    stages = FineTuningStages(config, lists, data.protocol)
    srm = stages.cooperative(independent)[0] if config["coop_train"] else independent
    return data, lists, srm


def recipe_rows(config, data, lists, srm, grid):
    """One figure dict per (scope, device_catalogue, replay, learning rate) of ``grid``."""
    rows = []
    for scope, mode, replay, rate in grid:
        recipe = copy.deepcopy(config)
        recipe["retrain_replay"], recipe["retrain_learning_rate"] = replay, rate
        _, log = FineTuningStages(recipe, lists, data.protocol).retraining(srm, mode, scope)
        rows.append({"seed": config["seed"], "retrain_scope": scope, "device_catalogue": mode,
                     "retrain_replay": replay, "retrain_learning_rate": rate, **{key: log.get(key) for key in (
                         "valid_before", "valid_after", "p", "best_epoch", "kept", "seconds")}})
    return rows


def summary(rows, metric):
    """Mean over seeds per recipe, best first within each setting; markdown lines."""
    groups = {}
    for row in rows:
        key = (row["retrain_scope"], row["device_catalogue"], str(row["retrain_replay"]), row["retrain_learning_rate"])
        groups.setdefault(key, []).append(row)
    table = []
    for (scope, mode, replay, rate), found in groups.items():
        after = np.mean([r["valid_after"] for r in found])
        gain = np.mean([r["valid_after"] - r["valid_before"] for r in found])
        table.append((scope, mode, replay, rate, len(found), float(after), float(gain),
                      ", ".join(f"{r['p']:.3g}" for r in found), ", ".join(str(r["best_epoch"]) for r in found),
                      float(np.mean([r["seconds"] for r in found]))))
    table.sort(key=lambda line: (line[0], line[1], -line[5]))
    headers = ["retrain_scope", "device_catalogue", "retrain_replay", "learning rate", "seeds", f"valid {metric} (best epoch)",
               "gain over start", "one-sided p per seed", "best epoch per seed", "seconds"]
    return table, markdown(headers, table)


def main(argv=None):
    p = parser(__doc__, users=None)
    p.add_argument("--seeds", type=int, default=1, help="seeds seed, seed + 1, ... (default %(default)s)")
    p.add_argument("--replays", default="0,2,all", help="retrain_replay values (default %(default)s)")
    p.add_argument("--learning_rates", default="0.0005,0.001,0.002", help="default %(default)s")
    p.add_argument("--scopes", default="device,fleet", help="retrain_scope values (default %(default)s)")
    p.add_argument("--md", default=None, help="also write the markdown table to this file")
    args, overrides = parse(p, argv)
    config = LSCConfig("LSC4Rec", args.dataset, config_dict=base_config_dict(args, overrides), cmd_args=overrides)
    replays = [_replay(value) for value in args.replays.split(",")]
    rates = [float(value) for value in args.learning_rates.split(",")]
    grid = [(scope, mode, replay, rate) for scope in args.scopes.split(",") for mode in config["device_catalogue"]
            for replay in replays for rate in rates]
    rows = []
    for offset in range(args.seeds):
        seeded = with_seed(config, config["seed"] + offset)
        rows += recipe_rows(seeded, *cooperative_srm(seeded), grid)
    _, lines = summary(rows, config["valid_metric"].lower())
    title = (f"Re-training recipes on {args.dataset} ({args.scopes}): validation "
             f"{config['valid_metric']} of the fleet's best epoch, mean over {args.seeds} seed(s) "
             f"(`python benchmarks/retrain_recipe.py --seeds={args.seeds} --scopes={args.scopes} "
             f"--replays={args.replays} --learning_rates={args.learning_rates}`)")
    if args.md:
        write_text_atomic(args.md, "\n".join([title, "", *lines]) + "\n")
    emit({"benchmark": "retrain_recipe", "dataset": args.dataset, "rows": rows, **environment(args.device)},
         [title, "", *lines], args.out)


if __name__ == "__main__":
    raise SystemExit(run(main))
