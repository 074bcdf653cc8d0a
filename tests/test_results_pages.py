"""Results pages (``recbole-lsc report``) and the README's headline tables: generated from
results.json files, labelled without mixing experiments, regenerated identically."""

import json
import os
import re
import shlex
import shutil

import pytest

from recbole_lsc.arguments import command_line
from recbole_lsc.cli import main
from recbole_lsc.errors import ConfigError
from recbole_lsc.leaderboard.headline import BLOCK, headline_table, refreshed
from recbole_lsc.leaderboard.report import write_report
from recbole_lsc.leaderboard.run_files import label_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"valid_metric": "NDCG@10", "metrics": ["Hit", "NDCG"], "topk": [10], "srm": "SASRec", "hidden_size": 32}


def payload(seed, srm_ndcg, lsc_ndcg, **config):
    rows = [{"name": "SASRec", "role": "srm", "valid": {}, "test": {"hit@10": 0.2, "ndcg@10": srm_ndcg}},
            {"name": "LSC4Rec (full)", "role": "lsc4rec", "device_catalogue": "full", "retrain_scope": "device",
             "valid": {}, "test": {"hit@10": 0.3, "ndcg@10": lsc_ndcg}}]
    stages = {"srm": {"epochs_trained": 9, "best_epoch": 4, "seconds": 1.5},
              "cooperative": {"kept": False, "rule": "paired test at 0.05", "p": 0.5, "epochs": 2, "best_epoch": 0,
                              "valid_before": 0.1, "valid_after": 0.09}}
    return {"dataset": "toy", "model": "LSC4Rec", "config": {**CONFIG, **config, "seed": seed}, "versions": {},
            "results": rows, "runs": [{"stages": stages, "wall_seconds": {"data": 1.0, "llm": 2.5}}],
            "command": f"recbole-lsc --model=LSC4Rec --dataset=toy --seed={seed}"}


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
    return path


def test_command_line_round_trips_through_the_shell():
    command = command_line("LSC4Rec", "ml-1m", ["a b.yaml", "c.yaml"], {"alpha": [0.1, 0.5]}, ["--epochs=3"])
    assert shlex.split(command) == ["recbole-lsc", "--model=LSC4Rec", "--dataset=ml-1m",
                                    "--config_files=a b.yaml c.yaml", "--alpha=[0.1, 0.5]", "--epochs=3"]


def test_runs_are_labelled_from_a_sweeps_layout(tmp_path):
    plain = write(str(tmp_path / "runs/toy/SASRec-abc/seed1/results.json"), payload(1, 0.1, 0.2))
    variant = write(str(tmp_path / "runs/toy/big/SASRec-def/seed1/results.json"), payload(1, 0.1, 0.2, hidden_size=64))
    runs = {run["path"]: run for run in label_runs([plain, variant])}
    assert runs[plain]["variant"] == "" and runs[variant]["variant"] == "big"
    assert runs[plain]["srm"] == "SASRec" and runs[plain]["seed"] == 1


def test_different_configs_outside_a_sweep_are_kept_apart(tmp_path):
    small = write(str(tmp_path / "a/results.json"), payload(1, 0.1, 0.2))
    large = write(str(tmp_path / "b/results.json"), payload(1, 0.1, 0.2, hidden_size=64))
    runs = label_runs([small, large])
    assert {run["variant"] for run in runs} == {run["config_id"] for run in runs}
    assert len({run["variant"] for run in runs}) == 2


def test_the_same_seed_twice_is_refused(tmp_path):
    first = write(str(tmp_path / "a/results.json"), payload(1, 0.1, 0.2))
    second = write(str(tmp_path / "b/results.json"), payload(1, 0.3, 0.4))
    with pytest.raises(ConfigError, match="are the same run .*seed 1"):
        label_runs([first, second])


def test_page_holds_hand_computed_means_stages_and_commands(tmp_path):
    for seed, srm, lsc in ((1, 0.1, 0.2), (2, 0.2, 0.4)):
        write(str(tmp_path / f"runs/seed{seed}/results.json"), payload(seed, srm, lsc))
    path = write_report([str(tmp_path / "runs")], str(tmp_path / "page"), title="Toy")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# Toy\n")
    # SRM: mean 0.15, sample std sqrt(((0.05)^2 * 2) / 1) = 0.0707; LSC4Rec: 0.3 ± 0.1414
    assert re.search(r"\| 1 \| LSC4Rec \(full\) \| SASRec \| 2 \| 0\.3000 ± 0\.0000 \| 0\.3000 ± 0\.1414 \|", text)
    assert "| SRM (full catalogue) | SASRec | 2 | 0.2000 ± 0.0000 | 0.1500 ± 0.0707 |" in text
    assert "| 2 | cooperative | 2 | 0 | no | paired test at 0.05 | 0.5 | 0.1 | 0.09 | - |" in text
    assert "| 1 | srm | 9 | 4 | - | - | - | - | - | 1.5 |" in text
    assert "recbole-lsc --model=LSC4Rec --dataset=toy --seed=2" in text
    assert "[`../runs/seed1/results.json`](../runs/seed1/results.json)" in text and "wall 3.5 s" in text
    assert "![bars_toy.png](bars_toy.png)" in text and os.path.isfile(tmp_path / "page" / "bars_toy.png")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: str(tmp / "missing"), "does not exist"),
    (lambda tmp: (os.makedirs(tmp / "empty"), str(tmp / "empty"))[1], "no results.json under"),
    (lambda tmp: write(str(tmp / "x/results.json"), {"rows": []}), "is not a recbole-lsc results.json"),
])
def test_report_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys, make, message):
    assert main(["report", make(tmp_path), "--out", str(tmp_path / "page")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "page")


def committed_pages():
    root = os.path.join(REPO, "docs", "results")
    return sorted(os.path.join(root, name) for name in os.listdir(root)
                  if os.path.isfile(os.path.join(root, name, "index.md")))


@pytest.mark.parametrize("page", committed_pages(), ids=os.path.basename)
def test_committed_results_pages_are_regenerated_identically(page, tmp_path, monkeypatch):
    """The page's own header names its command; run it on a copy of the results files it reads
    (its own folder's, and those of any other folder the command names: a comparison page)."""
    text = open(os.path.join(page, "index.md"), encoding="utf-8").read()
    args = shlex.split(re.search(r"Generated by `recbole-lsc (report [^`]+)`", text).group(1))
    relative = os.path.relpath(page, REPO)
    sources = {page, *(os.path.join(REPO, path) for path in args[1:args.index("--out")])}
    for source in sources:
        for root, _, names in os.walk(source):
            for name in (n for n in names if n == "results.json"):
                target = tmp_path / os.path.relpath(os.path.join(root, name), REPO)
                os.makedirs(target.parent, exist_ok=True)
                shutil.copy(os.path.join(root, name), target)
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    assert open(os.path.join(relative, "index.md"), encoding="utf-8").read() == text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert figures and all(os.path.isfile(os.path.join(page, figure)) for figure in figures)


def test_readme_headline_tables_are_up_to_date():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert BLOCK.search(readme), "the README shows a generated headline table"
    assert refreshed(readme, REPO) == readme, "run: python -m recbole_lsc.leaderboard.headline README.md"


def test_headline_table_lists_lsc4rec_and_single_models_only(tmp_path):
    for seed in (1, 2):
        write(str(tmp_path / f"r/seed{seed}/results.json"), payload(seed, 0.1, 0.2))
    table, _, epochs = headline_table(str(tmp_path / "r")).partition("\n\n")
    assert table.splitlines()[2] == "| LSC4Rec (full) | SASRec | 0.2000 ± 0.0000 | - | - | - | - |"
    assert len(table.splitlines()) == 4
    assert epochs == "Epochs trained per seed, toy / SASRec: `srm` 9 (best 4), 9 (best 4).\n"
