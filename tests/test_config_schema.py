"""The one config schema: every checked key refuses a wrong type and a wrong value in one line
before any data is read; the yaml comments agree with it; docs/configuration.md is generated."""

import pytest

from recbole_lsc.config import LSCConfig
from recbole_lsc.config_schema import PAGE, SCHEMA, configuration_page, yaml_documentation
from recbole_lsc.errors import ConfigError

WRONG_TYPE = {"int": "abc", "float": "abc", "str": 5, "bool": "yes", "settings": 5, "shares": "abc"}
# the first word of a yaml '# (type)' comment, and the schema kinds it names
YAML_TYPES = {"int": ("int",), "float": ("float",), "str": ("str",), "bool": ("bool",), "list": ("settings", "shares")}


def wrong_values(rule):
    """Values of the right type that ``rule`` refuses (none for a plain string or switch)."""
    if rule.kind == "settings":
        return [["no-such-setting"]]
    if rule.kind == "shares":
        return [[0.5, 2.0]]
    if rule.choices:
        return ["no-such-choice"]
    outside = [rule.low - 1] if rule.low is not None else []
    return outside + ([rule.high + 1] if rule.high is not None else [])


@pytest.mark.parametrize("key", list(SCHEMA))
def test_every_schema_key_refuses_a_wrong_type_and_a_wrong_value_before_any_data_is_read(tiny_config, key,
                                                                                          monkeypatch):
    def no_data(_):
        raise AssertionError("the dataset folder was read before the values were checked")

    monkeypatch.setattr(LSCConfig, "_check_dataset_present", no_data)
    rule = SCHEMA[key]
    for value in (WRONG_TYPE[rule.kind], *wrong_values(rule)):
        with pytest.raises(ConfigError) as info:
            LSCConfig("LSC4Rec", "mltiny", config_dict={**tiny_config, key: value})
        message = str(info.value)
        assert f"config key '{key}' must be" in message and repr(value) in message and "\n" not in message


def test_the_yaml_comments_name_the_schema_types():
    for doc in yaml_documentation():
        if doc.key in SCHEMA:
            first_word = doc.type.split()[0]
            assert SCHEMA[doc.key].kind in YAML_TYPES[first_word], f"{doc.file}: {doc.key} is ({doc.type})"


def test_the_committed_configuration_page_is_the_generated_one():
    with open(PAGE, encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == configuration_page(), "regenerate it: python -m recbole_lsc.config_schema"
