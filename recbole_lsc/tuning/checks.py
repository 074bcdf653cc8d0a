"""Every tuned key and value checked before the first trial trains anything.

RecBole ignores a key it does not know, so a misspelt parameter (or one another model reads,
``dropout_prob`` for SASRec) would tune nothing: each trial the same run. A value the config
refuses would fail only when its trial comes up, perhaps hours in. Here each line's key must be
one the run's config holds (RecBole's and the plugin's settings of this model and dataset; for
LSC4Rec also its device SRM's), must not also be fixed on the command line (the command line
wins over the trial's value), and each of its values (every choice, both ends of a range) must
pass the run's own config checks; the first failure is one line naming the params file's line.
"""

import difflib

from recbole_lsc.config import LSCConfig, srm_config_of
from recbole_lsc.errors import ConfigError, LSCError, first_line

# keys each trial sets itself (its run folder), and those that name the run, not a setting
RESERVED = ("model", "dataset", "config_files", "results_dir", "run_name")


def override_keys(overrides):
    return {arg[2:].partition("=")[0] for arg in overrides}


def run_keys(config):
    """The keys of the run's config (and of LSC4Rec's device SRM): what its code reads."""
    keys = set(config.final_config_dict)
    return keys | set(srm_config_of(config).final_config_dict) if config["model"] == "LSC4Rec" else keys


def check_key(param, keys, overrides):
    """Refuse a key the run does not read, one the tuner sets, or one the command line also fixes."""
    if param.name in RESERVED:
        raise ConfigError(f"{param.where}: '{param.name}' cannot be tuned (it names the run or its folder); "
                          "remove the line")
    if param.name not in keys:
        close = difflib.get_close_matches(param.name, sorted(keys), n=1, cutoff=0.8)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{param.where}: unknown config key '{param.name}' (this model's config does not hold "
                          f"it, so tuning it would change nothing); {hint}fix the key "
                          "(docs/configuration.md lists the plugin's keys)")
    if param.name in override_keys(overrides):
        raise ConfigError(f"{param.where}: '{param.name}' is tuned but also given as --{param.name}=... (which would "
                          "win over every trial's value); remove one of them")


def check_params(params, model, dataset, config_files, overrides):
    """The run's config without tuning, then each line's key and every value it can take."""
    config = LSCConfig(model, dataset, config_files, None, overrides)
    keys = run_keys(config)
    for param in params:
        check_key(param, keys, overrides)
        for value in param.extremes():
            try:
                LSCConfig(model, dataset, config_files, {param.name: value}, overrides)
            except LSCError as err:
                raise ConfigError(f"{param.where}: {param.name} = {value!r} is refused: {first_line(err)}") from None
    return config
