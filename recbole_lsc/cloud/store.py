"""Trained cloud LLMs kept on disk, keyed by everything that shaped them.

Training the cloud is the costly step of a run, and it does not depend on the device SRM:
a sweep over SRM backbones (or a re-run) trains it once per dataset and seed and reuses
it. An entry is ``<trained_llm_cache>/LLMRec-<dataset>-<key>.safetensors`` (a recbole-lsc
checkpoint, nothing unpickled) plus ``.sha256`` beside it. ``key`` hashes the LLM's config,
the protocol keys and seed, the interactions and item catalogue themselves, the backbone's
weights (``backbone_fingerprint``), the library versions and ``CACHE_FORMAT`` (bumped when
training code changes what a config trains), and is checked again on load. A file that
fails its checksum or its key is reported and retrained.
"""

import hashlib
import json
import logging
import os

import numpy as np

from recbole_lsc.checkpoint import load_checkpoint, save_checkpoint
from recbole_lsc.cloud.backbones import backbone_fingerprint
from recbole_lsc.data.item_text import item_titles
from recbole_lsc.errors import CheckpointError
from recbole_lsc.files import file_sha256, write_text_atomic
from recbole_lsc.results import package_versions

CACHE_FORMAT = 2
# Non-``llm_*`` keys that change the LLM or how its epoch is chosen.
SHAPING_KEYS = ("cloud_lag", "seed", "reproducibility", "valid_metric", "metrics", "topk")
# where backbones are cached, and a memory/speed trade-off with the same results: not what the LLM is
_NOT_SHAPING = ("llm_cache_dir", "llm_gradient_checkpointing")


def data_fingerprint(config, dataset, protocol):
    """SHA-256 of what the LLM learns from: every user's item sequence in time order (the
    protocol's arrays, the same before and after RecBole builds the dataset), the item
    catalogue and, for backbones that read them, the item titles."""
    digest = hashlib.sha256()
    for array in (protocol.lengths, protocol.items):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    digest.update("\x1f".join(map(str, dataset.field2id_token[dataset.iid_field])).encode("utf-8"))
    if config["llm_backbone"] != "tiny" and config["llm_item_text_field"]:
        digest.update("\x1f".join(item_titles(dataset, config["llm_item_text_field"])).encode("utf-8"))
    return digest.hexdigest()


def llm_key(config, dataset, protocol):
    """Hex digest of everything that determines the trained LLM."""
    keys = sorted(
        key for key in config.final_config_dict
        if (key.startswith("llm_") and key not in _NOT_SHAPING) or key in SHAPING_KEYS
    )
    payload = {
        "format": CACHE_FORMAT,
        "versions": package_versions(),
        "data": data_fingerprint(config, dataset, protocol),
        "backbone": backbone_fingerprint(config["llm_backbone"]),
        **{key: config[key] for key in keys},
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def entry_path(config, key):
    """The cache file of the LLM with ``key``, or None when ``trained_llm_cache`` is off."""
    folder = config["trained_llm_cache"]
    if not folder:
        return None
    return os.path.join(folder, f"LLMRec-{config['dataset']}-{key}.safetensors")


def load_trained_llm(config, dataset, protocol, model):
    """Fill ``model`` from the cache; return the stored training log, or None on a miss.

    A corrupt, foreign or mismatching entry is logged and treated as a miss (the model is
    left as it was, and the entry is overwritten after training), never unpickled.
    """
    key = llm_key(config, dataset, protocol)
    path = entry_path(config, key)
    if path is None or not os.path.isfile(path):
        return None
    logger = logging.getLogger()
    try:
        with open(f"{path}.sha256", encoding="utf-8") as handle:
            expected = handle.read().strip()
    except OSError:
        expected = None
    if expected != file_sha256(path):
        logger.warning(f"trained LLM cache '{path}' fails its checksum; training the LLM again")
        return None
    try:
        meta = load_checkpoint(path, model, device=config["device"], expect={"key": key})
    except CheckpointError as err:
        logger.warning(f"{err}; training the LLM again")
        return None
    training = meta.get("training")
    logger.info(f"trained LLM loaded from cache '{path}'")
    return {**(training if isinstance(training, dict) else {}), "cached": path}


def store_trained_llm(config, dataset, protocol, model, training_log):
    """Write the trained ``model`` and its checksum (each file atomically); return the path."""
    key = llm_key(config, dataset, protocol)
    path = entry_path(config, key)
    if path is None:
        return None
    save_checkpoint(path, model, meta={"training": training_log, "key": key})
    write_text_atomic(f"{path}.sha256", file_sha256(path) + "\n")
    logging.getLogger().info(f"trained LLM cached at '{path}'")
    return path
