"""What a RecBole sequential model reads and needs to serve as the device SRM (docs/backbones.md).

Every RecBole sequential model reads the interactions (user, item, timestamp). Some read more,
and RecBole only loads what ``load_col`` names, so without help they fail deep inside model
construction (``KeyError: 'class'``) or inside RecBole's reader (a missing ``.ent`` file):

* item-feature models (GRU4RecF, SASRecF, FDSA, S3Rec) read the ``.item`` columns named by the
  keys in :data:`FEATURE_KEYS` that their RecBole yaml declares;
* knowledge-graph models (those with a ``KnowledgeBasedDataset`` of their own: GRU4RecKG, KSR)
  read the ``.kg`` and ``.link`` files and pretrained vectors (:data:`PRELOADED_WEIGHTS`) from
  additional atomic files (``.ent``, and ``.rel`` for KSR).

:func:`needed_columns` and :func:`knowledge_graph_settings` say what to load, so the config adds
it; :func:`check_input_files` reads the files' headers before any data is loaded and names
what is missing in one line, as :func:`check_model_values` does for a value a model's own code
cannot build with. :func:`device_refusal` and :func:`run_refusal` name the models the
plugin cannot run, with the reason.
"""

import importlib
import os

from recbole.data.dataset import KnowledgeBasedDataset
from recbole.model.abstract_recommender import AbstractRecommender

from recbole_lsc.errors import ConfigError

# config keys whose values name .item columns a model reads (only when its own yaml declares them)
FEATURE_KEYS = ("selected_features", "item_attribute")
# id field a model reads with dataset.get_preload_weight -> the config key its vectors' width must equal
PRELOADED_WEIGHTS = {
    "GRU4RecKG": {"ent_id": "embedding_size"},
    "KSR": {"ent_id": "kg_embedding_size", "rel_id": "kg_embedding_size"},
}
# id field -> the RecBole alias key that puts it in the knowledge graph's id space
_ALIAS_KEYS = {"ent_id": "alias_of_entity_id", "rel_id": "alias_of_relation_id"}
# model -> {key: (smallest value RecBole's code accepts, why)}: below it RecBole fails in model construction
_MINIMUM_VALUES = {
    "FEARec": {"n_layers": (2, "FEARec slides its frequency filters across n_layers - 1 layers")},
}
_REFUSED_RUNS = {
    "S3Rec": "needs its self-supervised pre-training stage (train_stage: pretrain, RecBole's S3RecTrainer) before "
             "fine-tuning, and RecBole hands the pre-trained weights over as a pickled checkpoint (pre_model_path) "
             "that recbole-lsc never loads (unpickling a file can run code); use SASRec, the encoder S3Rec "
             "fine-tunes, or SASRecF for the item features it reads",
}


def ranks_catalogue(model_class):
    """Whether the model ranks the whole item table (has RecBole's ``full_sort_predict``):
    what the device SRM's every score is built on."""
    return model_class.full_sort_predict is not AbstractRecommender.full_sort_predict


def device_refusal(model_class):
    """Why ``model_class`` cannot be LSC4Rec's device SRM (one line), or None."""
    name = model_class.__name__
    if not ranks_catalogue(model_class):
        return (f"srm '{name}' is a click-through-rate model: it scores the (user, item) pairs it is given, with a "
                "label, and has no ranking of the item table (full_sort_predict), which the device SRM needs to "
                "re-rank the cloud's lists; choose a next-item model such as SASRec, GRU4Rec, NARM or BERT4Rec")
    return run_refusal(name)


def run_refusal(name):
    """Why the plugin does not train model ``name`` at all (one line), or None."""
    reason = _REFUSED_RUNS.get(name)
    return f"model '{name}' {reason}" if reason else None


def check_model_values(config):
    """Refuse, in one line, a value the model's own RecBole code cannot build with."""
    model = config.get("model")
    for key, (smallest, why) in _MINIMUM_VALUES.get(model, {}).items():
        value = config.get(key)
        if isinstance(value, int) and value < smallest:
            raise ConfigError(f"'{model}' needs {key} >= {smallest} ({why}), got {value}; set {key}: {smallest} or more")


def reads_knowledge_graph(name):
    """Whether model ``name`` builds a knowledge-graph dataset (RecBole's ``<name>Dataset``)."""
    own = getattr(importlib.import_module("recbole.data.dataset"), f"{name}Dataset", None)
    return isinstance(own, type) and issubclass(own, KnowledgeBasedDataset)


def item_features(config, declared):
    """``{key: [.item columns]}`` the model reads; ``declared``: keys its own yaml sets."""
    features = {}
    for key in FEATURE_KEYS:
        value = config.get(key) if key in declared else None
        if value:
            features[key] = [value] if isinstance(value, str) else list(value)
    return features


def preloaded_weights(config):
    """``{id field: (file suffix, value field, width key)}`` of the pretrained vectors the model
    reads; the value field is the user's ``preload_weight`` entry, else ``<suffix>_emb``."""
    chosen = config.get("preload_weight") or {}
    return {field: (field.rsplit("_", 1)[0], chosen.get(field, f"{field.rsplit('_', 1)[0]}_emb"), width)
            for field, width in PRELOADED_WEIGHTS.get(config.get("model"), {}).items()}


def needed_columns(config, declared):
    """``load_col`` entries (suffix -> columns) the model reads beyond the interactions."""
    iid = config.get("ITEM_ID_FIELD")
    needed = {}
    features = [column for columns in item_features(config, declared).values() for column in columns]
    if features:
        needed["item"] = [iid, *features]
    if reads_knowledge_graph(config.get("model")):
        needed["kg"] = [config.get(key) for key in ("HEAD_ENTITY_ID_FIELD", "RELATION_ID_FIELD", "TAIL_ENTITY_ID_FIELD")]
        needed["link"] = [iid, config.get("ENTITY_ID_FIELD")]
    for field, (suffix, value, _) in preloaded_weights(config).items():
        needed[suffix] = [field, value]
    return needed


def with_columns(load_col, needed):
    """``load_col`` plus the ``needed`` columns, in order and without repeats (None and ``"*"``
    already load everything)."""
    if load_col is None:
        return None
    merged = {suffix: (list(columns) if isinstance(columns, (list, tuple)) else columns)
              for suffix, columns in load_col.items()}
    for suffix, columns in needed.items():
        present = merged.get(suffix, [])
        if present != "*":
            merged[suffix] = list(dict.fromkeys([*present, *columns]))
    return merged


def knowledge_graph_settings(config):
    """RecBole keys that load the pretrained vectors the model reads, in the knowledge graph's id
    space (``additional_feat_suffix``, ``preload_weight``, ``alias_of_*``), the user's entries kept."""
    weights = preloaded_weights(config)
    if not weights:
        return {}
    settings = {"additional_feat_suffix": _listed(config.get("additional_feat_suffix")),
                "preload_weight": dict(config.get("preload_weight") or {})}
    for field, (suffix, value, _) in weights.items():
        settings["additional_feat_suffix"] = list(dict.fromkeys([*settings["additional_feat_suffix"], suffix]))
        settings["preload_weight"].setdefault(field, value)
        alias = _ALIAS_KEYS[field]
        settings[alias] = list(dict.fromkeys([*_listed(config.get(alias)), field]))
    return settings


def _listed(value):
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def check_input_files(config, declared):
    """Refuse, in one line, a dataset that lacks a file or column the model reads, or pretrained
    vectors of the wrong width (before any data is loaded: RecBole would fail deep inside)."""
    model, folder = config.get("model"), config.get("data_path")
    for key, columns in item_features(config, declared).items():
        _check_file(config, "item", [config.get("ITEM_ID_FIELD"), *columns],
                    f"'{model}' reads the item features {columns} ({key})",
                    f"or set {key} to columns the file has")
    needed = needed_columns(config, declared)
    for suffix in ("kg", "link"):
        if suffix in needed:
            _check_file(config, suffix, needed[suffix], f"'{model}' reads a knowledge graph",
                        "or choose a model without one (e.g. GRU4Rec)")
    for field, (suffix, value, width) in preloaded_weights(config).items():
        header = _check_file(config, suffix, [field, value],
                             f"'{model}' reads pretrained vectors of {config.get(width)} numbers per "
                             f"{'relation' if suffix == 'rel' else 'entity'} ({value}, {width})",
                             "or choose a model without a knowledge graph (e.g. GRU4Rec)")
        _check_width(os.path.join(folder, f"{config.get('dataset')}.{suffix}"), config, header, value, width)


def _header(path, config):
    """``{column name: type}`` of an atomic file's first line."""
    with open(path, encoding=config.get("encoding") or "utf-8", errors="replace") as handle:
        first = handle.readline().strip().lstrip("\ufeff")
    return dict(field.partition(":")[::2] for field in first.split(config.get("field_separator")))


def _check_file(config, suffix, columns, who, alternative):
    """The header of ``<dataset>.<suffix>``, refused when the file or one of ``columns`` is missing."""
    path = os.path.join(config.get("data_path"), f"{config.get('dataset')}.{suffix}")
    if not os.path.isfile(path):
        raise ConfigError(f"{who} from '{path}', which does not exist; add it with the columns "
                          f"{', '.join(columns)} (docs/backbones.md), {alternative}")
    header = _header(path, config)
    for column in columns:
        if column not in header:
            found = ", ".join(f"{name}:{kind}" for name, kind in header.items())
            raise ConfigError(f"'{path}' has no column '{column}' (columns found: {found}), and {who}; add it, "
                              f"{alternative}")
    return header


def _check_width(path, config, header, value, width):
    """The first vector of ``value`` in ``path`` has ``config[width]`` numbers (RecBole copies
    them into an embedding of that width and fails with a shape error otherwise)."""
    names = list(header)
    with open(path, encoding=config.get("encoding") or "utf-8", errors="replace") as handle:
        handle.readline()
        row = handle.readline().rstrip("\r\n").split(config.get("field_separator"))
    if len(row) != len(names):
        return  # an empty or malformed file: the atomic-file reader names the line
    numbers, size = len(row[names.index(value)].split(config.get("seq_separator"))), config.get(width)
    if numbers != size:
        raise ConfigError(f"'{path}': the {value} vectors have {numbers} numbers but '{config.get('model')}' needs "
                          f"{width} = {size}; set {width}: {numbers} or write vectors of {size} numbers")
