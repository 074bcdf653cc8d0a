"""Independently trained device SRMs kept on disk (``trained_srm_cache``), so no run trains the
same SRM twice.

The ``srm`` reference and the device's independent SRM are trained in the cloud before any
collaboration: a re-run, another seed's variant that changes only the fusion, request or
fine-tuning keys, or a sweep job over those, needs the very same models. An entry is
``<trained_srm_cache>/<SRM>-<dataset>-<key>.safetensors`` (``recbole_lsc.model_store``); the
key hashes the SRM's own config (every key but the plugin's collaboration keys and those that
only say where files go), the trainer and its stride, the targets it learnt (the protocol
phase and ``cloud_lag``), the item sequences and catalogue size, the library versions and
:data:`CACHE_FORMAT`.
"""

import os
from functools import lru_cache

import yaml

from recbole_lsc.config import PROPERTIES_DIR
from recbole_lsc.model_store import entry_file, hashed_key, load_entry, sequences_fingerprint, store_entry

CACHE_FORMAT = 1
# keys that say where files go or how much is shown: not what the SRM learns
_NOT_SHAPING = ("show_progress", "state", "checkpoint_dir", "results_dir", "run_name", "data_path", "gpu_id",
                "device", "use_gpu", "log_wandb", "wandb_project", "eval_batch_size", "worker", "local_rank",
                "nproc", "world_size", "offset", "ip", "port", "config_files", "trained_llm_cache",
                "trained_srm_cache")


@lru_cache(maxsize=1)
def collaboration_keys():
    """Keys of the cloud and of the collaboration (LLMRec.yaml, LSC4Rec.yaml): they do not shape
    the SRM trained in the cloud, except how it is trained (``srm_trainer``, ``srm_window_stride``) and what is loaded (``load_col``)."""
    keys = set()
    for name in ("LLMRec.yaml", "LSC4Rec.yaml"):
        with open(os.path.join(PROPERTIES_DIR, "model", name), encoding="utf-8") as handle:
            keys.update(yaml.safe_load(handle) or {})
    return keys - {"srm", "srm_trainer", "srm_window_stride", "load_col"}


def srm_key(srm_config, protocol, n_items, phase, trainer, stride):
    """Hex digest of everything that determines an independently trained SRM."""
    ignored = collaboration_keys().union(_NOT_SHAPING)
    payload = {
        "config": {key: srm_config[key] for key in sorted(srm_config.final_config_dict) if key not in ignored},
        "data": sequences_fingerprint(protocol).hexdigest(), "n_items": int(n_items),
        "phase": phase, "cloud_lag": protocol.cloud_lag, "trainer": trainer, "stride": stride,
    }
    return hashed_key(payload, CACHE_FORMAT)


def _path(folder, srm_config, key):
    return entry_file(folder, f"{srm_config['model']}-{srm_config['dataset']}", key)


def load_trained_srm(folder, key, srm_config, model):
    """Fill ``model`` from the store; its stored training log, or None on a miss."""
    return load_entry(_path(folder, srm_config, key), key, model, srm_config["device"], "SRM")


def store_trained_srm(folder, key, srm_config, model, training_log):
    """Put the trained ``model`` in the store; return the path (None when the store is off)."""
    return store_entry(_path(folder, srm_config, key), key, model, training_log, "SRM")
