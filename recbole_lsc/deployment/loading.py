"""What both sides of a deployment load from a trained LSC4Rec run: the cloud LLM (from the
trained-LLM store) and the device SRM (from a device bundle), for the dataset of a config."""

import os

from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.cloud.store import entry_path, llm_key, load_trained_llm
from recbole_lsc.device.bundle import CONFIG_NAME, DeviceBundle, load_device_weights, tokens_digest
from recbole_lsc.device.srm import DeviceSRM
from recbole_lsc.errors import ConfigError
from recbole_lsc.utils import get_model


def trained_cloud(config, dataset, protocol):
    """``(llm, version)``: the trained LLM of this config, dataset and seed from the store;
    ``version`` is its store key. Refuses (ConfigError) when the store has none."""
    llm = LLMRec(config, dataset).to(config["device"])
    key = llm_key(config, dataset, protocol)
    if load_trained_llm(config, dataset, protocol, llm) is None:
        raise ConfigError(
            f"no trained cloud LLM for this config, dataset and seed in trained_llm_cache "
            f"'{config['trained_llm_cache']}' (looked for {entry_path(config, key)}); run "
            f"`recbole-lsc --model=LSC4Rec --dataset={config['dataset']}` with the same config first"
        )
    llm.requires_grad_(False)
    return llm.eval(), key


def check_bundle_folder(folder):
    """Refuse a bundle folder that does not exist or holds no bundle (ConfigError, one line)."""
    if not os.path.isdir(folder):
        raise ConfigError(f"device bundle folder '{folder}' does not exist; pass replay_bundle=<run folder>/device/"
                          "<candidates|full> of a finished LSC4Rec run")
    if not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        raise ConfigError(f"'{folder}' holds no device bundle ({CONFIG_NAME}); pass the device/<candidates|full> "
                          "folder a LSC4Rec run wrote next to its results.json")


def device_bundle(config, dataset, srm_config, folder):
    """``(srm, bundle)`` of the device bundle in ``folder`` (see :mod:`recbole_lsc.device.bundle`)."""
    check_bundle_folder(folder)
    srm = DeviceSRM(get_model(config["srm"])(srm_config, dataset), srm_config, dataset).to(config["device"])
    bundle = DeviceBundle.from_pretrained(folder, srm, device=config["device"])
    if bundle.item_tokens_sha256 != tokens_digest(dataset.field2id_token[dataset.iid_field]):
        raise ConfigError(f"device bundle '{folder}' was trained on another item table than dataset "
                          f"'{config['dataset']}' with this config; replay it with the config of its run")
    return load_device_weights(folder, srm.eval()), bundle
