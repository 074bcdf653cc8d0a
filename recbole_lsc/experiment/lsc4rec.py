"""One LSC4Rec run: every row of the comparison table, the request curves and the costs.

Rows (``results.json`` roles), each saying what the device held (``device_catalogue``):
``srm`` (the device model ranks the whole item table with the fresh history; trained on every
training target, as stock RecBole), ``llm_stale`` / ``llm_fresh`` (the cloud alone; fresh = a
request for every user), ``srm_rerank`` (the device re-ranks the stale list it received, no
fusion, no request), one ``lsc4rec`` row per ``device_catalogue`` setting (fusion + the
configured request policy at ``request_ratio``) and its ``ablation`` rows (without cooperative
training, without re-training), for each ``retrain_scope`` (each device re-trains its own copy,
or one model for the fleet; every row records its ``retrain_scope``). Everything tuned (alpha,
request thresholds, the learned policy, the re-training epoch) is fit on validation; test is
only scored.
"""

import logging
from dataclasses import dataclass

import numpy as np
import torch
from recbole.utils import init_seed

from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.cloud.trainer import train_or_load
from recbole_lsc.config import srm_config_of
from recbole_lsc.data.loading import create_dataset, data_preparation
from recbole_lsc.errors import ConfigError
from recbole_lsc.evaluation.metrics import metric_values, summary
from recbole_lsc.evaluation.ranks import catalogue_ranks, list_ranks
from recbole_lsc.experiment.bundles import device_bundle
from recbole_lsc.experiment.clock import WallClock
from recbole_lsc.experiment.collaboration import Collaboration, phase_lists
from recbole_lsc.experiment.cost import measure_cost
from recbole_lsc.experiment.lists import CloudLists
from recbole_lsc.experiment.seeds import (
    SINGLE_MODELS, aggregate_curve, aggregate_rows, mean_per_user, model_tests, policy_tests, with_seed,
)
from recbole_lsc.experiment.stages import device_stages, settings_of, train_reference_and_device_srm
from recbole_lsc.lsc4rec import LSC4Rec
from recbole_lsc.protocol import DeviceCloudProtocol
from recbole_lsc.results import result_row, setting_key, setting_label
from recbole_lsc.utils import get_model


@dataclass
class RunData:
    dataset: object
    protocol: DeviceCloudProtocol
    srm_config: object
    train_data: object
    valid_data: object


def load_dataset(config):
    """``(dataset, protocol, srm_config)``: the dataset is built with the SRM's config, so both
    models read the same one."""
    srm_config = srm_config_of(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(srm_config)
    logging.getLogger().info(dataset)
    return dataset, DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"]), srm_config


def load_data(config):
    """The dataset, its protocol and the SRM's RecBole loaders."""
    dataset, protocol, srm_config = load_dataset(config)
    train_data, valid_data, _ = data_preparation(srm_config, dataset)
    return RunData(dataset, protocol, srm_config, train_data, valid_data)


def collaboration(config, srm, lists, protocol, device_catalogue, fresh_window_srm=None):
    """Fusion and requests of one SRM state over the valid and test users' lists.

    ``fresh_window_srm``, an SRM that never trained on the fresh window's targets, scores those
    samples as more simulated requests for the learned policy (the SRM that did train on them
    would be over-confident exactly there).
    """
    valid, test = (phase_lists(srm, lists, protocol, phase, config, device_catalogue) for phase in ("valid", "test"))
    extra = None
    if fresh_window_srm is not None and len(protocol.samples("retrain")):
        extra = phase_lists(fresh_window_srm, lists, protocol, "retrain", config, device_catalogue)
    return Collaboration(config, valid, test, extra)


def srm_ranks(config, srm, protocol, phase):
    """The device SRM's full-catalogue target ranks with fresh histories (the ``srm`` row)."""
    interaction = protocol.interaction(protocol.samples(phase), "fresh", srm.max_len, srm.fields)
    srm.eval()
    return catalogue_ranks(lambda batch: srm.catalogue_scores(batch.to(config["device"])), interaction,
                           config["eval_batch_size"], srm.fields["item"])


# the re-ranking device: it holds only its lists and re-trained its own copy on its own data
RERANK_SETTING = ("candidates", "device")


def single_model_rows(config, reference, device_srm, llm_trainer, lists):
    """Rows ``srm`` (``reference`` over the item table), ``llm_stale``, ``llm_fresh``, ``srm_rerank``
    (``device_srm``, the final SRM of :data:`RERANK_SETTING`, re-ranks the stale lists it
    received) and their per-user test values."""
    protocol = llm_trainer.protocol
    ranks = {"srm": {phase: srm_ranks(config, reference, protocol, phase) for phase in ("valid", "test")}}
    for view in ("stale", "fresh"):
        ranks[f"llm_{view}"] = {phase: llm_trainer.ranks(phase, view) for phase in ("valid", "test")}
    ranks["srm_rerank"] = {}
    for phase in ("valid", "test"):
        stale = lists.get(phase, "stale")
        interaction = protocol.interaction(protocol.samples(phase), "fresh", device_srm.max_len, device_srm.fields)
        scores = device_srm.score_lists(interaction, stale.item_ids, config["eval_batch_size"], config["device"])
        ranks["srm_rerank"][phase] = list_ranks(stale.item_ids, scores, torch.from_numpy(protocol.targets(
            protocol.samples(phase))))
    rows = [result_row(name, role, summary(ranks[role]["valid"], config), summary(ranks[role]["test"], config),
                       device_catalogue=held, retrain_scope=scope)
            for role, name, held, scope in (("srm", config["srm"], "full", None),
                                            ("llm_stale", "LLMRec (stale)", "cloud", None),
                                            ("llm_fresh", "LLMRec (fresh)", "cloud", None),
                                            ("srm_rerank", f"{config['srm']} re-rank", *RERANK_SETTING))]
    return rows, {role: metric_values(phases["test"], config) for role, phases in ranks.items()}


def ablation_rows(config, states, lists, protocol, setting):
    """LSC4Rec without one stage, each from the SRM state that skipped it; its learned policy is
    fit as the main row's (with the fresh-window requests scored by an SRM that never saw them)."""
    cloud_window = config["srm_train_window"] == "cloud"
    label = setting_label(*setting)
    ablations = []
    if setting in states.retrained_only:
        ablations.append((f"LSC4Rec ({label}) w/o cooperative training", states.retrained_only[setting],
                          states.independent if cloud_window else None))
    if config["retrain"]:
        ablations.append((f"LSC4Rec ({label}) w/o re-training", states.cooperative,
                          states.cooperative if cloud_window else None))
    rows = []
    for name, srm, fresh_window_srm in ablations:
        row = collaboration(config, srm, lists, protocol, setting[0], fresh_window_srm).row(
            name, "ablation", config["request_policy"], config["request_ratio"], config["seed"])[0]
        rows.append({**row, "retrain_scope": setting[1]})
    return rows


def setting_results(config, states, lists, protocol, setting):
    """The ``lsc4rec`` row, ablations, curve and choices of one (``device_catalogue``,
    ``retrain_scope``) setting."""
    mode, scope = setting
    fresh_window_srm = states.cooperative if config["srm_train_window"] == "cloud" else None
    final = collaboration(config, states.final[setting], lists, protocol, mode, fresh_window_srm)
    row, per_user = final.row(f"LSC4Rec ({setting_label(mode, scope)})", "lsc4rec", config["request_policy"],
                              config["request_ratio"], config["seed"])
    row["retrain_scope"] = scope
    curve, curve_per_user = final.curve(config["request_curve_ratios"], config["seed"])
    key = setting_key(mode, scope)
    return {"rows": [row, *ablation_rows(config, states, lists, protocol, setting)], "per_user": per_user,
            "curve": [{**point, "retrain_scope": scope} for point in curve],
            "curve_per_user": {(key, *k): values for k, values in curve_per_user.items()},
            "info": {**final.info(), "retrain_scope": scope}, "collaboration": final}


def label_srm_trainers(rows, srm_logs):
    """Each row built on an SRM records which trainer first trained it (``srm_trainer``): the
    reference's for ``srm``, the device SRM's for the rows of the device."""
    device_log = srm_logs.get("device_srm", srm_logs["srm"])
    for row in rows:
        if row["role"] == "srm":
            row["srm_trainer"] = srm_logs["srm"].get("trainer")
        elif row["role"] not in ("llm_stale", "llm_fresh"):
            row["srm_trainer"] = device_log.get("trainer")


def cloud_calls(lists, protocol, results):
    """Every list the devices asked the cloud for: the test users' initial lists and requests,
    and the calibration calls (the validation users' and fresh-window samples' lists that
    alpha, the request thresholds and the learned policy were fit on, and the lists a device
    received over its fresh window)."""
    users = len(protocol.samples("test"))
    calibration = {key: len(protocol.samples(key.split("/")[0])) for key in lists.passes
                   if key.split("/")[0] in ("valid", "retrain")}
    return {"initial_lists": users, "calibration": calibration, "calibration_total": sum(calibration.values()),
            "llm_candidate_passes": dict(lists.passes),
            "requests": {key: int(round(result["rows"][0]["realized"] * users)) for key, result in results.items()}}


def run_one_seed(config, saved):
    """Train cloud, train device, cooperative stage, re-training; then rows, curves, costs.
    Each step's wall seconds land in the run's info (``wall_seconds``)."""
    clock = WallClock()
    with clock.step("data"):
        data = load_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = LSC4Rec(config, data.dataset, get_model(config["srm"]), data.srm_config).to(config["device"])
    with clock.step("llm"):
        llm_trainer, llm_log = train_or_load(config, model.llm, data.protocol, data.dataset)
    model.llm.requires_grad_(False)
    with clock.step("srm and device_srm"):
        reference, independent, srm_logs = train_reference_and_device_srm(config, data, saved)
    cloud = InProcessCloud(model.llm, config["eval_batch_size"], config["device"], show_progress=config["show_progress"])
    lists = CloudLists(cloud, data.protocol, config)
    with clock.step("cooperative and re-training"):
        states = device_stages(config, independent, lists, data.protocol, extra_settings=[RERANK_SETTING])

    rerank_srm = states.final[RERANK_SETTING]
    with clock.step("single-model rows"):
        rows, per_user = single_model_rows(config, reference, rerank_srm, llm_trainer, lists)
    modes, bundles = {}, {}
    for setting in settings_of(config):
        key = setting_key(*setting)
        with clock.step("fusion, policies and curves"):
            result = modes[key] = setting_results(config, states, lists, data.protocol, setting)
        rows += result["rows"]
        per_user[f"lsc4rec/{key}"] = result["per_user"]
        with clock.step("device bundles"):
            bundle = device_bundle(config, result.pop("collaboration"), result["per_user"], data.protocol,
                                   data.dataset, cloud.model_id)
        bundles[key] = (bundle, states.final[setting])
    label_srm_trainers(rows, srm_logs)
    # one device's cost: the SRM it runs (every device's copy has the same shape)
    with clock.step("cost"):
        cost = measure_cost(config, cloud, getattr(rerank_srm, "start", rerank_srm), data.protocol,
                            lists.get("test", "stale").item_ids)
    cost["cloud_calls"] = cloud_calls(lists, data.protocol, modes)
    info = {"stages": {"llm": llm_log, **srm_logs, **states.logs}, "modes": [result["info"] for result in modes.values()],
            "wall_seconds": clock.seconds}
    return {"rows": rows, "per_user": per_user, "curve": [p for result in modes.values() for p in result["curve"]],
            "curve_per_user": {key: v for result in modes.values() for key, v in result["curve_per_user"].items()},
            "cost": cost, "info": info, "modes": list(modes), "bundles": bundles,
            "cloud": (model.llm, data.dataset, cloud.model_id)}


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
        if len(runs) > 1:
            del runs[-1]["bundles"], runs[-1]["cloud"]  # the first seed's cloud and device are the ones saved
    rows = aggregate_rows(runs)
    key = config["valid_metric"].lower()
    for row in rows:
        if row["role"] == "lsc4rec":
            row["paired_tests"] = {"metric": key, **model_tests(runs, setting_key(row["device_catalogue"],
                                                                                   row["retrain_scope"]))}
    roles = [*(f"lsc4rec/{mode}" for mode in runs[0]["modes"]), *SINGLE_MODELS]
    per_user = {role: mean_per_user(runs, role) for role in roles}
    extra = {
        "seeds": seeds,
        "request_curve": aggregate_curve(runs),
        "policy_tests": policy_tests(runs, config["request_curve_ratios"]),
        "cost": runs[0]["cost"],
        "runs": [run["info"] for run in runs],
        # test users in protocol order (mean over seeds): what later paired tests need
        "per_user_test": {"metric": key, **{role: np.round(values, 6).tolist() for role, values in per_user.items()}},
        "device_bundles": runs[0].pop("bundles"),
        "run_cloud": runs[0].pop("cloud"),  # (llm, dataset, model id): what the run folder keeps of the cloud
    }
    return rows, extra


class LSC4RecTrainer:
    """The trainer ``get_trainer(..., "LSC4Rec")`` returns; it only runs :func:`run_lsc4rec`.

    LSC4Rec has no single training loop for a RecBole ``Trainer``: it trains the cloud LLM, the
    device SRMs, then the cooperative and re-training stages, each on the device-cloud
    protocol's own samples, and fits fusion and requests on validation. So this class takes no
    model or dataloaders: ``fit`` builds the data and both models from the config and runs every
    seed, as ``recbole-lsc --model=LSC4Rec`` does (without writing ``results.json``).
    """

    def __init__(self, config):
        self.config = config

    def fit(self, saved=True):
        """Run the whole pipeline; ``(rows, extra)`` as :func:`run_lsc4rec` returns them."""
        return run_lsc4rec(self.config, saved=saved)
