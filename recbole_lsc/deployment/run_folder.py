"""A finished LSC4Rec run folder as a self-contained deployment: everything that rebuilds the
cloud and every device lives next to ``results.json`` as safetensors + JSON, so the folder can be
copied to another machine (with the dataset's atomic files) and loaded there without the
trained-model caches (``saved/llm_cache``, ``saved/srm_cache``) of the machine that trained it.

Layout (``device/<setting>/`` is :mod:`recbole_lsc.device.bundle`'s)::

    run.json                 the config the run was given, its dataset, settings, item-table digest
    item_tokens.json         the item tokens in id order (what every id in the folder means)
    cloud/llm.safetensors    the trained cloud LLM (a recbole-lsc checkpoint: nothing is unpickled)
    device/<setting>/        one device bundle per device_catalogue / retrain_scope setting
"""

import json
import os

from recbole_lsc.checkpoint import load_checkpoint, save_checkpoint
from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.cloud.store import llm_key
from recbole_lsc.config import LSCConfig
from recbole_lsc.deployment.loading import device_bundle
from recbole_lsc.device.bundle import tokens_digest
from recbole_lsc.errors import CheckpointError, ConfigError
from recbole_lsc.experiment.lsc4rec import load_dataset
from recbole_lsc.files import write_json_atomic
from recbole_lsc.results import given_config

RUN_NAME = "run.json"
TOKENS_NAME = "item_tokens.json"
CLOUD_WEIGHTS = os.path.join("cloud", "llm.safetensors")
RUN_FORMAT = 1


def save_run_folder(folder, config, llm, dataset, settings, cloud_model_id):
    """Write what :func:`load_run` needs besides the device bundles: the config the run was given
    (not RecBole's derived values, which a rebuild derives again), the item table, the LLM."""
    tokens = [str(token) for token in dataset.field2id_token[dataset.iid_field]]
    digest = tokens_digest(dataset.field2id_token[dataset.iid_field])
    os.makedirs(os.path.join(folder, "cloud"), exist_ok=True)
    save_checkpoint(os.path.join(folder, CLOUD_WEIGHTS), llm, meta={"item_tokens_sha256": digest})
    write_json_atomic(os.path.join(folder, TOKENS_NAME), tokens)
    write_json_atomic(os.path.join(folder, RUN_NAME), {
        "format": RUN_FORMAT, "model": config["model"], "dataset": config["dataset"],
        "config": given_config(config), "settings": list(settings),
        "item_tokens_sha256": digest, "cloud_model_id": cloud_model_id})


def read_run(folder):
    """The ``run.json`` of ``folder``; refuses (one line) a folder that is not a loadable run."""
    path = os.path.join(folder, RUN_NAME)
    if not os.path.isfile(path):
        raise ConfigError(f"'{folder}' is not a loadable LSC4Rec run folder (no {RUN_NAME}); pass the folder a "
                          "LSC4Rec run wrote its results.json into")
    try:
        with open(path, encoding="utf-8") as handle:
            run = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"'{path}' is not valid JSON ({err}); copy the run folder again") from None
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        raise CheckpointError(f"'{path}' has an unknown run format; re-run the job with this version")
    return run


def check_same_items(folder, run, config, dataset):
    """Refuse a run folder whose item table is not this dataset's: every id in it would mean
    another item."""
    if run["item_tokens_sha256"] != tokens_digest(dataset.field2id_token[dataset.iid_field]):
        raise ConfigError(f"run folder '{folder}' was trained on another item table than dataset "
                          f"'{config['dataset']}' at {config['data_path']}; load it with its own dataset")


def load_cloud(folder, config, dataset, model_id):
    """The run's cloud as an in-process candidate source, its LLM read from the folder."""
    llm = LLMRec(config, dataset).to(config["device"])
    load_checkpoint(os.path.join(folder, CLOUD_WEIGHTS), llm, device=config["device"],
                    expect={"item_tokens_sha256": tokens_digest(dataset.field2id_token[dataset.iid_field])})
    llm.requires_grad_(False)
    return InProcessCloud(llm.eval(), config["eval_batch_size"], config["device"], model_id=model_id)


def load_devices(folder, run, config, dataset, srm_config):
    """``{setting: (srm, bundle)}`` of every device bundle the run wrote, in the run's order."""
    return {setting: device_bundle(config, dataset, srm_config, os.path.join(folder, "device", setting))
            for setting in run["settings"]}


def run_config(run_dir, model=None, dataset=None, drop=(), cmd_args=(), **overrides):
    """``(run, config)``: the ``run.json`` of ``run_dir`` and the config the run was given, less
    the keys in ``drop``, with ``overrides`` and then ``cmd_args`` (``--key=value``) on top: what
    rebuilds the run on this machine without the caches of the one that trained it.

    ``model`` and ``dataset``, when given, must be the run's (one ``ConfigError`` line otherwise),
    and the run must be a LSC4Rec run: only that model leaves a cloud and devices to load."""
    run = read_run(run_dir)
    if run.get("model") != "LSC4Rec":
        raise ConfigError(f"run folder '{run_dir}' is a run of model '{run.get('model')}', not LSC4Rec; pass the "
                          "folder of a LSC4Rec run")
    for flag, given, own in (("model", model, run["model"]), ("dataset", dataset, run["dataset"])):
        if given is not None and given != own:
            raise ConfigError(f"run folder '{run_dir}' is a run on {flag} '{own}', not '{given}'; "
                              f"drop --{flag} or pass a run folder of '{given}'")
    given = {key: value for key, value in run["config"].items() if key not in drop}
    config = LSCConfig(run["model"], run["dataset"], config_dict={**given, **overrides}, cmd_args=cmd_args)
    return run, config


def run_service_cloud(run_dir, config, dataset, protocol):
    """``(cloud, version)`` for ``recbole-lsc serve --run``: the run's cloud read from the folder
    (no trained-LLM store), its version the LLM's store key, as ``serve`` from a config reports."""
    run = read_run(run_dir)
    check_same_items(run_dir, run, config, dataset)
    return load_cloud(run_dir, config, dataset, run["cloud_model_id"]), llm_key(config, dataset, protocol)


def load_run(run_dir, dataset=None, **overrides):
    """``(config, dataset, cloud, devices)`` of the LSC4Rec run in ``run_dir``, from the folder
    alone (RecBole's ``load_data_and_model`` for a whole run): the config it was given,
    ``overrides`` on top (``data_path=`` where the dataset lives on this machine), the dataset,
    the cloud as an in-process candidate source and ``{setting: (srm, bundle)}``.

    ``dataset``, when given, must be the run's: a folder from another dataset is refused (one
    ``ConfigError`` line), as is one whose item table differs from the dataset's on this machine.
    """
    run, config = run_config(run_dir, dataset=dataset, **overrides)
    data, _, srm_config = load_dataset(config)
    check_same_items(run_dir, run, config, data)
    cloud = load_cloud(run_dir, config, data, run["cloud_model_id"])
    return config, data, cloud, load_devices(run_dir, run, config, data, srm_config)
