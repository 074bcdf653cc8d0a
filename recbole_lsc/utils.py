"""Find model and trainer classes by name: the plugin's own first, then RecBole's."""

import importlib
import importlib.util
import pkgutil

import recbole.model.sequential_recommender as recbole_sequential
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_lsc.errors import ConfigError

_MODEL_SUBPACKAGES = ("sequential_recommender",)


def get_model(model_name):
    """Return the model class called ``model_name`` (file name = class name in lower case)."""
    for sub in _MODEL_SUBPACKAGES:
        module_path = f"recbole_lsc.model.{sub}.{model_name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            module = importlib.import_module(module_path)
            if hasattr(module, model_name):
                return getattr(module, model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):  # ImportError: exlib models need lightgbm/xgboost
        raise ConfigError(
            f"unknown model '{model_name}': neither a recbole-lsc nor a RecBole model (names are "
            f"case-sensitive); sequential models include {', '.join(known_sequential_models())}"
        ) from None


def known_sequential_models():
    """Names of the plugin's models followed by RecBole's sequential ones."""
    import recbole_lsc.model.sequential_recommender as plugin_sequential

    plugin = [
        name
        for info in pkgutil.iter_modules(plugin_sequential.__path__)
        for name, obj in vars(importlib.import_module(f"{plugin_sequential.__name__}.{info.name}")).items()
        if isinstance(obj, type) and name.lower() == info.name
    ]
    recbole = sorted(name for name, obj in vars(recbole_sequential).items() if isinstance(obj, type))
    return plugin + recbole


def get_trainer(model_type, model_name):
    """Return ``recbole_lsc.trainer.<Model>Trainer`` or RecBole's trainer made checkpoint-safe.

    Every trainer the plugin hands out saves and loads checkpoints through
    :mod:`recbole_lsc.checkpoint` (safetensors, never pickle).
    """
    from recbole_lsc import trainer as plugin_trainers

    own = getattr(plugin_trainers, f"{model_name}Trainer", None)
    if own is not None:
        return own
    return plugin_trainers.safe_trainer_class(recbole_get_trainer(model_type, model_name))
