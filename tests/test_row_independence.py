"""A row means its label whatever else the run built: the ``srm`` row is the plain RecBole run
(``srm_trainer: recbole``),
and no row depends on which other settings were evaluated, or in which order."""

import pytest

from recbole_lsc.quick_start import run_recbole_lsc
from tests.conftest import write_tiny_ml100k
from tests.test_lsc4rec import TINY


@pytest.fixture
def small_config(tiny_config, tmp_path):
    write_tiny_ml100k(str(tmp_path / "small"), n_users=30)
    return {**tiny_config, "data_path": str(tmp_path / "small")}


def rows_by_name(out):
    return {row["name"]: (row["valid"], row["test"], row.get("realized")) for row in out["rows"]}


def test_the_srm_row_is_the_plain_recbole_run_whatever_the_cloud(small_config):
    quick = {**TINY, "coop_train": False, "retrain": False, "device_catalogue": "candidates",
             "request_curve_ratios": [0.0, 1.0], "srm_trainer": "recbole"}
    small_cloud = run_recbole_lsc("LSC4Rec", "mltiny", config_dict={**small_config, **quick})
    other_cloud = run_recbole_lsc("LSC4Rec", "mltiny", config_dict={**small_config, **quick, "llm_hidden_size": 8,
                                                                    "llm_dropout": 0.3})
    plain = run_recbole_lsc("SASRec", "mltiny", config_dict={**small_config, "epochs": TINY["epochs"]})
    srm = [out["rows"][0] for out in (small_cloud, other_cloud, plain)]
    assert all(row["role"] == "srm" and row["name"] == "SASRec" for row in srm)
    assert small_cloud["rows"][2]["test"] != other_cloud["rows"][2]["test"]  # two different clouds ...
    assert srm[0]["test"] == srm[1]["test"] == srm[2]["test"]  # ... and the same SRM, the plain run's
    assert srm[0]["valid"] == srm[1]["valid"] == srm[2]["valid"]


def test_every_row_is_the_same_whatever_settings_ran_beside_it(small_config):
    quick = {**TINY, "retrain_epochs": 2, "request_curve_ratios": [0.0, 0.5, 1.0]}
    everything = rows_by_name(run_recbole_lsc("LSC4Rec", "mltiny", config_dict={
        **small_config, **quick, "device_catalogue": ["candidates", "full"], "retrain_scope": ["device", "fleet"]}))
    for catalogue, scope in ((["full", "candidates"], ["fleet", "device"]), (["full"], ["device"]),
                             (["candidates"], ["fleet"])):
        subset = rows_by_name(run_recbole_lsc("LSC4Rec", "mltiny", config_dict={
            **small_config, **quick, "device_catalogue": catalogue, "retrain_scope": scope}))
        assert set(subset) < set(everything) or len(subset) == len(everything)
        for name, row in subset.items():
            assert row == everything[name], name


def test_every_trained_model_states_its_epochs_and_best_epoch(small_config):
    quick = {**TINY, "epochs": 3, "coop_train": False, "retrain": False, "device_catalogue": "candidates",
             "request_curve_ratios": [0.0, 1.0], "srm_trainer": "recbole"}
    out = run_recbole_lsc("LSC4Rec", "mltiny", config_dict={**small_config, **quick})
    stages = out["runs"][0]["stages"]
    assert {row["srm_trainer"] for row in out["rows"] if row["role"] not in ("llm_stale", "llm_fresh")} == {"recbole"}
    for model in ("llm", "srm", "device_srm"):
        assert stages[model]["epochs_trained"] >= 1 and 0 <= stages[model]["best_epoch"] < stages[model]["epochs_trained"]
    assert stages["srm"]["epochs_trained"] == 3  # no early stop within 3 epochs
    plain = run_recbole_lsc("SASRec", "mltiny", config_dict={**small_config, "epochs": 3})["rows"][0]
    assert plain["epochs_trained"] == 3 and plain["best_epoch"] == stages["srm"]["best_epoch"]
