"""Trained cloud LLMs kept on disk, keyed by everything that shaped them.

Training the cloud is the costly step of a run, and it does not depend on the device SRM:
a sweep over SRM backbones (or a re-run) trains it once per dataset and seed and reuses
it. An entry is ``<trained_llm_cache>/LLMRec-<dataset>-<key>.safetensors`` (a recbole-lsc
checkpoint, nothing unpickled) plus ``.sha256`` beside it; ``key`` hashes the LLM's
config, the data and protocol keys, the seed and the package version, so two configs
never share an entry. A file whose checksum does not match is reported and retrained.
"""

import hashlib
import importlib.metadata
import json
import logging
import os

from recbole_lsc.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from recbole_lsc.errors import CheckpointError

# Non-``llm_*`` keys that change the LLM or the data it is trained and selected on.
SHAPING_KEYS = (
    "dataset", "data_path", "load_col", "unload_col", "unused_col", "rm_dup_inter", "val_interval",
    "filter_inter_by_user_or_item", "user_inter_num_interval", "item_inter_num_interval",
    "USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD", "eval_args", "cloud_lag", "seed",
    "reproducibility", "valid_metric", "metrics", "topk",
)
_NOT_SHAPING = ("llm_cache_dir",)  # where backbones are cached, not what they are


def llm_key(config):
    """Hex digest of the config entries that determine the trained LLM."""
    keys = sorted(
        key for key in config.final_config_dict
        if (key.startswith("llm_") and key not in _NOT_SHAPING) or key in SHAPING_KEYS
    )
    try:
        version = importlib.metadata.version("recbole-lsc")
    except importlib.metadata.PackageNotFoundError:
        version = None
    payload = {"recbole-lsc": version, **{key: config[key] for key in keys}}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def entry_path(config):
    """The cache file of this config's LLM, or None when ``trained_llm_cache`` is off."""
    folder = config["trained_llm_cache"]
    if not folder:
        return None
    return os.path.join(folder, f"LLMRec-{config['dataset']}-{llm_key(config)}.safetensors")


def load_trained_llm(config, model):
    """Fill ``model`` from the cache; return the stored training log, or None on a miss.

    A corrupt, foreign or mismatching entry is logged and treated as a miss (it is
    overwritten after training), never unpickled.
    """
    path = entry_path(config)
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
        meta = load_checkpoint(path, model, device=config["device"])
    except CheckpointError as err:
        logger.warning(f"{err}; training the LLM again")
        return None
    logger.info(f"trained LLM loaded from cache '{path}'")
    return {**meta.get("training", {}), "cached": path}


def store_trained_llm(config, model, training_log):
    """Write the trained ``model`` and its checksum (each file atomically); return the path."""
    path = entry_path(config)
    if path is None:
        return None
    save_checkpoint(path, model, meta={"training": training_log, "key": llm_key(config)})
    tmp = f"{path}.sha256.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(file_sha256(path) + "\n")
    os.replace(tmp, f"{path}.sha256")
    logging.getLogger().info(f"trained LLM cached at '{path}'")
    return path
