"""Checkpoints that load without unpickling anything.

A checkpoint is one ``.safetensors`` file: the model's tensors plus a JSON header entry
(``recbole_lsc``) with the model class and training state. The optimizer state, needed
only to resume training, sits beside it as ``<stem>.optim.pt`` and is read with
``torch.load(weights_only=True)``. Writes go to a temporary file first and are renamed, so
an interrupted save never leaves a half-written checkpoint.
"""

import json
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from recbole_lsc.errors import CheckpointError, first_line
from recbole_lsc.files import write_atomic

META_KEY = "recbole_lsc"
FORMAT_VERSION = 1


def optimizer_path(path):
    return os.path.splitext(path)[0] + ".optim.pt"


def save_checkpoint(path, model, meta=None, optimizer=None):
    """Write ``model``'s tensors and a JSON-serialisable ``meta`` dict to ``path``."""
    header = {"format": FORMAT_VERSION, "model": type(model).__name__, **(meta or {})}
    write_atomic(path, lambda tmp: save_model(model, tmp, metadata={META_KEY: json.dumps(header)}))
    if optimizer is not None:
        write_atomic(optimizer_path(path), lambda tmp: torch.save(optimizer.state_dict(), tmp))


def read_meta(path):
    """The JSON header of a recbole-lsc checkpoint; raises CheckpointError for anything else."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist; train the model first or fix the path")
    try:
        with safe_open(path, framework="pt") as handle:
            header = (handle.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or not a safetensors file ({err}); delete it and train again"
        ) from None
    if header is None:
        raise CheckpointError(f"checkpoint '{path}' was not written by recbole-lsc; load only checkpoints it saved")
    try:
        return json.loads(header)
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint '{path}' has a corrupt header; delete it and train again") from None


def load_checkpoint(path, model, device="cpu", optimizer=None, expect=None):
    """Load tensors from ``path`` into ``model`` (and ``optimizer`` if given); return the header.

    ``expect`` holds header entries that must match. On any error the model keeps the
    weights it had (safetensors would otherwise have copied the tensors that did match).
    """
    meta = read_meta(path)
    if meta.get("model") != type(model).__name__:
        raise CheckpointError(
            f"checkpoint '{path}' holds a {meta.get('model')} model, not a {type(model).__name__}; "
            "pass a checkpoint of the same model"
        )
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise CheckpointError(f"checkpoint '{path}' has {key} {meta.get(key)!r}, expected {value!r}")
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    try:
        load_model(model, path, strict=True, device=str(device))
    except (SafetensorError, RuntimeError) as err:
        model.load_state_dict(before)
        raise CheckpointError(
            f"checkpoint '{path}' does not match this model's configuration ({first_line(err)}); "
            "use the config it was trained with"
        ) from None
    if optimizer is not None:
        opt_file = optimizer_path(path)
        try:
            optimizer.load_state_dict(torch.load(opt_file, map_location=device, weights_only=True))
        except FileNotFoundError:
            raise CheckpointError(f"optimizer state '{opt_file}' is missing; training cannot resume from it") from None
        except Exception as err:  # torch raises UnpicklingError/RuntimeError for foreign content
            raise CheckpointError(f"optimizer state '{opt_file}' is corrupt or unsafe ({type(err).__name__})") from None
    return meta
