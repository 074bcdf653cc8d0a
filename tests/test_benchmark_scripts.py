"""benchmarks/paired_rows.py: a paired test across results.json files, one-line errors."""

import importlib.util
import json
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "paired_rows.py")


@pytest.fixture(scope="module")
def paired_rows():
    spec = importlib.util.spec_from_file_location("paired_rows", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_results(path, **rows):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"per_user_test": {"metric": "ndcg@10", **rows}}, handle)
    return str(path)


def test_rows_of_two_runs_are_compared_user_by_user(paired_rows, tmp_path, capsys):
    ours = [0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0.7, 0.0]
    a = write_results(tmp_path / "a.json", llm_fresh=ours)
    b = write_results(tmp_path / "b.json", srm=[value - 0.1 for value in ours])
    assert paired_rows.main([f"{a}:llm_fresh", f"{b}:srm"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mean_diff"] == pytest.approx(0.1) and result["users"] == 8
    assert result["ours_mean"] == pytest.approx(0.35) and result["theirs_mean"] == pytest.approx(0.25)
    assert result["wilcoxon_p"] < 0.01  # 8 of 8 users better: 2 / 2**8 two-sided
    assert paired_rows.main([f"{a}:llm_fresh", f"{a}:llm_fresh"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["wilcoxon_p"] == 1.0


@pytest.mark.parametrize("sides, message", [
    (["{a}", "{a}:srm"], "give PATH:ROLE"),
    (["{a}:nope", "{a}:srm"], "no row 'nope' in per_user_test; it holds srm, llm_fresh"),
    (["{missing}:srm", "{a}:srm"], "cannot read it as a results.json"),
    (["{a}:srm", "{short}:srm"], "hold 3 and 2 test users"),
    (["{a}:srm", "{hit}:srm"], "different metrics (ndcg@10 vs hit@10)"),
])
def test_bad_sides_are_one_error_line(paired_rows, tmp_path, capsys, sides, message):
    paths = {"a": write_results(tmp_path / "a.json", srm=[0.1, 0.2, 0.3], llm_fresh=[0.1, 0.1, 0.1]),
             "short": write_results(tmp_path / "short.json", srm=[0.1, 0.2]),
             "missing": str(tmp_path / "missing.json")}
    with open(tmp_path / "hit.json", "w", encoding="utf-8") as handle:
        json.dump({"per_user_test": {"metric": "hit@10", "srm": [0, 1, 1]}}, handle)
    paths["hit"] = str(tmp_path / "hit.json")
    assert paired_rows.main([side.format(**paths) for side in sides]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
