"""Any RecBole model, trained and evaluated exactly as stock RecBole does (role ``srm``)."""

import logging

from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lsc.results import result_row
from recbole_lsc.utils import get_model, get_trainer


def train_srm(config, train_data, valid_data, saved=True):
    """Seed, build and fit as ``recbole.quick_start.run_recbole``; return ``(model, trainer, best_valid)``."""
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logging.getLogger().info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    _, best_valid = trainer.fit(train_data, valid_data, saved=saved, show_progress=config["show_progress"])
    return model, trainer, best_valid


def run_srm(config, saved=True):
    """The baseline pipeline: one ``srm`` row."""
    dataset = create_dataset(config)
    logging.getLogger().info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    _, trainer, best_valid = train_srm(config, train_data, valid_data, saved=saved)
    test = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    return [result_row(config["model"], "srm", best_valid, test)], {}
