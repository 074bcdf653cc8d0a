"""Run one experiment: config -> data -> model -> train -> evaluate -> results.json.

Mirrors ``recbole.quick_start.run_recbole`` step for step (same seeding points, so a
RecBole model gives the metrics stock RecBole gives) without importing
``recbole.quick_start``, which pulls in ray.
"""

import logging
import sys

from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed

from recbole_lsc.config import LSCConfig
from recbole_lsc.results import markdown_table, result_row, write_results
from recbole_lsc.utils import get_model, get_trainer


def build_config(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
    return LSCConfig(model, dataset, config_file_list, config_dict, cmd_args)


def train_srm(config, train_data, valid_data, saved=True, show_progress=None):
    """Train a RecBole model as stock RecBole does; return ``(model, trainer, best_valid_result)``."""
    logger = logging.getLogger()
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    show = config["show_progress"] if show_progress is None else show_progress
    _, best_valid = trainer.fit(train_data, valid_data, saved=saved, show_progress=show)
    return model, trainer, best_valid


def run_srm(config, saved=True):
    """The baseline pipeline for any RecBole model: one ``srm`` row."""
    dataset = create_dataset(config)
    logging.getLogger().info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    _, trainer, best_valid = train_srm(config, train_data, valid_data, saved=saved)
    test = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    return [result_row(config["model"], "srm", best_valid, test)], {}


def run_recbole_lsc(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=(), saved=True):
    """Run ``model`` on ``dataset``; write ``results.json`` and return its payload pieces.

    A plugin model class may define ``run_pipeline(config, saved)`` returning
    ``(rows, extra_top_level_keys)``; any other model runs the plain SRM pipeline.
    """
    config = build_config(model, dataset, config_file_list, config_dict, cmd_args)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    logger.info(sys.argv)
    logger.info(config)
    pipeline = getattr(config.model_class, "run_pipeline", None) or run_srm
    rows, extra = pipeline(config, saved=saved)
    path = write_results(config, rows, **extra)
    table = markdown_table(rows)
    print(table)
    logger.info(f"results written to {path}")
    return {"config": config, "rows": rows, "path": path, **extra}
