"""LSCConfig: plugin yaml, priority order, no sys.argv parsing, and one-line input errors."""

import os
import sys

import pytest
import recbole
import yaml

from recbole_lsc.config import PROPERTIES_DIR, LSCConfig
from recbole_lsc.errors import ConfigError, DatasetNotFoundError
from recbole_lsc.utils import get_model


def make(tiny_config, **kwargs):
    kwargs.setdefault("config_dict", dict(tiny_config))
    return LSCConfig(model=kwargs.pop("model", "SASRec"), dataset=kwargs.pop("dataset", "mltiny"), **kwargs)


def write_yaml(name, text):
    with open(name, "w", encoding="utf-8") as handle:
        handle.write(text)
    return os.path.abspath(name)


def _yaml(path, loader):
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)  # RecBole's loader (it reads 1e-12 as a number)


def test_plugin_model_yaml_wins_over_recboles_and_recboles_fills_the_rest(tiny_config):
    config = make(tiny_config)
    recbole_yaml = _yaml(os.path.join(os.path.dirname(recbole.__file__), "properties", "model", "SASRec.yaml"),
                         config.yaml_loader)
    plugin_yaml = _yaml(os.path.join(PROPERTIES_DIR, "model", "SASRec.yaml"), config.yaml_loader)
    differing = [key for key in plugin_yaml if key in recbole_yaml and plugin_yaml[key] != recbole_yaml[key]]
    assert differing  # otherwise this test proves nothing
    for key in differing:
        assert config[key] == plugin_yaml[key], key
    for key in set(recbole_yaml) - set(plugin_yaml) - set(tiny_config):
        assert config[key] == recbole_yaml[key], key


def test_every_plugin_yaml_key_is_documented_with_its_type():
    for root, _, names in os.walk(PROPERTIES_DIR):
        for name in names:
            with open(os.path.join(root, name), encoding="utf-8") as handle:
                lines = handle.read().splitlines()
            for line in lines:
                if line and not line.startswith((" ", "#")) and ":" in line:  # a top-level key
                    assert "# (" in line, f"{name}: '{line}' has no '# (type) meaning' comment"


def test_priority_cmd_over_dict_over_file_over_plugin(tiny_config):
    path = write_yaml("user.yaml", "epochs: 5\nlearning_rate: 0.01\nhidden_size: 48\nstopping_step: 7\n")
    config_dict = dict(tiny_config, epochs=4, stopping_step=8)

    config = LSCConfig("SASRec", "mltiny", config_file_list=[path], config_dict=config_dict, cmd_args=["--epochs=3"])
    assert config["epochs"] == 3  # cmd (3) > dict (4) > file (5) > plugin (200)
    assert config["stopping_step"] == 8  # dict (8) > file (7) > plugin (5)
    assert config["learning_rate"] == 0.01  # file (0.01) > plugin (0.002)
    assert config["hidden_size"] == 48  # file (48) > plugin model yaml (32)

    config = LSCConfig("SASRec", "mltiny", config_file_list=[path], config_dict=config_dict)
    assert config["epochs"] == 4

    without_epochs = {k: v for k, v in config_dict.items() if k != "epochs"}
    config = LSCConfig("SASRec", "mltiny", config_file_list=[path], config_dict=without_epochs)
    assert config["epochs"] == 5

    config = LSCConfig("SASRec", "mltiny", config_dict=without_epochs)
    assert config["epochs"] == 200  # properties/overall.yaml
    assert config["learning_rate"] == 0.002


def test_sys_argv_is_not_parsed(tiny_config, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x", "--epochs=99", "--hidden_size=8"])
    config = make(tiny_config)
    assert config["epochs"] != 99
    assert config["epochs"] == tiny_config["epochs"]
    assert config["hidden_size"] == 32
    assert sys.argv == ["x", "--epochs=99", "--hidden_size=8"]  # restored untouched
    # explicit cmd_args still work while sys.argv holds something else
    config = make(tiny_config, cmd_args=["--epochs=3"])
    assert config["epochs"] == 3
    assert sys.argv == ["x", "--epochs=99", "--hidden_size=8"]


def test_ce_sequential_model_samples_no_negatives(tiny_config):
    config = make(tiny_config)
    # RecBole stores "no negative sampling" (None) as a dict whose distribution is 'none'
    assert config["train_neg_sample_args"]["distribution"] == "none"
    assert config["train_neg_sample_args"]["candidate_num"] == 0
    # a user's explicit choice is kept (BPR with sampled negatives)
    bpr = dict(tiny_config, loss_type="BPR", train_neg_sample_args={"distribution": "uniform", "sample_num": 1})
    config = make(tiny_config, config_dict=bpr)
    assert config["train_neg_sample_args"]["distribution"] == "uniform"
    assert config["train_neg_sample_args"]["sample_num"] == 1


def test_unknown_model_name(tiny_config):
    with pytest.raises(ConfigError) as info:
        make(tiny_config, model="NoSuchModel")
    message = str(info.value)
    assert "unknown model" in message and "NoSuchModel" in message
    assert "SASRec" in message  # lists the known sequential models


def test_wrong_case_model_name():
    with pytest.raises(ConfigError, match="unknown model 'sasrec'"):
        get_model("sasrec")  # module sasrec exists, class 'sasrec' does not


def test_missing_dataset(tiny_config, tiny_data):
    with pytest.raises(DatasetNotFoundError) as info:
        make(tiny_config, dataset="nosuchdata")
    message = str(info.value)
    assert "nosuchdata" in message and "not found" in message
    assert os.path.join(tiny_data, "nosuchdata", "nosuchdata.inter") in message


def test_malformed_yaml(tiny_config):
    path = write_yaml("bad.yaml", "learning_rate: 0.01\nepochs: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        make(tiny_config, config_file_list=[path])
    message = str(info.value)
    assert "malformed yaml" in message
    assert "line " in message
    assert any(f"line {n}" in message for n in (2, 3))  # the open list on line 2 ends at line 3


@pytest.mark.parametrize("text", ["- epochs\n- 3\n", "just a sentence\n", "42\n"], ids=["list", "string", "number"])
def test_config_file_not_a_mapping(tiny_config, text):
    """A yaml file that parses but is not 'key: value' lines is the user's error, told in one line."""
    path = write_yaml("notmap.yaml", text)
    with pytest.raises(ConfigError, match="yaml mapping"):
        make(tiny_config, config_file_list=[path])


def test_comment_only_config_file(tiny_config):
    """A yaml file holding only comments is an empty config (or, at worst, a ConfigError), never a crash."""
    path = write_yaml("empty.yaml", "# nothing set yet\n")
    try:
        config = make(tiny_config, config_file_list=[path])
    except ConfigError:
        return
    assert config["epochs"] == tiny_config["epochs"]


def test_missing_config_file(tiny_config):
    with pytest.raises(ConfigError) as info:
        make(tiny_config, config_file_list=["does_not_exist.yaml"])
    assert "does_not_exist.yaml" in str(info.value) and "does not exist" in str(info.value)


def test_wrong_type_values(tiny_config):
    with pytest.raises(ConfigError) as info:
        make(tiny_config, cmd_args=["--epochs=abc"])
    assert "epochs" in str(info.value) and "integer" in str(info.value) and "abc" in str(info.value)

    with pytest.raises(ConfigError) as info:
        make(tiny_config, config_dict=dict(tiny_config, learning_rate="fast"))
    assert "learning_rate" in str(info.value) and "number" in str(info.value) and "fast" in str(info.value)

    with pytest.raises(ConfigError, match="epochs"):
        make(tiny_config, config_dict=dict(tiny_config, epochs=True))  # bool is not an int here

    with pytest.raises(ConfigError, match="epochs"):
        make(tiny_config, config_dict=dict(tiny_config, epochs=0))

    with pytest.raises(ConfigError) as info:
        make(tiny_config, cmd_args=["--retrain=yes"])  # a string is not a switch (it would read as true)
    assert "'retrain' must be true or false" in str(info.value) and "yes" in str(info.value)
    assert make(tiny_config, cmd_args=["--coop_train=False"])["coop_train"] is False


@pytest.mark.parametrize("override, message", [
    (["--llm_learning_rate=fast"], "'llm_learning_rate' must be a number"),
    (["--llm_learning_rate=0"], "'llm_learning_rate' must be a number in"),
    (["--llm_heads=0"], "'llm_heads' must be >= 1"),
    (["--llm_stopping_step=-1"], "'llm_stopping_step' must be >= 0"),
    (["--llm_dropout=1.5"], "'llm_dropout' must be a number in [0, 1]"),
    (["--llm_hidden_size=30", "--llm_heads=4"], "llm_hidden_size (30) must be a multiple of llm_heads (4)"),
    (["--llm_lora=True"], "llm_backbone 'tiny' is trained from scratch"),
])
def test_bad_cloud_llm_keys_are_refused_up_front(tiny_config, override, message):
    with pytest.raises(ConfigError) as info:
        make(tiny_config, model="LLMRec", cmd_args=override)
    assert message in str(info.value)


@pytest.mark.parametrize("value", ["-1", "some", "True"])
def test_retrain_replay_takes_a_ratio_or_all(tiny_config, value):
    with pytest.raises(ConfigError) as info:
        make(tiny_config, model="LSC4Rec", cmd_args=[f"--retrain_replay={value}"])
    assert "'retrain_replay' must be a number >= 0 or 'all'" in str(info.value)
    assert make(tiny_config, model="LSC4Rec", cmd_args=["--retrain_replay=all"])["retrain_replay"] == "all"
    assert make(tiny_config, model="LSC4Rec", cmd_args=["--retrain_replay=1.5"])["retrain_replay"] == 1.5


def test_a_retired_key_is_refused_with_what_replaced_it(tiny_config):
    with pytest.raises(ConfigError) as info:
        make(tiny_config, model="LSC4Rec", cmd_args=["--retrain_history_negatives=True"])
    message = str(info.value)
    assert "'retrain_history_negatives' is no longer read" in message and "every item the device holds" in message


def test_negative_cloud_lag(tiny_config):
    with pytest.raises(ConfigError) as info:
        make(tiny_config, config_dict=dict(tiny_config, cloud_lag=-1))
    assert "cloud_lag" in str(info.value) and ">= 0" in str(info.value)
    with pytest.raises(ConfigError, match="cloud_lag"):
        make(tiny_config, cmd_args=["--cloud_lag=-2"])
    assert make(tiny_config, cmd_args=["--cloud_lag=0"])["cloud_lag"] == 0


def test_eval_step_zero_means_no_validation_as_in_recbole(tiny_config):
    assert make(tiny_config, cmd_args=["--eval_step=0"])["eval_step"] == 0
    with pytest.raises(ConfigError, match="eval_step"):
        make(tiny_config, cmd_args=["--eval_step=-1"])


@pytest.mark.parametrize("override, message", [
    (["--retrain_scope=cloud"], "'retrain_scope' must be one or more of device, fleet"),
    (["--retrain_scope=['device', 'device']"], "'retrain_scope' must be one or more of device, fleet"),
    (["--stage_selection=sometimes"], "'stage_selection' must be one of validated, always"),
    (["--coop_learning_rate=fast"], "'coop_learning_rate' must be a number"),
    (["--retrain_learning_rate=0"], "'retrain_learning_rate' must be a number in"),
])
def test_bad_retraining_keys_are_refused_before_any_data_is_read(tiny_config, override, message):
    with pytest.raises(ConfigError) as info:
        make(tiny_config, model="LSC4Rec", cmd_args=override)
    assert message in str(info.value)


def test_retrain_scope_takes_one_setting_or_a_list(tiny_config):
    assert make(tiny_config, model="LSC4Rec", cmd_args=["--retrain_scope=fleet"])["retrain_scope"] == ["fleet"]
    both = make(tiny_config, model="LSC4Rec", cmd_args=["--retrain_scope=['fleet', 'device']"])
    assert both["retrain_scope"] == ["fleet", "device"]
    assert make(tiny_config, model="LSC4Rec")["retrain_scope"] == ["device"]  # the paper's deployment
