"""The trained-LLM cache: reuse on the same config, never across configs, retrain when corrupt."""

import os

import recbole_lsc.trainer.llmrec_trainer as llm_trainer_module
from recbole_lsc.llm_store import entry_path, llm_key
from recbole_lsc.quick_start import build_config, run_recbole_lsc

TINY_LLM = {"llm_hidden_size": 16, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 8, "llm_epochs": 1,
            "llm_batch_size": 64}


def count_fits(monkeypatch):
    fits = []
    original = llm_trainer_module.LLMRecTrainer.fit
    monkeypatch.setattr(llm_trainer_module.LLMRecTrainer, "fit", lambda self, **k: fits.append(1) or original(self, **k))
    return fits


def run(config, **extra):
    return run_recbole_lsc("LLMRec", "mltiny", config_dict={**config, **TINY_LLM, **extra})


def test_second_run_reuses_the_trained_llm_and_gives_identical_rows(tiny_config, monkeypatch):
    fits = count_fits(monkeypatch)
    first = run(tiny_config)
    second = run(tiny_config)
    assert len(fits) == 1
    assert second["llm"]["llm_training"]["cached"].endswith(".safetensors")
    assert [row["test"] for row in first["rows"]] == [row["test"] for row in second["rows"]]


def test_a_different_llm_config_or_seed_gets_its_own_entry(tiny_config):
    base = build_config("LLMRec", "mltiny", config_dict={**tiny_config, **TINY_LLM})
    keys = {llm_key(base)}
    for change in ({"llm_hidden_size": 32}, {"seed": 8}, {"cloud_lag": 1}, {"llm_lora": True}):
        keys.add(llm_key(build_config("LLMRec", "mltiny", config_dict={**tiny_config, **TINY_LLM, **change})))
    assert len(keys) == 5
    # device-side keys do not shape the cloud: an SRM sweep shares the entry
    srm_side = build_config("LLMRec", "mltiny", config_dict={**tiny_config, **TINY_LLM, "hidden_size": 99})
    assert llm_key(srm_side) == llm_key(base)


def test_a_corrupt_entry_is_retrained_and_replaced(tiny_config, monkeypatch):
    fits = count_fits(monkeypatch)
    run(tiny_config)
    path = entry_path(build_config("LLMRec", "mltiny", config_dict={**tiny_config, **TINY_LLM}))
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:  # flip bytes inside the tensor data
        handle.seek(size - 16)
        handle.write(b"\xff" * 8)
    out = run(tiny_config)
    assert len(fits) == 2 and "cached" not in out["llm"]["llm_training"]
    run(tiny_config)  # the rewritten entry is valid again
    assert len(fits) == 2


def test_the_cache_can_be_switched_off(tiny_config, monkeypatch):
    fits = count_fits(monkeypatch)
    run(tiny_config, trained_llm_cache=None)
    run(tiny_config, trained_llm_cache=None)
    assert len(fits) == 2
    assert not os.path.exists("saved/llm_cache")
