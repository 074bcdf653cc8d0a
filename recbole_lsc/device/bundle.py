"""What a trained device carries into deployment: its SRM, its fusion weights and its request
policy, saved the Hugging Face way (``save_pretrained`` / ``from_pretrained``).

A bundle folder holds ``model.safetensors`` (the SRM's weights, a recbole-lsc checkpoint:
nothing is unpickled) and ``device_config.json`` (everything else, plain JSON). The main job
writes one per ``device_catalogue`` setting; the device client (:mod:`recbole_lsc.device.client`)
and the replay benchmark load it. ``simulation`` keeps what the in-process run scored with
these very models (per-user test ``valid_metric`` in protocol order), so a replay over HTTP
can be checked against it.
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recbole_lsc.checkpoint import load_checkpoint, save_checkpoint
from recbole_lsc.device.learned import LearnedRequestPolicy
from recbole_lsc.device.per_device import PerDeviceSRM
from recbole_lsc.device.policies import policy_priority, request_noise
from recbole_lsc.errors import CheckpointError
from recbole_lsc.files import write_json_atomic

CONFIG_NAME = "device_config.json"
WEIGHTS_NAME = "model.safetensors"
DEVICES_NAME = "devices.safetensors"  # each device's own re-trained weights (retrain_scope: device)
BUNDLE_FORMAT = 1


@dataclass
class RequestRule:
    """When one device asks for a fresh list: its priority reaches ``threshold``.

    ``threshold`` None means never (a zero budget); ``always`` means every user requests.
    The priority is :func:`~recbole_lsc.device.policies.policy_priority` with the device's own
    :func:`~recbole_lsc.device.policies.request_noise`, so no population is needed.
    """

    policy: str
    ratio: float
    seed: int
    threshold: float = None
    always: bool = False
    learned: dict = None

    def __post_init__(self):
        self._learned = None if self.learned is None else LearnedRequestPolicy.from_dict(self.learned)

    def requests(self, columns, users, history_len):
        """Boolean mask over the users of ``columns``: who requests."""
        count = len(users)
        if self.always:
            return np.ones(count, dtype=bool)
        if self.threshold is None:
            return np.zeros(count, dtype=bool)
        noise = request_noise(self.seed, users, history_len)
        return policy_priority(self.policy, columns, noise, self._learned) >= self.threshold

    def to_dict(self):
        return asdict(self)


@dataclass
class DeviceBundle:
    """The device's side of a trained LSC4Rec run (see the module docstring)."""

    srm: str
    device_catalogue: str
    alpha_stale: float
    alpha_fresh: float
    fusion_norm: str
    candidate_num: int
    cloud_lag: int
    metric_by_rank: list
    request: RequestRule
    cloud_model_id: str
    item_tokens_sha256: str
    cloud_history: int  # the newest history items the cloud reads (llm_max_len): what a request sends
    simulation: dict = field(default_factory=dict)

    def save_pretrained(self, folder, srm_module):
        """Write the bundle and ``srm_module``'s weights into ``folder``: a DeviceSRM, or a
        :class:`~recbole_lsc.device.per_device.PerDeviceSRM` (the SRM the cloud sent, and each
        device's own flat weights in ``devices.safetensors``)."""
        os.makedirs(folder, exist_ok=True)
        payload = {"format": BUNDLE_FORMAT, **asdict(self), "request": self.request.to_dict()}
        vectors = getattr(srm_module, "vectors", None)
        save_checkpoint(os.path.join(folder, WEIGHTS_NAME), getattr(srm_module, "start", srm_module),
                        meta={"srm": self.srm})
        devices = os.path.join(folder, DEVICES_NAME)
        if vectors:
            users = sorted(vectors)
            save_file({"users": torch.tensor(users, dtype=torch.long),
                       "weights": torch.stack([vectors[user] for user in users])}, devices)
        elif os.path.exists(devices):
            os.remove(devices)
        write_json_atomic(os.path.join(folder, CONFIG_NAME), payload)

    @classmethod
    def from_pretrained(cls, folder, srm_module, device="cpu"):
        """Load the bundle in ``folder`` and its weights into ``srm_module`` (built from the same config)."""
        path = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(path):
            raise CheckpointError(f"'{folder}' is not a device bundle (no {CONFIG_NAME}); pass the 'device/<setting>' "
                                  "folder a LSC4Rec run wrote next to its results.json")
        with open(path, encoding="utf-8") as handle:
            try:
                payload = json.load(handle)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"'{path}' is not valid JSON ({err}); write the bundle again") from None
        if payload.pop("format", None) != BUNDLE_FORMAT:
            raise CheckpointError(f"'{path}' has an unknown bundle format; write it again with this version")
        try:
            payload["request"] = RequestRule(**payload["request"])
            bundle = cls(**payload)
        except (TypeError, KeyError, ValueError) as err:
            raise CheckpointError(f"'{path}' is not a device bundle of this version ({err})") from None
        if bundle.srm != srm_module.name:
            raise CheckpointError(f"'{folder}' holds a {bundle.srm} device, not a {srm_module.name}; pass --srm="
                                  f"{bundle.srm} or the bundle of a {srm_module.name} run")
        load_checkpoint(os.path.join(folder, WEIGHTS_NAME), srm_module, device=device, expect={"srm": bundle.srm})
        return bundle


def load_device_weights(folder, srm_module):
    """``srm_module`` itself, or a PerDeviceSRM of it when ``folder`` holds each device's weights."""
    path = os.path.join(folder, DEVICES_NAME)
    if not os.path.isfile(path):
        return srm_module
    try:
        tensors = load_file(path)
        users, weights = tensors["users"], tensors["weights"]
    except (SafetensorError, KeyError, OSError) as err:
        raise CheckpointError(f"'{path}' is not a file of per-device weights ({err}); write the bundle again") from None
    size = sum(p.numel() for p in srm_module.parameters())
    if weights.dim() != 2 or weights.size(1) != size or len(users) != len(weights):
        raise CheckpointError(f"'{path}' holds weights of another shape than the {srm_module.name} of this config; "
                              "replay it with the config of its run")
    return PerDeviceSRM(srm_module, {int(user): row for user, row in zip(users.tolist(), weights)})


def tokens_digest(item_tokens):
    """SHA-256 of an item table's tokens in id order: a bundle is only valid for that table."""
    return hashlib.sha256("\x1f".join(map(str, item_tokens)).encode("utf-8")).hexdigest()
