"""Run one experiment: config -> data -> model -> train -> evaluate -> results.json.

Mirrors ``recbole.quick_start.run_recbole`` step for step (same seeding points, so a
RecBole model gives the metrics stock RecBole gives) without importing
``recbole.quick_start``, which pulls in ray.
"""

import logging
import os
import sys

from recbole.utils import init_logger, init_seed

from recbole_lsc.arguments import command_line
from recbole_lsc.cloud.backbone_names import check_backbone
from recbole_lsc.config import PROTOCOL_MODELS, LSCConfig
from recbole_lsc.deployment.run_folder import load_run, save_run_folder  # noqa: F401  (load_run: the API)
from recbole_lsc.experiment.llmrec import run_llmrec
from recbole_lsc.experiment.lsc4rec import run_lsc4rec
from recbole_lsc.experiment.srm import run_srm
from recbole_lsc.results import curve_table, markdown_table, report_table, run_directory, write_results

# Plugin models with a pipeline of their own; every other model runs as a plain RecBole SRM.
PIPELINES = {"LLMRec": run_llmrec, "LSC4Rec": run_lsc4rec}


def build_config(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
    return LSCConfig(model, dataset, config_file_list, config_dict, cmd_args)


def run_recbole_lsc(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=(), saved=True):
    """Run ``model`` on ``dataset``; write ``results.json`` and return its payload pieces.

    The pipeline (``PIPELINES`` or the plain SRM one) returns ``(rows, extra_top_level_keys)``.
    """
    config = build_config(model, dataset, config_file_list, config_dict, cmd_args)
    if config["model"] in PROTOCOL_MODELS:  # they build the cloud: its backbone must exist before data is read
        check_backbone(config["llm_backbone"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    logger.info(sys.argv)
    logger.info(config)
    pipeline = PIPELINES.get(config["model"], run_srm)
    rows, extra = pipeline(config, saved=saved)
    bundles = extra.pop("device_bundles", {})
    cloud = extra.pop("run_cloud", None)
    folder = run_directory(config)
    for mode, (bundle, srm) in bundles.items():  # what a deployed device carries (docs/deployment.md)
        bundle.save_pretrained(os.path.join(folder, "device", mode), srm)
    if cloud is not None:  # the rest of a self-contained run folder (load_run)
        llm, dataset, model_id = cloud
        save_run_folder(folder, config, llm, dataset, list(bundles), model_id)
    # last: a sweep takes an existing results.json for a finished job, device bundles included
    command = command_line(config["model"], config["dataset"], config_file_list, config_dict, cmd_args)
    path = write_results(config, rows, folder=folder, command=command, **extra)
    report_table("test result", markdown_table(rows))
    if "request_curve" in extra:
        report_table("request curves", curve_table(extra["request_curve"], config["valid_metric"].lower()))
    logger.info(f"results written to {path}")
    return {"config": config, "rows": rows, "path": path, **extra}
