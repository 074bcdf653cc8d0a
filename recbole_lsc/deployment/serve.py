"""``recbole-lsc serve``: the trained cloud LLM of a config as an HTTP candidate service.

    recbole-lsc serve --model=LSC4Rec --dataset=ml-100k [--config_files=...] [--serve_port=8000]
    recbole-lsc serve --run=<run folder> [--serve_port=8000] [--data_path=DIR]

The same config as the LSC4Rec run that trained the LLM (it is found in the trained-LLM store
by that config, dataset and seed), or that run's folder (its config from ``run.json``, the LLM
from ``cloud/llm.safetensors``: no store, so a folder copied to another machine serves there).
Items are the dataset's item tokens. The ``serve_*`` keys set the address, the limits, the
micro-batching window and the queue bound; the bearer token comes from the file
``serve_token_file`` or the ``RECBOLE_LSC_TOKEN`` environment variable.
"""

import gc
import logging
import os

import torch

from recbole.utils import init_logger

from recbole_lsc.cloud.service import ServiceLimits, create_app
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.deployment.loading import trained_cloud
from recbole_lsc.deployment.run_folder import run_service_cloud
from recbole_lsc.errors import ConfigError
from recbole_lsc.experiment.lsc4rec import load_dataset

TOKEN_ENV = "RECBOLE_LSC_TOKEN"


def bearer_token(config):
    """The service's bearer token: ``serve_token_file``'s first line, else ``$RECBOLE_LSC_TOKEN``, else None."""
    path = config["serve_token_file"]
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.readline().strip()
        except OSError as err:
            raise ConfigError(f"serve_token_file '{path}' cannot be read ({err.strerror}); fix the path") from None
        if not token:
            raise ConfigError(f"serve_token_file '{path}' is empty; write the token on its first line")
        return token
    return os.environ.get(TOKEN_ENV) or None


def stored_cloud(config, dataset, protocol):
    """``(cloud, version)`` of ``serve`` from a config: the trained LLM found in the trained-LLM store."""
    llm, version = trained_cloud(config, dataset, protocol)
    return InProcessCloud(llm, config["eval_batch_size"], config["device"]), version


def service_app(config, run_dir=None):
    """``(app, version)``: the FastAPI app serving the trained cloud of ``config``, read from the
    run folder ``run_dir`` when given (``serve --run``), else from the trained-LLM store."""
    token = bearer_token(config)  # a bad token file stops before anything is loaded
    dataset, protocol, _ = load_dataset(config)
    if run_dir is None:
        cloud, version = stored_cloud(config, dataset, protocol)
    else:
        cloud, version = run_service_cloud(run_dir, config, dataset, protocol)
    limits = ServiceLimits(config["serve_max_body_bytes"], config["serve_max_history"], config["serve_max_k"])
    app = create_app(cloud, dataset.field2id_token[dataset.iid_field], version, token=token,
                     limits=limits, batch_window_ms=config["serve_batch_window_ms"],
                     max_batch=config["serve_max_batch"], max_queue=config["serve_max_queue"],
                     max_latency_s=config["serve_max_latency_ms"] / 1000.0)
    return app, version


def freeze_loaded_objects():
    """Move every object alive now (libraries, model, item tokens) out of the garbage collector's
    reach (``gc.freeze``): it would otherwise walk all of them in each full collection, which
    under load come every few seconds and stalled every request in flight for about 0.25 s on
    ml-100k (benchmarks/service_overload.py); requests' own objects are still collected."""
    gc.collect()
    gc.freeze()


def serve(config, run_dir=None):
    """Run the service until interrupted (uvicorn; one worker: the model is loaded once)."""
    import uvicorn

    init_logger(config)
    if config["serve_threads"]:
        torch.set_num_threads(config["serve_threads"])
    app, version = service_app(config, run_dir)
    freeze_loaded_objects()
    logging.getLogger().info(f"serving cloud LLM version {version} on {config['serve_host']}:{config['serve_port']}")
    uvicorn.run(app, host=config["serve_host"], port=config["serve_port"], log_level="warning", access_log=False)
