"""The device bundle of one ``device_catalogue`` setting of a run: the final SRM, the fusion
weights and the configured request policy as one device applies them
(:mod:`recbole_lsc.device.bundle`), with the simulation's per-user test figures to check a
replay against."""

from recbole_lsc.device.bundle import DeviceBundle, RequestRule, tokens_digest
from recbole_lsc.device.policies import fixed_decision
from recbole_lsc.evaluation.metrics import metric_by_rank


def request_rule(config, collaboration):
    """The configured ``request_policy`` at ``request_ratio`` as one device's threshold rule."""
    policy, ratio, seed = config["request_policy"], config["request_ratio"], config["seed"]
    everyone = fixed_decision(policy, ratio)
    if everyone is not None:  # threshold None: never
        return RequestRule(policy, ratio, seed, always=everyone)
    learned = collaboration.learned_policy(ratio).to_dict() if policy == "learned" else None
    return RequestRule(policy, ratio, seed, threshold=float(collaboration.threshold(policy, ratio, seed)),
                       learned=learned)


def device_bundle(config, collaboration, per_user_test, protocol, dataset, cloud_model_id):
    """The :class:`DeviceBundle` of ``collaboration`` (the final SRM state of one setting)."""
    return DeviceBundle(
        srm=config["srm"], device_catalogue=collaboration.device_catalogue,
        alpha_stale=collaboration.alpha["stale"], alpha_fresh=collaboration.alpha["fresh"],
        fusion_norm=config["fusion_norm"], candidate_num=config["candidate_num"], cloud_lag=config["cloud_lag"],
        metric_by_rank=[float(v) for v in metric_by_rank(config, config["candidate_num"])],
        request=request_rule(config, collaboration), cloud_model_id=cloud_model_id,
        item_tokens_sha256=tokens_digest(dataset.field2id_token[dataset.iid_field]),
        cloud_history=config["llm_max_len"],
        simulation={"metric": config["valid_metric"].lower(),
                    "users": protocol.samples("test").user.tolist(),
                    "test": [float(v) for v in per_user_test]})
