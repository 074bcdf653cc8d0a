"""Device re-ranking of C candidates vs cloud candidate generation, seconds per user.

Cloud: LLMRec's exact top-C on the stale history (``sample_candidates``). Device, two ways:

* full catalogue: ``LSC4RecTrainer.srm_scores``, which the pipeline's ``measure_cost``
  times as the device cost: the SRM scores the WHOLE catalogue and gathers the C candidates
  (the pipeline needs the full scores anyway for two request features);
* candidates only: ``forward(fresh history) . item_embedding[candidates]``
  (``_common.candidate_only_scores``), checked equal to the gathered full scores.

Each path runs batched as the pipeline does (``eval_batch_size`` users per batch, through
``measure_cost`` itself) and one user at a time (what a device serves). Default configs
(LLMRec.yaml, SASRec.yaml; override with --key=value), random weights: the timing does not
depend on training. Goal: device <= cloud / 50.

    python benchmarks/device_rerank_vs_cloud.py --dataset=ml-100k --users=0 --repeat=3
"""

import sys
import time
from types import SimpleNamespace

import numpy as np

from _common import (
    candidate_only_scores, emit, environment, lsc4rec_setup, markdown, parameter_count, parse, parser, run,
    scratch_cwd, timed,
)
from recbole_lsc.pipelines.lsc4rec import measure_cost

GOAL = 1 / 50


def pipeline_costs(config, trainer, ids, batch_size, repeat):
    """Median ``measure_cost`` figures (cloud and full-catalogue device) at ``batch_size`` users per batch."""
    saved = config["eval_batch_size"]
    config["eval_batch_size"] = batch_size
    try:
        runs = [measure_cost(config, trainer, SimpleNamespace(stale_ids=ids)) for _ in range(repeat)]
    finally:
        config["eval_batch_size"] = saved
    keys = ("cloud_seconds_per_user", "device_seconds_per_user")
    median = {key: float(np.median([run[key] for run in runs])) for key in keys}
    return median, runs[0]


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per batched path (median; one warm-up first)")
    p.add_argument("--batch1", type=int, default=1, help="timed runs per one-user-at-a-time path (median)")
    args, overrides = parse(p, argv)
    wall = time.perf_counter()
    with scratch_cwd():
        setup = lsc4rec_setup(args, overrides, loaders=False)
        config, trainer, model, device = setup.config, setup.trainer, setup.model, setup.device
        users = len(setup.protocol.samples("test"))
        ids, _ = trainer.candidates("test", "stale")  # the stale lists the device re-ranks
        batch = config["eval_batch_size"]

        pipeline_costs(config, trainer, ids, batch, 1)  # warm-up (thread pools, first allocations)
        batched, pipeline_cost = pipeline_costs(config, trainer, ids, batch, args.repeat)
        cand_s, cand_scores = timed(
            lambda: candidate_only_scores(model.srm, trainer.srm_interaction("test"), ids, batch, device),
            device, args.repeat, warmup=1,
        )
        full_scores, _ = trainer.srm_scores("test", ids)
        max_diff = float((cand_scores - full_scores).abs().max())

        single, _ = pipeline_costs(config, trainer, ids, 1, args.batch1)
        cand1_s, _ = timed(
            lambda: candidate_only_scores(model.srm, trainer.srm_interaction("test"), ids, 1, device), device, args.batch1
        )

    paths = {
        "batched": {
            "batch_size": min(batch, users),
            "cloud_seconds_per_user": batched["cloud_seconds_per_user"],
            "device_full_seconds_per_user": batched["device_seconds_per_user"],
            "device_candidates_seconds_per_user": cand_s / users,
        },
        "one_user_per_call": {
            "batch_size": 1,
            "cloud_seconds_per_user": single["cloud_seconds_per_user"],
            "device_full_seconds_per_user": single["device_seconds_per_user"],
            "device_candidates_seconds_per_user": cand1_s / users,
        },
    }
    for figures in paths.values():
        cloud = figures["cloud_seconds_per_user"]
        figures["device_full_over_cloud"] = figures["device_full_seconds_per_user"] / cloud
        figures["device_candidates_over_cloud"] = figures["device_candidates_seconds_per_user"] / cloud
        figures["goal_met_candidates"] = figures["device_candidates_over_cloud"] <= GOAL
        figures["goal_met_full"] = figures["device_full_over_cloud"] <= GOAL
    head = paths["batched"]
    result = {
        "benchmark": "device_rerank_vs_cloud",
        "dataset": args.dataset, "users": users, "candidate_num": config["candidate_num"], "srm": config["srm"],
        "llm_backbone": config["llm_backbone"], "n_items": setup.dataset.item_num, "repeat": args.repeat,
        "goal_device_over_cloud": GOAL,
        "device_over_cloud": head["device_candidates_over_cloud"],
        "goal_met": head["goal_met_candidates"],
        **paths,
        "pipeline_device_cost_is_full_catalogue": True,
        "candidate_only_max_abs_diff": max_diff,
        "pipeline_measure_cost": pipeline_cost,
        "llm_parameters": parameter_count(model.llm), "srm_parameters": parameter_count(model.srm),
        "environment": environment(device),
        "wall_seconds": round(time.perf_counter() - wall, 2),
    }
    lines = [f"{users} users, C = {config['candidate_num']}, LLMRec ({config['llm_backbone']}) vs {config['srm']}, "
             f"device {device}; goal: device <= cloud / 50\n"]
    rows = []
    for name, figures in paths.items():
        rows += [
            (name, figures["batch_size"], "cloud: LLMRec top-C, stale history", figures["cloud_seconds_per_user"], 1.0),
            (name, figures["batch_size"], "device: SRM full catalogue + gather (pipeline)",
             figures["device_full_seconds_per_user"], figures["device_full_over_cloud"]),
            (name, figures["batch_size"], "device: SRM candidates only",
             figures["device_candidates_seconds_per_user"], figures["device_candidates_over_cloud"]),
        ]
    lines += markdown(["calls", "batch", "path", "s / user", "vs cloud"], rows)
    emit(result, lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
