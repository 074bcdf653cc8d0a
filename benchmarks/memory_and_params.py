"""Peak memory of the cloud and device models' main operations, and their parameter counts.

Each phase runs inside ``_common.PeakMemory``: process RSS high-water mark (Linux
``VmHWM``, reset through ``/proc/self/clear_refs`` after returning freed heap with
``malloc_trim``; ``ru_maxrss`` where that is impossible), and on CUDA
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. tracemalloc is not
used: it does not see torch's CPU tensors. Phases, on the test users (``--users``) with
random weights and the default configs:

* cloud: LLMRec top-C on stale histories (``InProcessCloud.candidates``) batched by
  ``eval_batch_size`` and for one user; the cooperative-training candidate fill over every
  training sample (``CloudLists.get``, i.e. ``prefix_candidates``); one LLM training step
  (``window_loss`` + AdamW, as ``LLMRecTrainer``) on ``llm_batch_size`` windows;
* device, on the fresh test histories (built before the phases): SRM full-catalogue scoring
  (``DeviceSRM.score_catalogue`` + gather), candidate-only scoring (``DeviceSRM.score_lists``
  batched, ``DeviceSRM.candidate_scores`` for one user), one SRM training step (its RecBole
  trainer's optimizer, ``calculate_loss``) on a ``train_batch_size`` batch of RecBole's loader.

    python benchmarks/memory_and_params.py --dataset=ml-100k
"""

import sys
import time

import torch

from _common import PeakMemory, _status_kib, emit, environment, lsc4rec_setup, markdown, parse, parser, run, scratch_cwd
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.experiment.cost import parameter_count
from recbole_lsc.protocol import Samples


def parameter_bytes(module):
    """Bytes held by ``module``'s parameters."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def recorder(phases, device):
    """``measure(name, fn)``: ``fn()`` inside ``PeakMemory``, its figures kept as ``phases[name]``."""
    def measure(name, fn):
        with PeakMemory(device) as peak:
            out = fn()
        phases[name] = peak.figures
        return out

    return measure


def llm_step(setup):
    """One LLM training step on ``llm_batch_size`` cloud windows (``window_loss`` + AdamW, as ``LLMRecTrainer``)."""
    config, llm, device = setup.config, setup.model.llm, setup.device
    windows, lengths = setup.protocol.cloud_training_windows(config["llm_max_len"])
    items = torch.from_numpy(windows[: config["llm_batch_size"]]).to(device)
    lens = torch.from_numpy(lengths[: config["llm_batch_size"]]).to(device)

    def step():
        llm.requires_grad_(True).train()
        optimizer = torch.optim.AdamW(llm.parameters(), lr=config["llm_learning_rate"],
                                      weight_decay=config["llm_weight_decay"])
        optimizer.zero_grad()
        llm.window_loss(items, lens).backward()
        optimizer.step()
        llm.eval()

    return step


def srm_step(setup):
    """One SRM training step: its RecBole trainer's optimizer on one batch of RecBole's training loader."""
    srm, device = setup.model.srm.model, setup.device
    srm_trainer = setup.srm_recbole_trainer()
    train_batch = next(iter(setup.train_data))

    def step():
        srm.train()
        srm_trainer.optimizer.zero_grad()
        srm.calculate_loss(train_batch.to(device)).backward()
        srm_trainer.optimizer.step()
        srm.eval()

    return step


def cloud_phases(setup, measure, samples):
    """The cloud's phases; returns the batched stale lists' item ids (what the device re-ranks)."""
    num, llm = setup.config["candidate_num"], setup.model.llm
    first = Samples(user=samples.user[:1], position=samples.position[:1])
    one_user_cloud = InProcessCloud(llm, 1, setup.device)
    lists = measure("cloud_candidates_batched", lambda: setup.cloud.candidates(*setup.cloud_history(samples), num))
    measure("cloud_candidates_one_user", lambda: one_user_cloud.candidates(*setup.cloud_history(first), num))
    measure("cloud_coop_candidate_fill", lambda: setup.lists.get("train", "stale"))
    measure("cloud_train_step", llm_step(setup))
    return lists.item_ids


def device_phases(setup, measure, ids):
    """The device's phases on the fresh test histories and the stale lists ``ids``."""
    srm, device, batch = setup.model.srm, setup.device, setup.config["eval_batch_size"]
    interaction = setup.srm_interaction("test")
    one_user, one_ids = interaction[:1].to(device), ids[:1].to(device)

    @torch.no_grad()
    def candidates_one_user():
        srm.eval()
        return srm.candidate_scores(one_user, one_ids)

    measure("device_full_batched", lambda: srm.score_catalogue(interaction, batch, device).gather(1, ids))
    measure("device_candidates_batched", lambda: srm.score_lists(interaction, ids, batch, device))
    measure("device_candidates_one_user", candidates_one_user)
    measure("device_train_step", srm_step(setup))


def main(argv=None):
    """Peak memory of every phase, parameter counts and sizes; print and emit the figures."""
    p = parser(__doc__)
    args, overrides = parse(p, argv)
    wall = time.perf_counter()
    phases = {}
    with scratch_cwd():
        setup = lsc4rec_setup(args, overrides)
        config, device = setup.config, setup.device
        llm, srm = setup.model.llm, setup.model.srm.model
        num, batch = config["candidate_num"], config["eval_batch_size"]
        samples = setup.protocol.samples("test")
        after_setup_mib = round((_status_kib("VmRSS") or 0) / 1024, 1)
        measure = recorder(phases, device)
        ids = cloud_phases(setup, measure, samples)
        device_phases(setup, measure, ids)

    params = {
        "llm_parameters": parameter_count(llm),
        "llm_item_embedding_parameters": llm.item_embedding.weight.numel(),
        "llm_backbone_parameters": parameter_count(llm.backbone),
        "llm_parameter_mib": round(parameter_bytes(llm) / 2**20, 3),
        "srm_parameters": parameter_count(srm),
        "srm_item_embedding_parameters": srm.item_embedding.weight.numel(),
        "srm_parameter_mib": round(parameter_bytes(srm) / 2**20, 3),
    }
    params["llm_over_srm_parameters"] = params["llm_parameters"] / params["srm_parameters"]
    result = {
        "benchmark": "memory_and_params",
        "dataset": args.dataset, "users": len(samples), "n_items": setup.dataset.item_num,
        "llm_backbone": config["llm_backbone"], "srm": config["srm"], "candidate_num": num,
        "eval_batch_size": batch, "llm_batch_size": config["llm_batch_size"],
        "train_batch_size": config["train_batch_size"],
        **params,
        "rss_after_setup_mib": after_setup_mib,
        "phases": phases,
        "environment": environment(device),
        "wall_seconds": round(time.perf_counter() - wall, 2),
    }
    lines = [f"{len(samples)} users, {setup.dataset.item_num} items, LLMRec ({config['llm_backbone']}) "
             f"{params['llm_parameters']:,} parameters vs {config['srm']} {params['srm_parameters']:,} "
             f"({params['llm_over_srm_parameters']:.1f}x); RSS after set-up {after_setup_mib} MiB, device {device}\n"]
    cuda = device.type == "cuda"
    headers = ["phase", "peak RSS MiB", "RSS delta MiB"] + (["CUDA peak MiB", "CUDA delta MiB"] if cuda else [])
    rows = [
        (name, f["rss_peak_mib"], f["rss_delta_mib"], *((f["cuda_peak_mib"], f["cuda_delta_mib"]) if cuda else ()))
        for name, f in phases.items()
    ]
    lines += markdown(headers, rows)
    emit(result, lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
