"""The cloud decoder's precision (``llm_autocast``); torch only, so the config checks can read
its choices without importing transformers."""

import torch

from recbole_lsc.errors import ConfigError

AUTOCAST_MODES = ("auto", "bf16", "off")


def autocast_dtype(mode, device):
    """The decoder's autocast dtype for ``llm_autocast``: bfloat16 with ``bf16``, or with
    ``auto`` on a CUDA device that supports it; None (float32) otherwise. A CPU without bf16
    units gains nothing from it, so ``auto`` leaves the CPU in float32."""
    if mode not in AUTOCAST_MODES:
        raise ConfigError(f"llm_autocast must be one of {', '.join(AUTOCAST_MODES)}, got {mode!r}")
    device = torch.device(device)
    if mode == "bf16" or (mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None
