"""results.json helpers and the command line: one-line errors, exit codes, an end-to-end run."""

import json
import os
import shlex
from collections import OrderedDict

import numpy as np
import pytest
import torch

from conftest import write_tiny_ml100k
from recbole_lsc.cli import main
from recbole_lsc.results import ROLES, curve_table, markdown_table, metric_dict, result_row, write_json_atomic


# ---------------------------------------------------------------- results.py
def test_metric_dict_lower_cases_and_floats():
    result = OrderedDict([("Hit@10", np.float32(0.5)), ("NDCG@10", torch.tensor(0.25)), ("MRR@10", 1)])
    out = metric_dict(result)
    assert out == {"hit@10": 0.5, "ndcg@10": 0.25, "mrr@10": 1.0}
    assert all(type(value) is float for value in out.values())
    assert list(out) == ["hit@10", "ndcg@10", "mrr@10"]  # RecBole's order is kept
    assert metric_dict({"hit@5": 0.12345678}) == {"hit@5": 0.123457}  # 6 decimals
    assert metric_dict(None) == {}
    json.dumps(out)  # plain JSON types


def test_result_row():
    row = result_row("SASRec", "srm", {"Hit@10": 0.5}, {"NDCG@10": np.float64(0.2)}, note="x")
    assert row == {"name": "SASRec", "role": "srm", "valid": {"hit@10": 0.5}, "test": {"ndcg@10": 0.2}, "note": "x"}
    for role in ROLES:
        assert result_row("m", role, {}, {})["role"] == role
    with pytest.raises(ValueError, match="unknown result role 'teacher'"):
        result_row("m", "teacher", {}, {})
    with pytest.raises(ValueError):
        result_row("m", "SRM", {}, {})  # case matters


def test_write_json_atomic(tmp_path):
    path = str(tmp_path / "deep" / "er" / "results.json")
    payload = {"dataset": "mltiny", "results": [{"name": "a", "test": {"hit@10": 0.5}}], "n": None}
    write_json_atomic(path, payload)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert text.endswith("\n")
    assert json.loads(text) == payload
    assert os.listdir(tmp_path / "deep" / "er") == ["results.json"]

    # a payload that cannot be written leaves the previous file whole and no temp file
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert os.listdir(tmp_path / "deep" / "er") == ["results.json"]
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == payload


def test_markdown_table_exact():
    rows = [
        {"name": "SASRec", "role": "srm", "valid": {}, "test": {"hit@10": 0.5, "ndcg@10": 0.25}},
        {"name": "LLM", "role": "llm_fresh", "valid": {}, "test": {"hit@10": 0.123456}},
    ]
    assert markdown_table(rows) == (
        "| name | role | hit@10 | ndcg@10 |\n"
        "|---|---|---|---|\n"
        "| SASRec | srm | 0.5000 | 0.2500 |\n"
        "| LLM | llm_fresh | 0.1235 | - |"
    )
    assert markdown_table(rows, metrics=["ndcg@10"]) == (
        "| name | role | ndcg@10 |\n|---|---|---|\n| SASRec | srm | 0.2500 |\n| LLM | llm_fresh | - |"
    )
    assert markdown_table([]) == "(no results)"


# ---------------------------------------------------------------- the command line
def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_unknown_model(capsys, tiny_data):
    code = main(["--model=NoSuchModel", "--dataset=mltiny", f"--data_path={tiny_data}"])
    assert code == 2
    line = one_error_line(capsys)
    assert "NoSuchModel" in line


def test_cli_missing_dataset(capsys, tiny_data):
    code = main(["--model=SASRec", "--dataset=nosuchdata", f"--data_path={tiny_data}"])
    assert code == 2
    line = one_error_line(capsys)
    assert "nosuchdata" in line and "not found" in line


def test_cli_malformed_yaml(capsys, tiny_data):
    with open("bad.yaml", "w", encoding="utf-8") as handle:
        handle.write("epochs: [1, 2\n")
    code = main(["--model=SASRec", "--dataset=mltiny", "--config_files=bad.yaml", f"--data_path={tiny_data}"])
    assert code == 2
    assert "malformed yaml" in one_error_line(capsys)


def test_cli_wrong_type(capsys, tiny_data):
    code = main(["--model=SASRec", "--dataset=mltiny", f"--data_path={tiny_data}", "--epochs=abc"])
    assert code == 2
    assert "epochs" in one_error_line(capsys)


def test_cli_unrecognised_positional(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--model=SASRec", "stray"])
    assert info.value.code == 2
    assert "stray" in capsys.readouterr().err


def test_cli_end_to_end(capsys, tmp_path):
    small = write_tiny_ml100k(str(tmp_path / "small"), n_users=12)  # one epoch = a few batches
    argv = [
        "--model=SASRec",
        "--dataset=mltiny",
        f"--data_path={os.path.dirname(small)}",
        "--load_col={'inter':['user_id','item_id','timestamp']}",
        "--epochs=1",
        "--hidden_size=16",
        "--inner_size=32",
        "--train_batch_size=256",
        "--eval_batch_size=256",
        "--use_gpu=False",
        "--state=ERROR",
        "--show_progress=False",
        "--results_dir=R",
        "--run_name=run1",
        "--checkpoint_dir=saved",
    ]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0
    path = os.path.join("R", "run1", "results.json")
    assert os.path.isfile(path)
    assert [name for name in os.listdir(os.path.join("R", "run1")) if name.startswith(".tmp-")] == []
    with open(path, encoding="utf-8") as handle:
        payload = json.load(handle)
    assert {"dataset", "model", "config", "versions", "results"} <= set(payload)
    assert payload["dataset"] == "mltiny" and payload["model"] == "SASRec"
    assert payload["config"]["epochs"] == 1 and payload["config"]["hidden_size"] == 16
    assert payload["config"]["MODEL_TYPE"] == "SEQUENTIAL"  # enums stored by name
    assert payload["versions"]["recbole"] == "1.2.1"
    # the command that gives the run its config, shell-quoted (a results page prints it)
    assert payload["command"].startswith("recbole-lsc --model=SASRec --dataset=mltiny ")
    assert shlex.split(payload["command"]) == ["recbole-lsc", *argv]

    rows = [row for row in payload["results"] if row["role"] == "srm"]
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == "SASRec"
    for split in ("valid", "test"):
        m = row[split]
        for key in ("hit@5", "hit@10", "hit@20", "ndcg@10"):
            assert 0.0 <= m[key] <= 1.0, (split, key)
        assert m["hit@5"] <= m["hit@10"] <= m["hit@20"]
        assert m["ndcg@10"] <= m["hit@10"]
        assert m["mrr@10"] <= m["ndcg@10"] + 1e-6  # MRR@K <= NDCG@K for one relevant item
    # the console table shows the same row
    assert "| SASRec | srm |" in out
    assert f"{row['test']['hit@5']:.4f}" in out
    # the checkpoint is a safetensors file, never a pickle
    saved = os.listdir("saved")
    assert saved and all(name.endswith((".safetensors", ".optim.pt")) for name in saved)


def test_curve_table_lays_policies_out_by_ratio():
    curve = [{"policy": p, "rho": r, "realized": r, "test": {"ndcg@10": v}}
             for p, base in (("random", 0.1), ("learned", 0.2)) for r, v in ((0.0, base), (0.5, base + 0.01))]
    lines = curve_table(curve, "ndcg@10").splitlines()
    assert lines[0] == "| policy (ndcg@10; realised ratio) | rho 0 | rho 0.5 |"
    assert lines[2] == "| random | 0.1000 (0.00) | 0.1100 (0.50) |"
    assert lines[3] == "| learned | 0.2000 (0.00) | 0.2100 (0.50) |"
