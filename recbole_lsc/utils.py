"""Find model and trainer classes by name: the plugin's own first, then RecBole's."""

import importlib

import recbole.model.sequential_recommender as recbole_sequential
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_lsc.errors import ConfigError
from recbole_lsc.safe_trainer import safe_trainer_class

# The plugin's models and the modules that define them (imported on demand, as RecBole does).
PLUGIN_MODELS = {"LLMRec": "recbole_lsc.cloud.llmrec", "LSC4Rec": "recbole_lsc.lsc4rec"}
# ... and the modules that define their trainers, ``<model>Trainer`` (imported on demand: the
# experiment modules import this one)
PLUGIN_TRAINERS = {"LLMRec": "recbole_lsc.cloud.trainer", "LSC4Rec": "recbole_lsc.experiment.lsc4rec"}


def get_model(model_name):
    """Return the model class called ``model_name`` (case-sensitive)."""
    if model_name in PLUGIN_MODELS:
        return getattr(importlib.import_module(PLUGIN_MODELS[model_name]), model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):  # ImportError: exlib models need lightgbm/xgboost
        raise ConfigError(
            f"unknown model '{model_name}': neither a recbole-lsc nor a RecBole model (names are "
            f"case-sensitive); sequential models include {', '.join(known_sequential_models())}"
        ) from None


def known_sequential_models():
    """Names of the plugin's models followed by RecBole's sequential ones."""
    recbole = sorted(name for name, obj in vars(recbole_sequential).items() if isinstance(obj, type))
    return [*PLUGIN_MODELS, *recbole]


def get_trainer(model_type, model_name):
    """The trainer class for ``model_name``, as ``recbole.utils.get_trainer`` finds it.

    The plugin's models get their own trainers (:data:`PLUGIN_TRAINERS`): they do not train
    through RecBole's ``Trainer`` loop (see each class). Every other model gets RecBole's
    trainer with safetensors checkpoints (never pickle).
    """
    if model_name in PLUGIN_TRAINERS:
        return getattr(importlib.import_module(PLUGIN_TRAINERS[model_name]), f"{model_name}Trainer")
    return safe_trainer_class(recbole_get_trainer(model_type, model_name))
