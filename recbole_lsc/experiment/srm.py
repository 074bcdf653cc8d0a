"""Any RecBole model, trained and evaluated exactly as stock RecBole does (role ``srm``)."""

import logging

from recbole.utils import init_seed

from recbole_lsc.checkpoint import load_checkpoint
from recbole_lsc.data.loading import create_dataset, data_preparation
from recbole_lsc.results import result_row
from recbole_lsc.utils import get_model, get_trainer


def fit_recbole(config, model, train_data, valid_data, saved=True):
    """RecBole's trainer for ``model``, fit with early stopping; returns ``(trainer, best_valid)``.

    With ``saved`` the best epoch's checkpoint is loaded back into ``model`` (RecBole's fit
    leaves the last epoch's weights); without it the model keeps the last epoch.
    """
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    _, best_valid = trainer.fit(train_data, valid_data, saved=saved, show_progress=config["show_progress"])
    trainer.tensorboard.close()  # fit has logged every epoch: no writer thread outlives it
    if saved:
        load_checkpoint(trainer.saved_model_file, model, config["device"])
    return trainer, best_valid


def epochs_of(trainer):
    """``{"epochs_trained", "best_epoch"}`` of a fitted RecBole trainer, as RecBole's own
    early-stopping message counts them (the best epoch: the last minus the evaluations since it)."""
    epochs = sorted(trainer.train_loss_dict)
    if not epochs:
        return {"epochs_trained": 0, "best_epoch": None}
    best = epochs[-1] - trainer.cur_step * trainer.eval_step if trainer.eval_step else epochs[-1]
    return {"epochs_trained": len(epochs), "best_epoch": int(best)}


def run_srm(config, saved=True):
    """The baseline pipeline, step for step as ``recbole.quick_start.run_recbole``: one ``srm`` row."""
    dataset = create_dataset(config)
    logging.getLogger().info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logging.getLogger().info(model)
    trainer, best_valid = fit_recbole(config, model, train_data, valid_data, saved=saved)
    test = trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"])
    return [result_row(config["model"], "srm", best_valid, test, **epochs_of(trainer))], {}
