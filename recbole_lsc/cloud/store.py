"""Trained cloud LLMs kept on disk, keyed by everything that shaped them.

Training the cloud is the costly step of a run, and it does not depend on the device SRM:
a sweep over SRM backbones (or a re-run) trains it once per dataset and seed and reuses
it. An entry is ``<trained_llm_cache>/LLMRec-<dataset>-<key>.safetensors``
(``recbole_lsc.model_store``). ``key`` hashes the LLM's config,
the protocol keys and seed, the interactions and item catalogue themselves, the backbone's
weights (``backbone_fingerprint``), the library versions and ``CACHE_FORMAT`` (bumped when
training code changes what a config trains), and is checked again on load. A file that
fails its checksum or its key is reported and retrained.
"""

import hashlib

from recbole_lsc.cloud.backbones import backbone_fingerprint
from recbole_lsc.data.item_text import item_titles
from recbole_lsc.model_store import entry_file, hashed_key, load_entry, sequences_fingerprint, store_entry

CACHE_FORMAT = 2
# Non-``llm_*`` keys that change the LLM or how its epoch is chosen.
SHAPING_KEYS = ("cloud_lag", "seed", "reproducibility", "valid_metric", "metrics", "topk")
# where backbones are cached, and a memory/speed trade-off with the same results: not what the LLM is
_NOT_SHAPING = ("llm_cache_dir", "llm_gradient_checkpointing")


def data_fingerprint(config, dataset, protocol):
    """SHA-256 of what the LLM learns from: every user's item sequence in time order, the item
    catalogue and, for backbones that read them, the item titles."""
    digest = sequences_fingerprint(protocol)
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
        "data": data_fingerprint(config, dataset, protocol),
        "backbone": backbone_fingerprint(config["llm_backbone"]),
        **{key: config[key] for key in keys},
    }
    return hashed_key(payload, CACHE_FORMAT)


def entry_path(config, key):
    """The cache file of the LLM with ``key``, or None when ``trained_llm_cache`` is off."""
    return entry_file(config["trained_llm_cache"], f"LLMRec-{config['dataset']}", key)


def load_trained_llm(config, dataset, protocol, model):
    """Fill ``model`` from the cache; return the stored training log, or None on a miss
    (``recbole_lsc.model_store.load_entry``)."""
    key = llm_key(config, dataset, protocol)
    return load_entry(entry_path(config, key), key, model, config["device"], "LLM")


def store_trained_llm(config, dataset, protocol, model, training_log):
    """Write the trained ``model`` and its checksum (each file atomically); return the path."""
    key = llm_key(config, dataset, protocol)
    return store_entry(entry_path(config, key), key, model, training_log, "LLM")
