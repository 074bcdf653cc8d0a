"""``recbole-lsc tune``: the params file read without eval, every error one line before any
training, a 4-trial grid over a tiny SASRec, its table and its best trial, and an LSC4Rec
search that trains its cloud once."""

import csv
import json
import os

import pytest
import yaml

import recbole_lsc.cloud.trainer as cloud_trainer
import recbole_lsc.tuning.objective as objective_module
import recbole_lsc.tuning.params_file as params_module
from conftest import write_tiny_ml100k
from recbole_lsc.cli import main
from recbole_lsc.errors import ConfigError
from recbole_lsc.quick_start import run_recbole_lsc
from recbole_lsc.results import result_row
from recbole_lsc.tuning.checks import check_params
from recbole_lsc.tuning.objective import scored_row
from recbole_lsc.tuning.params_file import grid, parse_line, read_params

SASREC = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 10, "epochs": 1}


def write(path, text):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(path)


@pytest.fixture
def config_file(tiny_config, tmp_path):
    """The tests' tiny config and a tiny SASRec as a yaml file (``--config_files``)."""
    return write(tmp_path / "tiny.yaml", yaml.safe_dump({**tiny_config, **SASREC}))


def tune(*argv):
    return main(["tune", *argv])


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


# ---------------------------------------------------------------- the params file
def test_every_type_of_line_is_read_with_literal_eval(tmp_path):
    path = write(tmp_path / "p.hyper", "# a comment\n\nlearning_rate choice [0.001, 0.01]\n"
                 "srm choice ['SASRec', 'GRU4Rec']\nhidden_size quniform 16,64,16\nfusion_alpha uniform 0.2, 0.8\n"
                 "weight_decay loguniform -9,-4\ndevice_catalogue choice [['candidates'], ['full']]\n")
    params = read_params(path)
    assert [(p.name, p.kind, p.values) for p in params] == [
        ("learning_rate", "choice", (0.001, 0.01)), ("srm", "choice", ("SASRec", "GRU4Rec")),
        ("hidden_size", "quniform", (16, 64, 16)), ("fusion_alpha", "uniform", (0.2, 0.8)),
        ("weight_decay", "loguniform", (-9, -4)), ("device_catalogue", "choice", (["candidates"], ["full"]))]
    assert params[0].where == f"{path}, line 3"
    assert params[2].integral() and params[2].extremes() == [16, 64]
    assert params[3].extremes() == [0.2, 0.8]


@pytest.mark.parametrize("line, message", [
    ("lr gaussian 0,1", "line 1: unknown type 'gaussian' for 'lr'; use one of choice, uniform, quniform, loguniform"),
    ("lr choice [__import__('os').system('echo hi')]", "is not a literal value; write the choices as a list"),
    ("lr choice 0.1", "line 1: choice needs a non-empty list, got '0.1'"),
    ("lr choice []", "choice needs a non-empty list"),
    ("lr uniform 0.1", "uniform needs 2 numbers low,high, got '0.1'"),
    ("lr quniform 1,2", "quniform needs 3 numbers low,high,q"),
    ("lr uniform 0.5,0.1", "uniform needs low < high"),
    ("lr choice", "is not 'name type values'"),
])
def test_a_bad_line_is_refused_naming_its_line(line, message):
    with pytest.raises(ConfigError) as info:
        parse_line(line, "p.hyper, line 1")
    assert message in str(info.value) and str(info.value).startswith("p.hyper, line 1: ")


def test_a_repeated_parameter_and_a_range_in_a_grid_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="line 2: 'lr' is already tuned on .*line 1"):
        read_params(write(tmp_path / "p", "lr choice [1]\nlr choice [2]\n"))
    with pytest.raises(ConfigError, match="line 2: --algo exhaustive enumerates choice lines only"):
        grid(read_params(write(tmp_path / "q", "a choice [1, 2]\nb uniform 0,1\n")))
    assert grid(read_params(write(tmp_path / "r", "a choice [1, 2]\nb choice [3, 4, 5]\n")))[:2] == [(0, 0), (0, 1)]


@pytest.mark.parametrize("text, message", [
    ("learning_rate choice [__import__('os').system('touch pwned')]",
     "line 1: '[__import__('os').system('touch pwned')]' is not a literal value"),
    ("learning_rate gaussian 0,1", "line 1: unknown type 'gaussian'"),
    ("hiden_size choice [16, 32]", "line 1: unknown config key 'hiden_size' (this model's config does not hold it, "
                                   "so tuning it would change nothing); did you mean 'hidden_size'?"),
    ("dropout_prob choice [0.1, 0.2]", "line 1: unknown config key 'dropout_prob'"),  # read by other models only
    ("\nlearning_rate choice [0.01, -1]", "line 2: learning_rate = -1 is refused: config key 'learning_rate' must be"),
    ("epochs choice [1, 2]", "line 1: 'epochs' is tuned but also given as --epochs=..."),
    ("run_name choice ['a']", "line 1: 'run_name' cannot be tuned"),
    ("lr uniform 0,1", "line 1: --algo exhaustive enumerates choice lines only"),
])
def test_the_command_refuses_a_bad_params_file_in_one_line_before_training(text, message, config_file, tmp_path,
                                                                          capsys, monkeypatch):
    monkeypatch.setattr(objective_module, "run_recbole_lsc", lambda *a, **k: pytest.fail("a trial ran too soon"))
    path = write(tmp_path / "p.hyper", text + "\n")
    code = tune("--model=SASRec", "--dataset=mltiny", f"--params_file={path}", f"--config_files={config_file}",
                "--epochs=1")
    err = error_line(capsys)
    assert code == 2 and message in err, err
    assert not os.path.exists("pwned") and not os.path.exists(tmp_path / "results" / "tune")


def test_a_missing_params_file_and_a_missing_hyperopt_are_one_line(config_file, capsys, monkeypatch):
    assert tune("--model=SASRec", "--dataset=mltiny", "--params_file=nope.hyper", f"--config_files={config_file}") == 2
    assert error_line(capsys) == ("error: params file 'nope.hyper' does not exist; check the path given to "
                                  "--params_file")
    monkeypatch.setattr(params_module, "hp", None)
    assert tune("--model=SASRec", "--dataset=mltiny", "--params_file=nope.hyper") == 2
    assert "pip install 'recbole-lsc[tune]'" in error_line(capsys)


def test_lsc4rec_tunes_its_own_keys_and_its_device_srm_keys(config_file, tmp_path):
    lines = "fusion_alpha choice [0.2, 'auto']\nn_layers choice [1, 2]\ncloud_lag choice [1, 2]\nretrain choice [True]\n"
    params = read_params(write(tmp_path / "ok.hyper", lines))
    assert check_params(params, "LSC4Rec", "mltiny", [config_file], [])["model"] == "LSC4Rec"
    with pytest.raises(ConfigError, match="line 1: fusion_alpha = 2 is refused: config key 'fusion_alpha' must be"):
        check_params(read_params(write(tmp_path / "bad.hyper", "fusion_alpha choice [2]\n")), "LSC4Rec", "mltiny",
                     [config_file], [])


def test_the_scored_row_is_the_models_own():
    rows = [result_row(name, role, {"ndcg@10": 0.1}, {}) for name, role in (
        ("SASRec", "srm"), ("LLMRec (stale)", "llm_stale"), ("LLMRec (fresh)", "llm_fresh"),
        ("LSC4Rec (candidates)", "lsc4rec"), ("LSC4Rec (candidates) w/o re-training", "ablation"),
        ("LSC4Rec (full)", "lsc4rec"))]
    config = {"model": "LSC4Rec", "llm_select_on": "stale"}
    assert scored_row(rows, config)["name"] == "LSC4Rec (candidates)"
    assert scored_row(rows, {**config, "model": "LLMRec"})["name"] == "LLMRec (stale)"
    assert scored_row(rows, {**config, "model": "SASRec"})["name"] == "SASRec"
    assert scored_row(rows, config, "LSC4Rec (full)")["name"] == "LSC4Rec (full)"
    with pytest.raises(ConfigError, match="--row='LSC4Rec' is not a row of this run; use one of 'SASRec', "):
        scored_row(rows, config, "LSC4Rec")


# ---------------------------------------------------------------- searches
def test_a_four_trial_grid_writes_the_table_and_its_best_trial_reproduces(config_file, tmp_path, capsys):
    path = write(tmp_path / "p.hyper", "learning_rate choice [0.001, 0.01]\nhidden_size choice [8, 16]\n")
    out = str(tmp_path / "tuned")
    assert tune("--model=SASRec", "--dataset=mltiny", f"--params_file={path}", f"--config_files={config_file}",
                f"--out={out}") == 0
    summary = json.load(open(os.path.join(out, "tune.json"), encoding="utf-8"))
    trials = summary["trials"]
    assert [t["params"] for t in trials] == [{"learning_rate": lr, "hidden_size": h}
                                             for lr in (0.001, 0.01) for h in (8, 16)]
    scores = [t["valid_score"] for t in trials]
    best = trials[scores.index(max(scores))]
    assert summary["best_trial"] == best["trial"] and summary["best_params"] == best["params"]
    assert summary["valid_metric"] == "ndcg@10" and all(t["row"] == "SASRec" for t in trials)
    for trial in trials:  # each trial is an ordinary run with its own results.json
        saved = json.load(open(trial["results"], encoding="utf-8"))
        assert saved["config"]["learning_rate"] == trial["params"]["learning_rate"]
        assert saved["results"][0]["valid"]["ndcg@10"] == trial["valid_score"]
    rows = list(csv.DictReader(open(os.path.join(out, "tune.csv"), encoding="utf-8")))
    assert [row["best"] for row in rows] == [str(t is best) for t in trials]
    assert "test ndcg@10" in rows[0] and "valid ndcg@10" in rows[0]
    table = open(os.path.join(out, "tune.md"), encoding="utf-8").read()
    assert table.count("**best**") == 1
    assert "| trial | learning_rate | hidden_size | row | valid ndcg@10 |" in capsys.readouterr().out  # printed too
    again = run_recbole_lsc("SASRec", "mltiny", [config_file], config_dict=dict(best["params"]))
    assert again["rows"][0]["valid"]["ndcg@10"] == best["valid_score"]
    assert again["rows"][0]["test"] == best["test"]


LSC_TINY = {
    "llm_hidden_size": 16, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 8, "llm_epochs": 1, "llm_batch_size": 64,
    "candidate_num": 20, "coop_epochs": 1, "retrain_epochs": 1, "request_curve_ratios": [0.0, 0.1, 1.0],
    "device_catalogue": ["candidates"],
}


def test_an_lsc4rec_search_over_fusion_alpha_trains_the_cloud_once(tiny_config, tmp_path, monkeypatch):
    write_tiny_ml100k(str(tmp_path / "small"), n_users=30)
    files = write(tmp_path / "lsc.yaml", yaml.safe_dump({**tiny_config, **SASREC, **LSC_TINY,
                                                         "data_path": str(tmp_path / "small")}))
    fits = []
    fit = cloud_trainer.LLMRecTrainer.fit
    monkeypatch.setattr(cloud_trainer.LLMRecTrainer, "fit", lambda self, **k: fits.append(1) or fit(self, **k))
    path = write(tmp_path / "p.hyper", "fusion_alpha choice [0.2, 0.8]\n")
    out = str(tmp_path / "tuned")
    assert tune("--model=LSC4Rec", "--dataset=mltiny", f"--params_file={path}", f"--config_files={files}",
                f"--out={out}") == 0
    summary = json.load(open(os.path.join(out, "tune.json"), encoding="utf-8"))
    assert [t["params"] for t in summary["trials"]] == [{"fusion_alpha": 0.2}, {"fusion_alpha": 0.8}]
    for number, trial in enumerate(summary["trials"]):  # the score is the final LSC4Rec row's validation value
        saved = json.load(open(trial["results"], encoding="utf-8"))
        stages = saved["runs"][0]["stages"]  # the second trial loads the cloud and the SRMs from the stores
        assert [("cached" in stages[name]) for name in ("llm", "srm")] == [number == 1] * 2
        row = next(row for row in saved["results"] if row["role"] == "lsc4rec")
        assert trial["row"] == row["name"] == "LSC4Rec (candidates)"
        assert trial["valid_score"] == row["valid"]["ndcg@10"] and trial["test"] == row["test"]
    assert len(fits) == 1  # the second trial loaded the first one's trained cloud from the store
