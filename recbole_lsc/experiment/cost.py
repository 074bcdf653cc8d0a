"""What the collaboration costs: cloud calls, bytes per request, seconds per user, sizes."""

import time

import numpy as np
import torch


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())


def measure_cost(config, cloud, srm, protocol, stale_ids):
    """Seconds per test user of cloud candidate generation (stale histories) and of device
    re-ranking (the SRM's scores of ``stale_ids``: ``srm_candidate_scoring`` says whether it read
    the candidates' embeddings only or scored the whole catalogue and gathered), bytes of a
    request, model sizes."""
    samples = protocol.samples("test")
    item_seq, item_len = protocol.history(samples, "stale", cloud.max_history)
    start = time.perf_counter()
    cloud.candidates(torch.from_numpy(item_seq), torch.from_numpy(item_len), config["candidate_num"])
    cloud_seconds = (time.perf_counter() - start) / len(samples)
    interaction = protocol.interaction(samples, "fresh", srm.max_len, srm.fields)
    start = time.perf_counter()
    srm.score_lists(interaction, stale_ids, config["eval_batch_size"], config["device"])
    device_seconds = (time.perf_counter() - start) / len(samples)
    history = np.minimum(protocol.history_end(samples, "fresh"), config["llm_max_len"])
    return {
        "cloud_seconds_per_user": cloud_seconds,
        "device_seconds_per_user": device_seconds,
        "cloud_over_device": cloud_seconds / device_seconds if device_seconds else None,
        "srm_candidate_scoring": srm.candidate_scoring,
        # a request: the history's item ids (int32) up; C (item id, score) pairs (int32, float32) down
        "bytes_per_request": int(4 * history.mean() + 8 * config["candidate_num"]),
        "llm_parameters": parameter_count(cloud.llm),
        "srm_parameters": parameter_count(srm.model),
    }
