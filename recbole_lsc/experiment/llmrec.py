"""The cloud LLM alone: rows ``llm_stale`` (stale history) and ``llm_fresh`` (fresh history,
i.e. a request for every user), plus the recall of its stale candidate lists."""

import datetime
import logging
import os
import uuid

import torch
from recbole.utils import init_seed

from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.cloud.trainer import train_or_load
from recbole_lsc.data.loading import create_dataset
from recbole_lsc.experiment.cost import parameter_count
from recbole_lsc.protocol import DeviceCloudProtocol
from recbole_lsc.results import result_row


def candidate_recall(cloud, protocol, num):
    """Share of test targets inside the top-``num`` list of the stale history (``candidate_recall@C``)."""
    samples = protocol.samples("test")
    item_seq, item_len = protocol.history(samples, "stale", cloud.max_history)
    lists = cloud.candidates(torch.from_numpy(item_seq), torch.from_numpy(item_len), num)
    hits = (lists.item_ids == torch.from_numpy(protocol.targets(samples)).unsqueeze(1)).any(1)
    return round(float(hits.float().mean()) if len(hits) else 0.0, 6)


def save_llm(config, model):
    """``save_pretrained`` into a new folder of ``checkpoint_dir``; returns the folder."""
    stamp = datetime.datetime.now().strftime("%b-%d-%Y_%H-%M-%S")
    # the random suffix keeps two runs started in the same second apart
    folder = os.path.join(config["checkpoint_dir"], f"LLMRec-{config['dataset']}-{stamp}-{uuid.uuid4().hex[:8]}")
    model.save_pretrained(folder, config)
    logging.getLogger().info(f"LLMRec saved to {folder}")
    return folder


def run_llmrec(config, saved=True):
    logger = logging.getLogger()
    dataset = create_dataset(config)
    logger.info(dataset)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = LLMRec(config, dataset).to(config["device"])
    logger.info(f"LLMRec ({config['llm_backbone']}): {parameter_count(model):,} parameters")
    trainer, log = train_or_load(config, model, protocol, dataset)
    info = {"llm_parameters": parameter_count(model), "llm_training": log}
    if saved:
        info["llm_checkpoint"] = save_llm(config, model)
    rows = [result_row(f"LLMRec ({view} history)", f"llm_{view}", trainer.evaluate("valid", view),
                       trainer.evaluate("test", view)) for view in ("stale", "fresh")]
    cloud = InProcessCloud(model, config["eval_batch_size"], config["device"])
    recall = {f"candidate_recall@{num}": candidate_recall(cloud, protocol, num)
              for num in sorted({config["candidate_num"], 50, 100}) if num < dataset.item_num - 1}
    return rows, {"llm": {**info, "stale_test": recall}}
