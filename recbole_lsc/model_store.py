"""Trained models kept on disk, keyed by a hash of everything that shaped them.

A run never trains the same model twice: the cloud LLM (``recbole_lsc.cloud.store``) and the
device's independently trained SRMs (``recbole_lsc.device.srm_store``) are stored after
training and reused by any later run or sweep job with the same key. An entry is
``<folder>/<name>-<key>.safetensors`` (a recbole-lsc checkpoint, nothing unpickled) plus a
``.sha256`` beside it; the key is checked again on load. A file that fails its checksum or
its key is reported and the model is trained again.
"""

import hashlib
import json
import logging
import os

import numpy as np

from recbole_lsc.checkpoint import load_checkpoint, save_checkpoint
from recbole_lsc.errors import CheckpointError
from recbole_lsc.files import file_sha256, write_text_atomic
from recbole_lsc.results import package_versions


def sequences_fingerprint(protocol, digest=None):
    """SHA-256 (updated into ``digest`` if given) of every user's item sequence in time order:
    the protocol's arrays, the same before and after RecBole builds the dataset."""
    digest = digest or hashlib.sha256()
    for array in (protocol.lengths, protocol.items):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest


def hashed_key(payload, cache_format):
    """Hex digest (20 characters) of a JSON payload, the library versions and a cache format."""
    text = json.dumps({"format": cache_format, "versions": package_versions(), **payload}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def entry_file(folder, name, key):
    """The store file of model ``name`` with ``key``, or None when the store is off (no folder)."""
    return os.path.join(folder, f"{name}-{key}.safetensors") if folder else None


def load_entry(path, key, model, device, what):
    """Fill ``model`` from the entry at ``path``; return its stored training log, or None on a miss.

    A corrupt, foreign or mismatching entry is logged and treated as a miss (the model is left
    as it was, and the entry is overwritten after training), never unpickled.
    """
    if path is None or not os.path.isfile(path):
        return None
    logger = logging.getLogger()
    try:
        with open(f"{path}.sha256", encoding="utf-8") as handle:
            expected = handle.read().strip()
    except OSError:
        expected = None
    if expected != file_sha256(path):
        logger.warning(f"trained {what} store entry '{path}' fails its checksum; training the {what} again")
        return None
    try:
        meta = load_checkpoint(path, model, device=device, expect={"key": key})
    except CheckpointError as err:
        logger.warning(f"{err}; training the {what} again")
        return None
    training = meta.get("training")
    logger.info(f"trained {what} loaded from the store: '{path}'")
    return {**(training if isinstance(training, dict) else {}), "cached": path}


def store_entry(path, key, model, training_log, what):
    """Write the trained ``model`` and its checksum (each file atomically); return the path."""
    if path is None:
        return None
    save_checkpoint(path, model, meta={"training": training_log, "key": key})
    write_text_atomic(f"{path}.sha256", file_sha256(path) + "\n")
    logging.getLogger().info(f"trained {what} stored at '{path}'")
    return path
