"""The trained-LLM cache: reuse on the same config and data, never across them, retrain when corrupt."""

import os

import pytest

import recbole_lsc.cloud.trainer as llm_trainer_module
from recbole_lsc.cli import main
from recbole_lsc.data.loading import create_dataset
from recbole_lsc.protocol import DeviceCloudProtocol
from recbole_lsc.cloud.store import entry_path, llm_key
from recbole_lsc.cloud.backbones import backbone_fingerprint
from recbole_lsc.quick_start import build_config, run_recbole_lsc
from tests.conftest import write_tiny_ml100k

TINY_LLM = {"llm_hidden_size": 16, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 8, "llm_epochs": 1,
            "llm_batch_size": 64}
TINY_LSC = {**TINY_LLM, "candidate_num": 20, "coop_epochs": 1, "retrain_epochs": 1, "epochs": 1,
            "request_curve_ratios": [0.0, 1.0]}


@pytest.fixture
def fits(monkeypatch):
    calls = []
    original = llm_trainer_module.LLMRecTrainer.fit
    monkeypatch.setattr(llm_trainer_module.LLMRecTrainer, "fit", lambda self, **k: calls.append(1) or original(self, **k))
    return calls


def run(config, **extra):
    return run_recbole_lsc("LLMRec", "mltiny", config_dict={**config, **TINY_LLM, **extra})


def key_of(config_dict, model="LLMRec"):
    config = build_config(model, "mltiny", config_dict={**TINY_LLM, **config_dict})
    return llm_key(config, *data_of(config))


def data_of(config):
    dataset = create_dataset(config)
    return dataset, DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])


def test_second_run_reuses_the_trained_llm_and_gives_identical_rows(tiny_config, fits):
    first = run(tiny_config)
    second = run(tiny_config)
    assert len(fits) == 1
    assert second["llm"]["llm_training"]["cached"].endswith(".safetensors")
    assert [row["test"] for row in first["rows"]] == [row["test"] for row in second["rows"]]


def test_an_srm_run_on_a_cached_cloud_equals_one_that_trains_it(tiny_config, fits):
    """The cloud a GRU4Rec run loads (trained by a SASRec run) is the one it would have trained."""
    config = {**tiny_config, **TINY_LSC}
    run_recbole_lsc("LSC4Rec", "mltiny", config_dict={**config, "srm": "SASRec"})
    loaded = run_recbole_lsc("LSC4Rec", "mltiny", config_dict={**config, "srm": "GRU4Rec"})
    trained = run_recbole_lsc("LSC4Rec", "mltiny", config_dict={**config, "srm": "GRU4Rec", "trained_llm_cache": None})
    assert len(fits) == 2
    assert "cached" in loaded["runs"][0]["stages"]["llm"]
    assert [row["test"] for row in loaded["rows"]] == [row["test"] for row in trained["rows"]]


def test_a_different_llm_config_seed_or_data_gets_its_own_entry(tiny_config, tmp_path):
    keys = {key_of(tiny_config)}
    for change in ({"llm_hidden_size": 32}, {"seed": 8}, {"cloud_lag": 1}, {"llm_learning_rate": 0.001}):
        keys.add(key_of({**tiny_config, **change}))
    write_tiny_ml100k(str(tmp_path / "other"), n_users=50)  # same name and paths, other content
    keys.add(key_of({**tiny_config, "data_path": str(tmp_path / "other")}))
    assert len(keys) == 6
    # device-side keys and the model being run do not shape the cloud: an SRM sweep shares the entry
    assert key_of({**tiny_config, "hidden_size": 99}) == key_of(tiny_config)
    assert key_of({**tiny_config, "srm": "GRU4Rec"}, model="LSC4Rec") == key_of(tiny_config)


def test_a_backbone_folder_is_identified_by_its_content(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"a")
    before = backbone_fingerprint(str(folder))
    (folder / "model.safetensors").write_bytes(b"b")
    assert backbone_fingerprint(str(folder)) != before
    assert backbone_fingerprint("tiny") == "tiny"


def test_a_corrupt_entry_is_retrained_and_replaced(tiny_config, fits):
    run(tiny_config)
    config = build_config("LLMRec", "mltiny", config_dict={**tiny_config, **TINY_LLM})
    path = entry_path(config, llm_key(config, *data_of(config)))
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:  # flip bytes inside the tensor data
        handle.seek(size - 16)
        handle.write(b"\xff" * 8)
    out = run(tiny_config)
    assert len(fits) == 2 and "cached" not in out["llm"]["llm_training"]
    run(tiny_config)  # the rewritten entry is valid again
    assert len(fits) == 2


def test_the_cache_can_be_switched_off(tiny_config, fits):
    run(tiny_config, trained_llm_cache=None)
    run(tiny_config, trained_llm_cache=None)
    assert len(fits) == 2
    assert not os.path.exists("saved/llm_cache")


def test_the_cache_is_switched_off_on_the_command_line_with_a_tilde(tiny_config, fits):
    args = ["--model=LLMRec", "--dataset=mltiny", f"--data_path={tiny_config['data_path']}", "--trained_llm_cache=~",
            "--state=ERROR", "--show_progress=False", *[f"--{k}={v}" for k, v in TINY_LLM.items()]]
    assert main(args) == 0
    assert len(fits) == 1
    assert not os.path.exists("~") and not os.path.exists("saved/llm_cache")
