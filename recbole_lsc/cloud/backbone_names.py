"""What an ``llm_backbone`` value names, decided from its text and the file system alone.

A run that trains or loads the cloud checks it before it reads any data
(:func:`check_backbone`), and the loader (:mod:`recbole_lsc.cloud.backbones`, which needs
transformers) relies on the same rule: a misspelt folder stops the run in one line instead of
after the dataset has loaded. Not a config check: a run folder replayed on a device machine
carries the training machine's path, and never loads the cloud.
"""

import os

from recbole_lsc.errors import ConfigError

TINY = "tiny"
SMOLLM2 = "smollm2-135m"


def local_backbone_folder(name):
    """The folder a local ``llm_backbone`` names (``~`` expanded); :class:`ConfigError` when it
    is not a Hugging Face model folder (no such folder, or no ``config.json`` in it)."""
    folder = os.path.expanduser(str(name))
    if not os.path.isdir(folder):
        raise ConfigError(f"llm_backbone '{name}' is neither '{TINY}', '{SMOLLM2}' nor an existing folder; "
                          "give the path of a local Hugging Face model folder")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ConfigError(f"llm_backbone folder '{folder}' has no config.json: it is not a Hugging Face model folder")
    return folder


def check_backbone(name):
    """Refuse, in one line, an ``llm_backbone`` that names no model: empty, or a path that is
    not a local Hugging Face model folder (``tiny`` and ``smollm2-135m`` are names, not paths)."""
    if name in (TINY, SMOLLM2):
        return
    if name is None:
        raise ConfigError(f"llm_backbone is empty; set '{TINY}', '{SMOLLM2}' or the path of a local Hugging Face "
                          "model folder")
    local_backbone_folder(name)
