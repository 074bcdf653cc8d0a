"""benchmarks/convergence.py: the per-stage table of a finished run's results.json."""

import json

import pytest

from conftest import load_benchmark


@pytest.fixture
def convergence(monkeypatch):
    return load_benchmark(monkeypatch, "convergence")


PAYLOAD = {
    "dataset": "toy", "config": {"valid_metric": "NDCG@10"},
    "results": [{"name": "SASRec", "role": "srm", "test": {"ndcg@10": 0.1}}],
    "runs": [{"stages": {
        "llm": {"seconds": 100.0, "epochs_trained": 10, "best_epoch": 5, "train_seconds_per_epoch": 9.0,
                "valid_seconds_per_pass": 1.0, "best_valid": 0.2},
        "srm": {"seconds": 40.0, "epochs_trained": 8, "best_epoch": 3, "trainer": "recbole", "best_valid": 0.1},
        "cooperative": {"kept": False, "epochs": 2, "best_epoch": 1, "valid_after": 0.05, "seconds": 3.0},
    }, "wall_seconds": {"data": 2.0, "llm": 100.0, "srm and device_srm": 40.0}}],
}


def test_stage_rows_read_every_stage(convergence, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(PAYLOAD))
    result = convergence.from_results(str(path))
    rows = {row["stage"]: row for row in result["stages"]}
    assert rows["llm"]["train_seconds_per_epoch"] == 9.0 and rows["llm"]["best_epoch"] == 5
    # RecBole's trainer logs no per-epoch seconds: wall seconds over epochs
    assert rows["srm"]["train_seconds_per_epoch"] == 5.0 and rows["srm"]["trainer"] == "recbole"
    assert rows["cooperative"]["trainer"] == "fine-tune (undone)" and rows["cooperative"]["epochs_trained"] == 2
    assert result["test"] == {"SASRec": 0.1}


def test_table_puts_runs_side_by_side(convergence, tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(PAYLOAD))
    outputs = []
    for name in ("before", "after"):
        out = tmp_path / f"{name}.json"
        out.write_text(json.dumps(convergence.from_results(str(path))))
        outputs.append(str(out))
    assert convergence.main(["--table", *outputs]) == 0
    text = capsys.readouterr().out
    assert "before.json: epochs (best)" in text and "after.json: wall s" in text
    assert "| llm | " in text and "10 (5)" in text and "| whole job (wall s) |" in text and "| 142 |" in text
