"""Device re-ranking of C candidates vs cloud candidate generation, seconds per user.

Cloud: LLMRec's exact top-C on the stale history (``InProcessCloud.candidates``), as the
pipeline's ``measure_cost`` times it. Device, two ways, both on the fresh test histories:

* candidates only: ``DeviceSRM.score_lists`` (``candidate_scores``: C dot products per user
  for the SRMs whose scores are dot products with an item table, ``scores_are_dot_products``;
  full scoring + gather for any other, ``srm_candidate_scoring`` in the cost figures): the deployment
  cost, and the path ``measure_cost`` times as the pipeline's device cost;
* full catalogue: ``DeviceSRM.score_catalogue`` then gather: the SRM scores the WHOLE
  catalogue and gathers the C candidates (the pipeline needs the full scores for two request
  features and the ``srm`` row, not for its device cost). Its candidate scores must equal the
  candidate-only ones (atol 1e-5), or the script exits with status 1 after printing its figures.

Each path runs batched as the pipeline does (``eval_batch_size`` users per batch) and one
user at a time (what a device serves). The SRM's input (``DeviceCloudProtocol.interaction``)
is built once, outside the timings, as in ``measure_cost``. Default configs (LLMRec.yaml,
SASRec.yaml; override with --key=value), random weights: the timing does not depend on
training. Goal: device (candidates only) <= cloud / 50.

    python benchmarks/device_rerank_vs_cloud.py --dataset=ml-100k --users=0 --repeat=3
"""

import contextlib
import sys
import time

import numpy as np
import torch

from _common import emit, environment, lsc4rec_setup, markdown, parse, parser, run, scratch_cwd, timed
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.experiment.cost import measure_cost, parameter_count

GOAL = 1 / 50
ATOL = 1e-5


@contextlib.contextmanager
def eval_batch_size(config, size):
    """``config["eval_batch_size"] = size`` inside the block (``measure_cost`` batches the SRM by it)."""
    saved = config["eval_batch_size"]
    config["eval_batch_size"] = size
    try:
        yield
    finally:
        config["eval_batch_size"] = saved


def path_costs(setup, interaction, ids, size, repeat, warmup):
    """Seconds per user at ``size`` users per batch: cloud and the pipeline's device cost (median
    ``measure_cost``), the device's full-catalogue and candidate-only scoring (median ``timed``);
    also the first ``measure_cost`` figures and both paths' candidate scores."""
    config, srm, device, users = setup.config, setup.model.srm, setup.device, len(ids)
    cloud = InProcessCloud(setup.model.llm, size, device)
    with eval_batch_size(config, size):
        runs = [measure_cost(config, cloud, srm, setup.protocol, ids) for _ in range(warmup + repeat)][warmup:]
    full_s, full_cands = timed(lambda: srm.score_catalogue(interaction, size, device).gather(1, ids),
                               device, repeat, warmup)
    cand_s, cand_scores = timed(lambda: srm.score_lists(interaction, ids, size, device), device, repeat, warmup)
    figures = {
        "batch_size": min(size, users),
        "cloud_seconds_per_user": float(np.median([r["cloud_seconds_per_user"] for r in runs])),
        "pipeline_device_seconds_per_user": float(np.median([r["device_seconds_per_user"] for r in runs])),
        "device_full_seconds_per_user": full_s / users,
        "device_candidates_seconds_per_user": cand_s / users,
    }
    return figures, runs[0], cand_scores, full_cands


def with_ratios(figures):
    """``figures`` with each device path's share of the cloud's cost and its goal check."""
    cloud = figures["cloud_seconds_per_user"]
    figures["device_full_over_cloud"] = figures["device_full_seconds_per_user"] / cloud
    figures["device_candidates_over_cloud"] = figures["device_candidates_seconds_per_user"] / cloud
    figures["goal_met_candidates"] = figures["device_candidates_over_cloud"] <= GOAL
    figures["goal_met_full"] = figures["device_full_over_cloud"] <= GOAL
    return figures


def table(paths):
    """Markdown rows: per call size, the cloud and both device paths."""
    rows = []
    for name, figures in paths.items():
        rows += [
            (name, figures["batch_size"], "cloud: LLMRec top-C, stale history", figures["cloud_seconds_per_user"], 1.0),
            (name, figures["batch_size"], "device: SRM full catalogue + gather (score_catalogue)",
             figures["device_full_seconds_per_user"], figures["device_full_over_cloud"]),
            (name, figures["batch_size"], "device: SRM candidates only (score_lists; pipeline)",
             figures["device_candidates_seconds_per_user"], figures["device_candidates_over_cloud"]),
        ]
    return markdown(["calls", "batch", "path", "s / user", "vs cloud"], rows)


def main(argv=None):
    """Time cloud and device per user, batched and one user per call; check the two device paths agree."""
    p = parser(__doc__)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per batched path (median; one warm-up first)")
    p.add_argument("--batch1", type=int, default=1, help="timed runs per one-user-at-a-time path (median)")
    args, overrides = parse(p, argv)
    wall = time.perf_counter()
    with scratch_cwd():
        setup = lsc4rec_setup(args, overrides)
        config, model, device = setup.config, setup.model, setup.device
        ids = setup.lists.get("test", "stale").item_ids  # the stale lists the device re-ranks
        interaction = setup.srm_interaction("test")
        users = len(ids)
        batched, pipeline_cost, cand_scores, full_cands = path_costs(setup, interaction, ids, config["eval_batch_size"],
                                                                     args.repeat, warmup=1)
        single, _, cand1_scores, full1_cands = path_costs(setup, interaction, ids, 1, args.batch1, warmup=0)
    max_diff = max(float((cand_scores - full_cands).abs().max()), float((cand1_scores - full1_cands).abs().max()))
    equal = torch.allclose(cand_scores, full_cands, atol=ATOL) and torch.allclose(cand1_scores, full1_cands, atol=ATOL)

    paths = {"batched": with_ratios(batched), "one_user_per_call": with_ratios(single)}
    head = paths["batched"]
    result = {
        "benchmark": "device_rerank_vs_cloud",
        "dataset": args.dataset, "users": users, "candidate_num": config["candidate_num"], "srm": config["srm"],
        "llm_backbone": config["llm_backbone"], "n_items": setup.dataset.item_num, "repeat": args.repeat,
        "goal_device_over_cloud": GOAL,
        "device_over_cloud": head["device_candidates_over_cloud"],
        "goal_met": head["goal_met_candidates"],
        **paths,
        "candidate_only_max_abs_diff": max_diff,
        "candidate_only_equals_full_atol": ATOL,
        "candidate_only_equals_full": equal,
        "pipeline_measure_cost": pipeline_cost,
        "llm_parameters": parameter_count(model.llm), "srm_parameters": parameter_count(model.srm.model),
        "environment": environment(device),
        "wall_seconds": round(time.perf_counter() - wall, 2),
    }
    lines = [f"{users} users, C = {config['candidate_num']}, LLMRec ({config['llm_backbone']}) vs {config['srm']}, "
             f"device {device}; goal: device <= cloud / 50\n"]
    lines += table(paths)
    lines.append(f"\ncandidate-only vs full-catalogue candidate scores: max |diff| {max_diff:.2e} "
                 f"({'equal' if equal else 'NOT equal'} at atol {ATOL:g})")
    emit(result, lines, args.out)
    if not equal:
        print(f"error: candidate-only scores differ from the gathered full scores by {max_diff:.2e} > {ATOL:g}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
