"""One LSC4Rec run: every row of the comparison table, the request curves and the costs.

Rows (``results.json`` roles): ``srm`` (the device model alone over the full catalogue,
fresh history), ``llm_stale`` / ``llm_fresh`` (the LLM alone; fresh = a request for every
user), ``srm_rerank`` (the device re-ranks the stale list, no fusion, no request),
``lsc4rec`` (fusion + the configured request policy at ``request_ratio``) and ``ablation``
rows (without cooperative training, without re-training). Everything tuned (alpha, request
thresholds, the learned policy) is fit on validation; test is only scored.
"""

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lsc.collab.candidates import sample_candidates
from recbole_lsc.collab.fusion import ALPHA_GRID, fuse, rank_scores, target_rank
from recbole_lsc.collab.metrics import evaluate_lists, mean_metrics, per_user_metrics
from recbole_lsc.collab.request import (
    FEATURE_NAMES, LearnedRequestPolicy, calibrate_threshold, policy_priority, request_features, top_share,
)
from recbole_lsc.collab.stats import mean_std, paired_test
from recbole_lsc.config import srm_config_of
from recbole_lsc.data.protocol import DeviceCloudProtocol
from recbole_lsc.errors import ConfigError
from recbole_lsc.model.sequential_recommender.lsc4rec import LSC4Rec
from recbole_lsc.results import result_row
from recbole_lsc.trainer import LSC4RecTrainer

CURVE_POLICIES = ("random", "consistency", "top1_missing", "regret", "learned", "oracle")
RULE_POLICIES = ("random", "consistency", "top1_missing", "regret")  # what the learned policy is tested against
SINGLE_MODELS = ("srm", "srm_rerank", "llm_stale", "llm_fresh")


@dataclass
class PhaseLists:
    """What the device holds for one phase's users: both candidate lists, scored by both models."""

    targets: torch.Tensor
    stale_ids: torch.Tensor
    stale_llm: torch.Tensor
    stale_srm: torch.Tensor
    fresh_ids: torch.Tensor
    fresh_llm: torch.Tensor
    fresh_srm: torch.Tensor
    srm_full: torch.Tensor
    newest: torch.Tensor
    history_len: torch.Tensor

    def request_features(self, stale_scores, metric_by_rank):
        """Device-side request features of the stale list as shown (ordered by ``stale_scores``)."""
        return request_features(self.stale_llm, self.stale_srm, self.srm_full, self.stale_ids, self.newest,
                                self.history_len, stale_scores, metric_by_rank)


def phase_lists(trainer, phase):
    protocol = trainer.protocol
    samples = protocol.samples(phase)
    stale_ids, stale_llm = trainer.candidates(phase, "stale")
    fresh_ids, fresh_llm = trainer.candidates(phase, "fresh")
    stale_srm, srm_full = trainer.srm_scores(phase, stale_ids)
    fresh_srm = srm_full.gather(1, fresh_ids)
    newest, _ = protocol.history(samples, "fresh", protocol.cloud_lag)
    targets = torch.from_numpy(protocol.targets(samples))
    return PhaseLists(targets, stale_ids, stale_llm, stale_srm, fresh_ids, fresh_llm, fresh_srm, srm_full,
                      torch.from_numpy(newest), torch.from_numpy(samples.position))


def _metric(config):
    name, k = config["valid_metric"].lower().split("@")
    return name, int(k)


def tune_alpha(ids, llm, srm, targets, config):
    """``fusion_alpha`` if fixed, else the grid value with the best validation metric."""
    if config["fusion_alpha"] != "auto":
        return float(config["fusion_alpha"])
    name, k = _metric(config)
    best = max(
        ALPHA_GRID,
        key=lambda a: per_user_metrics(
            target_rank(ids, fuse(llm, srm, a, config["fusion_norm"]), targets).numpy(), [name], [k]
        )[f"{name}@{k}"].mean(),
    )
    return best


class Collaboration:
    """Fusion and request decisions for one SRM state, tuned on validation, scored on test."""

    def __init__(self, config, trainer):
        self.config = config
        self.valid = phase_lists(trainer, "valid")
        self.test = phase_lists(trainer, "test")
        norm = config["fusion_norm"]
        v = self.valid
        self.alpha_stale = tune_alpha(v.stale_ids, v.stale_llm, v.stale_srm, v.targets, config)
        self.alpha_fresh = tune_alpha(v.fresh_ids, v.fresh_llm, v.fresh_srm, v.targets, config)
        self.fused = {
            phase: {
                "stale": fuse(lists.stale_llm, lists.stale_srm, self.alpha_stale, norm),
                "fresh": fuse(lists.fresh_llm, lists.fresh_srm, self.alpha_fresh, norm),
            }
            for phase, lists in (("valid", self.valid), ("test", self.test))
        }
        metrics, topk = config["metrics"], config["topk"]
        self.per_user = {
            phase: {
                age: per_user_metrics(
                    target_rank(getattr(lists, f"{age}_ids"), self.fused[phase][age], lists.targets).numpy(), metrics, topk
                )
                for age in ("stale", "fresh")
            }
            for phase, lists in (("valid", self.valid), ("test", self.test))
        }
        name, k = _metric(config)
        self.key = f"{name}@{k}"
        self.valid_gain = self.per_user["valid"]["fresh"][self.key] - self.per_user["valid"]["stale"][self.key]
        self.test_gain = self.per_user["test"]["fresh"][self.key] - self.per_user["test"]["stale"][self.key]
        metric_by_rank = per_user_metrics(np.arange(v.stale_ids.size(1)), [name], [k])[self.key]
        self.features = {
            phase: getattr(self, phase).request_features(self.fused[phase]["stale"], metric_by_rank)
            for phase in ("valid", "test")
        }
        self.learned = LearnedRequestPolicy(prior_feature=FEATURE_NAMES.index("expected_regret")).fit(
            self.features["valid"], self.valid_gain
        )

    def requests(self, policy, ratio, seed):
        """``(valid_mask, test_mask)`` of requesting users for ``policy`` at ``ratio``."""
        if policy == "oracle":  # labelled ceiling: the users who gain most (and gain at all)
            return (top_share(self.valid_gain, ratio) & (self.valid_gain > 0),
                    top_share(self.test_gain, ratio) & (self.test_gain > 0))
        if policy in ("never", "always") or ratio in (0, 1):
            everyone = policy == "always" or (policy != "never" and ratio == 1)
            return (np.full(len(self.valid_gain), everyone), np.full(len(self.test_gain), everyone))
        rng = np.random.default_rng(seed)
        valid_priority = policy_priority(policy, self.features["valid"], rng, self.learned)
        test_priority = policy_priority(policy, self.features["test"], rng, self.learned)
        tau = calibrate_threshold(valid_priority, ratio)
        return valid_priority >= tau, test_priority >= tau

    def mixed_per_user(self, phase, mask):
        stale, fresh = self.per_user[phase]["stale"], self.per_user[phase]["fresh"]
        return {name: np.where(mask, fresh[name], stale[name]) for name in stale}

    def evaluate(self, phase, mask):
        """RecBole Evaluator metrics of the final lists (fresh for requesting users)."""
        lists = getattr(self, phase)
        fused = self.fused[phase]
        mask_t = torch.from_numpy(mask).unsqueeze(1)
        ids = torch.where(mask_t, lists.fresh_ids, lists.stale_ids)
        scores = torch.where(mask_t, rank_scores(fused["fresh"]), rank_scores(fused["stale"]))
        return evaluate_lists(self.config, ids, scores, lists.targets, len(lists.srm_full[0]))

    def row(self, name, role, policy, ratio, seed):
        valid_mask, test_mask = self.requests(policy, ratio, seed)
        row = result_row(name, role, self.evaluate("valid", valid_mask), self.evaluate("test", test_mask))
        row.update(policy=policy, rho=ratio, realized=round(float(test_mask.mean()), 6),
                   alpha_stale=self.alpha_stale, alpha_fresh=self.alpha_fresh)
        return row, self.mixed_per_user("test", test_mask)[self.key]

    def curve(self, ratios, seed):
        """Curve points, and each point's per-user ``valid_metric`` on test keyed ``(policy, rho)``."""
        points, per_user = [], {}
        for policy in CURVE_POLICIES:
            for ratio in ratios:
                _, test_mask = self.requests(policy, ratio, seed)
                mixed = self.mixed_per_user("test", test_mask)
                points.append({"policy": policy, "rho": ratio, "realized": round(float(test_mask.mean()), 6),
                               "test": mean_metrics(mixed)})
                per_user[(policy, ratio)] = mixed[self.key]
        return points, per_user


def full_ranking_per_user(score_fn, interaction, batch_size, metrics, topk, target_field):
    """Per-user metrics of a full-catalogue ranking (rank = items scored above the target)."""
    ranks = []
    with torch.no_grad():
        for start in range(0, len(interaction), batch_size):
            batch = interaction[start : start + batch_size]
            scores = score_fn(batch).float().cpu()
            scores[:, 0] = -torch.inf
            target = scores.gather(1, batch[target_field].cpu().unsqueeze(1))
            ranks.append((scores > target).sum(1))
    return per_user_metrics(torch.cat(ranks).numpy(), metrics, topk)


def measure_cost(config, trainer, lists):
    """Seconds per user for cloud candidate generation and device re-ranking, sizes, calls."""
    model, protocol = trainer.model, trainer.protocol
    samples = protocol.samples("test")
    start = time.perf_counter()
    sample_candidates(model.llm, protocol, samples, "stale", config["candidate_num"], config["eval_batch_size"], config["device"])
    cloud = (time.perf_counter() - start) / len(samples)
    start = time.perf_counter()
    trainer.srm_scores("test", lists.stale_ids, candidates_only=True)
    device = (time.perf_counter() - start) / len(samples)
    history = np.minimum(protocol.history_end(samples, "fresh"), config["llm_max_len"])
    return {
        "cloud_seconds_per_user": cloud,
        "device_seconds_per_user": device,
        "cloud_over_device": cloud / device if device else None,
        "bytes_per_request": int(4 * history.mean() + 8 * config["candidate_num"]),
        "llm_parameters": sum(p.numel() for p in model.llm.parameters()),
        "srm_parameters": sum(p.numel() for p in model.srm.parameters()),
    }


def run_one_seed(config, saved):
    logger = logging.getLogger()
    srm_config = srm_config_of(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(srm_config)
    logger.info(dataset)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    train_data, valid_data, test_data = data_preparation(srm_config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = LSC4Rec(config, dataset, srm_config).to(config["device"])
    trainer = LSC4RecTrainer(config, model, protocol, dataset)
    llm_trainer = trainer.train_llm()
    srm_trainer, srm_valid = trainer.train_srm(train_data, valid_data, saved=saved)
    metrics, topk, seed = config["metrics"], config["topk"], config["seed"]

    rows, per_user = [], {}
    rows.append(result_row(config["srm"], "srm", srm_valid, srm_trainer.evaluate(test_data, load_best_model=False)))
    srm_interaction = trainer.srm_interaction("test")
    per_user["srm"] = full_ranking_per_user(
        lambda b: model.srm.full_sort_predict(b.to(config["device"])), srm_interaction,
        config["eval_batch_size"], metrics, topk, model.srm.ITEM_ID,
    )
    for view in ("stale", "fresh"):
        test_interaction = llm_trainer.interaction("test", view)
        rows.append(result_row(f"LLMRec ({view})", f"llm_{view}", llm_trainer.evaluate("valid", view),
                               llm_trainer.evaluate("test", view)))
        per_user[f"llm_{view}"] = full_ranking_per_user(
            lambda b: model.llm.full_sort_predict(b.to(config["device"])), test_interaction,
            config["eval_batch_size"], metrics, topk, model.llm.ITEM_ID,
        )

    independent = copy.deepcopy(model.srm.state_dict())
    if config["coop_train"]:
        trainer.cooperative_training()
    after_coop = copy.deepcopy(model.srm.state_dict())
    if config["retrain"]:
        trainer.adaptive_retraining()
    final = Collaboration(config, trainer)
    final_state = copy.deepcopy(model.srm.state_dict())
    stages = dict(trainer.stage_log)

    # srm_rerank: the final device model re-ranks the stale list (alpha = 0, no request)
    rerank = {phase: rank_scores(getattr(final, phase).stale_srm) for phase in ("valid", "test")}
    rows.append(result_row(f"{config['srm']} re-rank", "srm_rerank",
                           *[evaluate_lists(config, getattr(final, p).stale_ids, rerank[p], getattr(final, p).targets,
                                            dataset.item_num) for p in ("valid", "test")]))
    per_user["srm_rerank"] = per_user_metrics(
        target_rank(final.test.stale_ids, final.test.stale_srm, final.test.targets).numpy(), metrics, topk
    )
    policy, ratio = config["request_policy"], config["request_ratio"]
    main_row, per_user["lsc4rec"] = final.row("LSC4Rec", "lsc4rec", policy, ratio, seed)
    rows.append(main_row)
    per_user = {role: values[final.key] if isinstance(values, dict) else values for role, values in per_user.items()}

    ablations = []
    if config["retrain"] and config["coop_train"]:
        model.srm.load_state_dict(independent)
        trainer.adaptive_retraining()
        ablations.append(("LSC4Rec w/o cooperative training", Collaboration(config, trainer)))
    if config["retrain"]:
        model.srm.load_state_dict(after_coop)
        ablations.append(("LSC4Rec w/o re-training", Collaboration(config, trainer)))
    for name, collaboration in ablations:
        rows.append(collaboration.row(name, "ablation", policy, ratio, seed)[0])
    model.srm.load_state_dict(final_state)

    curve, curve_per_user = final.curve(config["request_curve_ratios"], seed)
    cost = measure_cost(config, trainer, final.test)
    cost["cloud_calls"] = {
        "initial_lists": len(final.test.targets),
        "requests": int(round(main_row["realized"] * len(final.test.targets))),
        "llm_candidate_passes": dict(trainer.llm_calls),
    }
    info = {"stages": stages, "alpha_stale": final.alpha_stale, "alpha_fresh": final.alpha_fresh,
            "learned_policy_weights": final.learned.weights.round(6).tolist(), "learned_policy_l2": final.learned.l2,
            "learned_policy_cv": {str(l2): round(score, 6) for l2, score in final.learned.cv_scores.items()}}
    return {"rows": rows, "per_user": per_user, "curve": curve, "curve_per_user": curve_per_user, "cost": cost,
            "info": info}


def _aggregate_rows(runs):
    rows = []
    for index, first in enumerate(runs[0]["rows"]):
        row = copy.deepcopy(first)
        for split in ("valid", "test"):
            mean, std = mean_std([run["rows"][index][split] for run in runs])
            row[split], row[f"{split}_std"] = mean, std
        if "realized" in row:
            row["realized"] = round(float(np.mean([run["rows"][index]["realized"] for run in runs])), 6)
        rows.append(row)
    return rows


def _aggregate_curve(runs):
    points = []
    for index, first in enumerate(runs[0]["curve"]):
        mean, std = mean_std([run["curve"][index]["test"] for run in runs])
        realized = float(np.mean([run["curve"][index]["realized"] for run in runs]))
        points.append({"policy": first["policy"], "rho": first["rho"], "realized": round(realized, 6),
                       "test": mean, "test_std": std})
    return points


def policy_tests(runs, ratios):
    """The learned policy against random, the paper's consistency and the top-1 rule at every
    ratio in (0, 1): paired tests over test users (per-user metric averaged over seeds)."""
    tests = []
    for ratio in ratios:
        if ratio in (0, 1):
            continue
        mean = {policy: np.mean([run["curve_per_user"][(policy, ratio)] for run in runs], axis=0)
                for policy in ("learned", *RULE_POLICIES)}
        for other in RULE_POLICIES:
            tests.append({"rho": ratio, "policy": "learned", "versus": other,
                          **paired_test(mean["learned"], mean[other])})
    return tests


def check_config(config):
    if config["candidate_num"] < max(config["topk"]):
        raise ConfigError(
            f"candidate_num ({config['candidate_num']}) must be >= the largest topk ({max(config['topk'])}): "
            "a list shorter than K cannot be scored at K"
        )


def run_lsc4rec(config, saved=True):
    check_config(config)
    seeds = [config["seed"] + offset for offset in range(config["seeds"])]
    runs = []
    for seed in seeds:
        config["seed"] = seed
        logging.getLogger().info(f"LSC4Rec run with seed {seed}")
        runs.append(run_one_seed(config, saved))
    config["seed"] = seeds[0]
    rows = _aggregate_rows(runs) if len(runs) > 1 else runs[0]["rows"]
    per_user = {role: np.mean([run["per_user"][role] for run in runs], axis=0) for role in ("lsc4rec", *SINGLE_MODELS)}
    significance = {role: paired_test(per_user["lsc4rec"], per_user[role]) for role in SINGLE_MODELS}
    key = config["valid_metric"].lower()
    for row in rows:
        if row["role"] == "lsc4rec":
            row["paired_tests"] = {"metric": key, **significance}
    extra = {
        "seeds": seeds,
        "request_curve": _aggregate_curve(runs) if len(runs) > 1 else runs[0]["curve"],
        "policy_tests": policy_tests(runs, config["request_curve_ratios"]),
        "cost": runs[0]["cost"],
        "runs": [run["info"] for run in runs],
        # test users in protocol order (mean over seeds): what later paired tests need
        "per_user_test": {"metric": key, **{role: np.round(values, 6).tolist() for role, values in per_user.items()}},
    }
    return rows, extra



