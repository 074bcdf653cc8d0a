"""Cooperative-training epoch time / plain SRM epoch time (goal: <= 1.5).

Plain: one epoch of the SRM's own RecBole trainer (``_train_epoch`` of the trainer that
``experiment.srm.fit_recbole`` builds) over RecBole's training loader.
Cooperative: one epoch of the cooperative stage's loop, ``device.training.fine_tune`` with
``cooperative_loss`` over the fresh training histories (built once, as RecBole's loader is),
with the LLM's training candidates already cached (``CloudLists``). For the epoch figure the
stage's validation (``RerankValidation``, run before the first and after every epoch) is a
constant; it is timed on its own, and so is one whole one-epoch stage with it
(``FineTuningStages.cooperative``, ``coop_epochs`` set to 1). The one-off candidate fill
(``prefix_candidates`` over every training sample) is timed separately and reported
amortised over the configured ``coop_epochs``. Random weights: the timing does not depend
on training.

    python benchmarks/coop_epoch_vs_plain.py --dataset=ml-100k --repeat=2
    python benchmarks/coop_epoch_vs_plain.py --users=100 --repeat=1 --profile=20   # cProfile the epochs
"""

import statistics
import sys
import time

import numpy as np
import torch

from _common import (
    emit, environment, lsc4rec_setup, markdown, parse, parser, profile, profile_table, run, scratch_cwd,
    timed,
)
from recbole_lsc.device.training import RerankValidation, cooperative_loss, fine_tune
from recbole_lsc.experiment.stages import FineTuningStages

GOAL = 1.5


def coop_epoch(setup, interaction):
    """One cooperative epoch without validation: ``fine_tune`` for 1 epoch with a constant ``validate``."""
    config = setup.config
    loss_of = cooperative_loss(setup.lists.get("train", "stale"), config)
    return lambda: fine_tune(setup.model.srm, "cooperative", interaction, loss_of, lambda srm: np.zeros(1), 1,
                             config["coop_learning_rate"], config, config["seed"])


def rerank_validation(setup):
    """The cooperative stage's validation: the SRM re-ranking the stale valid lists."""
    protocol = setup.protocol
    targets = torch.from_numpy(protocol.targets(protocol.samples("valid")))
    return RerankValidation(setup.srm_interaction("valid"), setup.lists.get("valid", "stale"), targets, setup.config)


def main(argv=None):
    """Time plain and cooperative epochs (interleaved), the validations, one whole stage and the fill."""
    p = parser(__doc__, profile_what="one epoch of each kind")
    p.add_argument("--repeat", type=int, default=2, help="timed epochs of each kind (median)")
    args, overrides = parse(p, argv)
    wall = time.perf_counter()
    with scratch_cwd():
        setup = lsc4rec_setup(args, overrides)
        config, lists, srm, device = setup.config, setup.lists, setup.model.srm, setup.device
        epochs = config["coop_epochs"]
        config["coop_epochs"] = 1
        srm_trainer = setup.srm_recbole_trainer()

        def plain_epoch():
            return srm_trainer._train_epoch(setup.train_data, 0)

        fill_s, _ = timed(lambda: lists.get("train", "stale"), device)  # prefix_candidates, cached
        valid_fill_s, _ = timed(lambda: lists.get("valid", "stale"), device)
        validation = rerank_validation(setup)
        rerank_s, _ = timed(lambda: validation(srm), device, args.repeat)
        plain_valid_s, _ = timed(lambda: srm_trainer._valid_epoch(setup.valid_data), device, args.repeat)

        epoch = coop_epoch(setup, setup.srm_interaction("train"))
        plain, coop = [], []
        for _ in range(args.repeat):  # interleaved, so drifting machine load hits both kinds alike
            plain.append(timed(plain_epoch, device)[0])
            coop.append(timed(epoch, device)[0])
        profiles = {}
        if args.profile:
            _, profiles["plain_epoch"] = profile(plain_epoch, args.profile)
            _, profiles["coop_epoch"] = profile(epoch, args.profile)
        stages = FineTuningStages(config, lists, setup.protocol)
        stage_s, _ = timed(lambda: stages.cooperative(srm), device)  # one epoch + its two validations

    plain_s, coop_s = statistics.median(plain), statistics.median(coop)
    train_samples = len(setup.protocol.samples("train"))
    result = {
        "benchmark": "coop_epoch_vs_plain",
        "dataset": args.dataset, "users": int((setup.protocol.lengths > 0).sum()), "srm": config["srm"],
        "coop_loss": config["coop_loss"], "candidate_num": config["candidate_num"],
        "train_batch_size": config["train_batch_size"], "repeat": args.repeat,
        "plain_train_samples": len(setup.train_data.dataset), "coop_train_samples": train_samples,
        "goal_coop_over_plain": GOAL,
        "plain_epoch_seconds": plain_s, "coop_epoch_seconds": coop_s,
        "coop_over_plain": coop_s / plain_s,
        "goal_met": coop_s / plain_s <= GOAL,
        "plain_epoch_seconds_all": plain, "coop_epoch_seconds_all": coop,
        "plain_validation_seconds": plain_valid_s, "coop_validation_seconds": rerank_s,
        "coop_stage_one_epoch_seconds": stage_s,
        "coop_stage_over_plain_epoch_with_validation": stage_s / (plain_s + plain_valid_s),
        "candidate_fill_seconds": fill_s, "valid_candidate_fill_seconds": valid_fill_s,
        "configured_coop_epochs": epochs,
        "coop_with_fill_over_plain": (fill_s + epochs * coop_s) / (epochs * plain_s) if epochs else None,
        "environment": environment(device),
        "wall_seconds": round(time.perf_counter() - wall, 2),
    }
    if profiles:
        result["profile"] = profiles
    lines = [f"{result['users']} users, {train_samples} training samples, {config['srm']}, coop_loss "
             f"{config['coop_loss']}, C = {config['candidate_num']}, device {device}; goal: coop / plain <= {GOAL}\n"]
    lines += markdown(["what", "seconds", "vs plain epoch"], [
        ("plain SRM epoch (RecBole trainer)", plain_s, 1.0),
        ("cooperative epoch (cached candidates)", coop_s, coop_s / plain_s),
        ("plain validation pass (RecBole evaluate)", plain_valid_s, plain_valid_s / plain_s),
        ("cooperative validation (RerankValidation)", rerank_s, rerank_s / plain_s),
        ("cooperative stage, 1 epoch incl. validation", stage_s, stage_s / plain_s),
        ("training candidate fill (prefix_candidates, once)", fill_s, fill_s / plain_s),
    ])
    for name, entries in profiles.items():
        lines += profile_table(entries["cumulative"], f"cProfile {name}, top cumulative")
    emit(result, lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
