"""The cloud LLM alone: rows ``llm_stale`` (stale history) and ``llm_fresh`` (fresh history,
i.e. a request for every user), plus the recall of its stale candidate lists."""

import datetime
import logging
import os
import time
import uuid

import torch
from recbole.data import create_dataset
from recbole.utils import init_seed

from recbole_lsc.data.protocol import DeviceCloudProtocol
from recbole_lsc.llm_store import load_trained_llm, store_trained_llm
from recbole_lsc.model.sequential_recommender.llmrec import LLMRec
from recbole_lsc.results import result_row
from recbole_lsc.trainer import LLMRecTrainer


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def candidate_recall(model, interaction, num, batch_size, device):
    """Share of targets inside the top-``num`` candidate list (``candidate_recall@C``)."""
    model.eval()
    hits = 0
    for start in range(0, len(interaction), batch_size):
        batch = interaction[start : start + batch_size].to(device)
        ids, _ = model.top_candidates(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], num)
        hits += int((ids == batch[model.ITEM_ID].unsqueeze(1)).any(1).sum())
    return round(hits / max(len(interaction), 1), 6)


def train_llm(config, dataset, protocol, saved=True):
    """Build and train LLMRec; save it with ``save_pretrained``. Returns ``(model, trainer, info)``."""
    logger = logging.getLogger()
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = LLMRec(config, dataset).to(config["device"])
    logger.info(f"LLMRec ({config['llm_backbone']}): {parameter_count(model):,} parameters")
    trainer = LLMRecTrainer(config, model, protocol)
    cached = load_trained_llm(config, dataset, protocol, model)
    if cached is None:
        start = time.time()
        trainer.fit(show_progress=config["show_progress"])
        log = {"seconds": round(time.time() - start, 1), "epochs_trained": trainer.epochs_trained,
               "best_epoch": trainer.best_epoch}
        store_trained_llm(config, dataset, protocol, model, log)
    else:
        log = cached
    info = {"llm_parameters": parameter_count(model), "llm_training": log}
    if saved:
        stamp = datetime.datetime.now().strftime("%b-%d-%Y_%H-%M-%S")
        # the random suffix keeps two runs started in the same second apart
        folder = os.path.join(config["checkpoint_dir"], f"LLMRec-{config['dataset']}-{stamp}-{uuid.uuid4().hex[:8]}")
        model.save_pretrained(folder, config)
        info["llm_checkpoint"] = folder
        logger.info(f"LLMRec saved to {folder}")
    return model, trainer, info


def run_llmrec(config, saved=True):
    dataset = create_dataset(config)
    logging.getLogger().info(dataset)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    model, trainer, info = train_llm(config, dataset, protocol, saved=saved)
    rows = []
    for view in ("stale", "fresh"):
        valid, test = trainer.evaluate("valid", view), trainer.evaluate("test", view)
        rows.append(result_row(f"LLMRec ({view} history)", f"llm_{view}", valid, test))
    recall = {}
    with torch.no_grad():
        for num in sorted({config["candidate_num"], 50, 100}):
            if num < dataset.item_num - 1:
                stale_test = trainer.interaction("test", "stale")
                recall[f"candidate_recall@{num}"] = candidate_recall(
                    model, stale_test, num, config["eval_batch_size"], config["device"]
                )
    return rows, {"llm": {**info, "stale_test": recall}}
