"""One LSC4Rec run: every row of the comparison table, the request curves and the costs.

Rows (``results.json`` roles): ``srm`` (the device model alone over the full catalogue,
fresh history), ``llm_stale`` / ``llm_fresh`` (the LLM alone; fresh = a request for every
user), ``srm_rerank`` (the device re-ranks the stale list, no fusion, no request),
``lsc4rec`` (fusion + the configured request policy at ``request_ratio``) and ``ablation``
rows (without cooperative training, without re-training). Everything tuned (alpha, request
thresholds, the learned policy) is fit on validation; test is only scored.
"""

import logging
from dataclasses import dataclass

import numpy as np
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.cloud.trainer import train_or_load
from recbole_lsc.config import srm_config_of
from recbole_lsc.errors import ConfigError
from recbole_lsc.evaluation.metrics import metric_values, summary
from recbole_lsc.evaluation.ranks import catalogue_ranks, list_ranks
from recbole_lsc.experiment.collaboration import Collaboration, phase_lists
from recbole_lsc.experiment.cost import measure_cost
from recbole_lsc.experiment.lists import CloudLists
from recbole_lsc.experiment.seeds import (
    SINGLE_MODELS, aggregate_curve, aggregate_rows, mean_per_user, model_tests, policy_tests, with_seed,
)
from recbole_lsc.experiment.stages import device_stages, train_independent_srm
from recbole_lsc.lsc4rec import LSC4Rec
from recbole_lsc.protocol import DeviceCloudProtocol
from recbole_lsc.results import result_row
from recbole_lsc.utils import get_model


@dataclass
class RunData:
    dataset: object
    protocol: DeviceCloudProtocol
    srm_config: object
    train_data: object
    valid_data: object


def load_data(config):
    """The dataset (built with the SRM's config, so both models read the same one), its protocol
    and the SRM's RecBole loaders."""
    srm_config = srm_config_of(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(srm_config)
    logging.getLogger().info(dataset)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    train_data, valid_data, _ = data_preparation(srm_config, dataset)
    return RunData(dataset, protocol, srm_config, train_data, valid_data)


def collaboration(config, srm, lists, protocol):
    """Fusion and requests of one SRM state over the valid and test users' lists."""
    return Collaboration(config, *(phase_lists(srm, lists, protocol, phase, config) for phase in ("valid", "test")))


def srm_ranks(config, srm, protocol, phase):
    """The device SRM's full-catalogue target ranks with fresh histories (the ``srm`` row)."""
    interaction = protocol.interaction(protocol.samples(phase), "fresh", srm.max_len, srm.fields)
    srm.eval()
    return catalogue_ranks(lambda batch: srm.catalogue_scores(batch.to(config["device"])), interaction,
                           config["eval_batch_size"], srm.fields["item"])


def single_model_rows(config, independent, llm_trainer, final):
    """Rows ``srm``, ``llm_stale``, ``llm_fresh``, ``srm_rerank`` and their per-user test ranks."""
    protocol = llm_trainer.protocol
    ranks = {"srm": {phase: srm_ranks(config, independent, protocol, phase) for phase in ("valid", "test")}}
    for view in ("stale", "fresh"):
        ranks[f"llm_{view}"] = {phase: llm_trainer.ranks(phase, view) for phase in ("valid", "test")}
    ranks["srm_rerank"] = {phase: list_ranks(lists.stale.item_ids, lists.stale_srm, lists.targets)
                           for phase, lists in final.phases.items()}
    names = {"srm": config["srm"], "llm_stale": "LLMRec (stale)", "llm_fresh": "LLMRec (fresh)",
             "srm_rerank": f"{config['srm']} re-rank"}
    rows = [result_row(names[role], role, summary(ranks[role]["valid"], config), summary(ranks[role]["test"], config))
            for role in ("srm", "llm_stale", "llm_fresh", "srm_rerank")]
    return rows, {role: metric_values(phases["test"], config) for role, phases in ranks.items()}


def ablation_rows(config, states, lists, protocol):
    """LSC4Rec without one stage, each from the SRM state that skipped it."""
    ablations = []
    if states.retrained_only is not None:
        ablations.append(("LSC4Rec w/o cooperative training", states.retrained_only))
    if config["retrain"]:
        ablations.append(("LSC4Rec w/o re-training", states.cooperative))
    return [collaboration(config, srm, lists, protocol).row(name, "ablation", config["request_policy"],
                                                            config["request_ratio"], config["seed"])[0]
            for name, srm in ablations]


def run_one_seed(config, saved):
    """Train cloud, train device, cooperative stage, re-training; then rows, curves, costs."""
    data = load_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = LSC4Rec(config, data.dataset, get_model(config["srm"]), data.srm_config).to(config["device"])
    llm_trainer, llm_log = train_or_load(config, model.llm, data.protocol, data.dataset)
    model.llm.requires_grad_(False)
    srm_log = train_independent_srm(config, model.srm, data, saved)
    cloud = InProcessCloud(model.llm, config["eval_batch_size"], config["device"], show_progress=config["show_progress"])
    lists = CloudLists(cloud, data.protocol, config)
    states = device_stages(config, model.srm, lists, data.protocol)
    final = collaboration(config, states.final, lists, data.protocol)

    rows, per_user = single_model_rows(config, model.srm, llm_trainer, final)
    main_row, per_user["lsc4rec"] = final.row("LSC4Rec", "lsc4rec", config["request_policy"],
                                              config["request_ratio"], config["seed"])
    rows += [main_row, *ablation_rows(config, states, lists, data.protocol)]
    curve, curve_per_user = final.curve(config["request_curve_ratios"], config["seed"])
    cost = measure_cost(config, cloud, states.final, data.protocol, final.phases["test"].stale.item_ids)
    users = len(final.phases["test"].targets)
    cost["cloud_calls"] = {"initial_lists": users, "requests": int(round(main_row["realized"] * users)),
                           "llm_candidate_passes": dict(lists.passes)}
    info = {"stages": {"llm": llm_log, "srm": srm_log, **states.logs},
            "alpha_stale": final.alpha["stale"], "alpha_fresh": final.alpha["fresh"],
            "learned_policy_weights": final.learned.weights.round(6).tolist(), "learned_policy_l2": final.learned.l2,
            "learned_policy_cv": {str(l2): round(score, 6) for l2, score in final.learned.cv_scores.items()}}
    return {"rows": rows, "per_user": per_user, "curve": curve, "curve_per_user": curve_per_user, "cost": cost,
            "info": info}


def check_config(config):
    if config["candidate_num"] < max(config["topk"]):
        raise ConfigError(
            f"candidate_num ({config['candidate_num']}) must be >= the largest topk ({max(config['topk'])}): "
            "a list shorter than K cannot be scored at K"
        )


def run_lsc4rec(config, saved=True):
    """``config["seeds"]`` runs (seed, seed + 1, ...), aggregated; returns ``(rows, extra)``."""
    check_config(config)
    seeds = [config["seed"] + offset for offset in range(config["seeds"])]
    runs = []
    for seed in seeds:
        logging.getLogger().info(f"LSC4Rec run with seed {seed}")
        runs.append(run_one_seed(with_seed(config, seed), saved))
    rows = aggregate_rows(runs)
    key = config["valid_metric"].lower()
    for row in rows:
        if row["role"] == "lsc4rec":
            row["paired_tests"] = {"metric": key, **model_tests(runs)}
    per_user = {role: mean_per_user(runs, role) for role in ("lsc4rec", *SINGLE_MODELS)}
    extra = {
        "seeds": seeds,
        "request_curve": aggregate_curve(runs),
        "policy_tests": policy_tests(runs, config["request_curve_ratios"]),
        "cost": runs[0]["cost"],
        "runs": [run["info"] for run in runs],
        # test users in protocol order (mean over seeds): what later paired tests need
        "per_user_test": {"metric": key, **{role: np.round(values, 6).tolist() for role, values in per_user.items()}},
    }
    return rows, extra
