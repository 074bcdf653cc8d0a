"""A finished LSC4Rec run folder is self-contained: copied alone to an empty directory, with no
trained-model caches anywhere, ``load_run`` rebuilds its cloud and devices and ``recommend``
shows exactly what the run's simulation scored."""

import os
import shutil

import numpy as np
import pytest
import torch

from recbole_lsc.cli import main
from recbole_lsc.deployment.recommend import recommend
from recbole_lsc.deployment.turns import replay_turns
from recbole_lsc.evaluation.metrics import metric_values
from recbole_lsc.protocol import DeviceCloudProtocol
from recbole_lsc.quick_start import load_run, run_recbole_lsc
from tests.conftest import write_tiny_ml100k
from tests.test_lsc4rec import TINY


@pytest.fixture(scope="module")
def copied_run(tmp_path_factory):
    """A tiny LSC4Rec run trained in one directory, its run folder copied alone to another, and
    every cache of the training directory deleted: ``(run folder copy, data path)``."""
    work = tmp_path_factory.mktemp("train")
    data = write_tiny_ml100k(str(work / "data"), n_users=60)
    config = {"data_path": os.path.dirname(data), "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
              "train_batch_size": 256, "eval_batch_size": 256, "state": "ERROR", "show_progress": False,
              "use_gpu": False, "seed": 7, "checkpoint_dir": str(work / "saved"), "results_dir": str(work / "results"),
              "trained_llm_cache": str(work / "saved" / "llm_cache"), "run_name": "tiny", **TINY}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        run_recbole_lsc("LSC4Rec", "mltiny", config_dict=config)
    finally:
        os.chdir(cwd)
    copy = tmp_path_factory.mktemp("elsewhere") / "tiny"
    shutil.copytree(work / "results" / "tiny", copy)
    shutil.rmtree(work / "saved")  # llm_cache, srm_cache, checkpoints: nothing but the folder is left
    return str(copy), os.path.dirname(data)


def test_reloaded_run_shows_what_its_simulation_scored(copied_run):
    folder, _ = copied_run
    assert not os.path.exists("saved")
    assert {"run.json", "item_tokens.json", "cloud", "device", "results.json"} <= set(os.listdir(folder))
    config, dataset, cloud, devices = run = load_run(folder)
    assert set(devices) == {"candidates", "full"}
    turns = replay_turns(DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"]))
    tokens = [str(dataset.field2id_token[dataset.uid_field][turn.user]) for turn in turns]
    items = dataset.field2id_token[dataset.iid_field]
    hits = 0
    for setting, (_, bundle) in devices.items():
        answers = recommend(run, tokens, k=10 ** 6, setting=setting)
        assert [a["user"] for a in answers] == tokens
        ranks = []
        for turn, result in zip(turns, answers):
            shown = [item["item"] for item in result["items"]]
            target = str(items[turn.target])
            ranks.append(shown.index(target) if target in shown else len(shown))
            scores = [item["score"] for item in result["items"]]
            assert scores == sorted(scores, reverse=True)
        per_user = metric_values(torch.tensor(ranks), config)
        assert bundle.simulation["users"] == [turn.user for turn in turns]
        np.testing.assert_array_equal(per_user, np.asarray(bundle.simulation["test"]))
        hits += int((per_user > 0).sum())
        sources = {item["source"] for result in answers for item in result["items"]}
        # the full catalogue adds the device's own top-C to the cloud's list; candidates only re-ranks it
        assert sources == ({"cloud", "device"} if setting == "full" else {"cloud"})
    assert hits > 0  # some targets are in the shown top: the comparison is not of zeros alone


def test_recommend_cli_answers_known_users_and_a_given_history(copied_run, capsys):
    folder, _ = copied_run
    assert main(["recommend", f"--run={folder}", "--user=1,2", "--k=5"]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split("\t") == ["user", "rank", "item", "source", "score"]
    assert [row.split("\t")[:2] for row in rows] == [[user, str(rank)] for user in "12" for rank in range(1, 6)]
    assert {row.split("\t")[3] for row in rows} <= {"cloud", "device"}
    run = load_run(folder)
    expected = recommend(run, ["1"], k=5)[0]["items"]
    assert [row.split("\t")[2] for row in rows[:5]] == [item["item"] for item in expected]

    assert main(["recommend", f"--run={folder}", "--history=50,172,181", "--k=3", "--setting=full"]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert [row.split("\t")[0] for row in rows] == ["history"] * 3
    history = recommend(run, history=["50", "172", "181"], k=3, setting="full")[0]["items"]
    assert [row.split("\t")[2] for row in rows] == [item["item"] for item in history]


@pytest.mark.parametrize("flags, message", [
    (["--user=no-such-user"], "unknown user 'no-such-user'"),
    (["--history=50,no-such-item"], "unknown item(s) no-such-item"),
    (["--history="], "empty history"),
    (["--user=1", "--k=0"], "k must be at least 1"),
    (["--user=1", "--setting=nowhere"], "no device setting 'nowhere'"),
    (["--user=1", "--dataset=ml-100k"], "is a run on dataset 'mltiny', not 'ml-100k'"),
    (["--user=1", "--bogus=1"], "unrecognized arguments"),
])
def test_recommend_refuses_bad_input_in_one_line(copied_run, capsys, flags, message):
    folder, _ = copied_run
    assert main(["recommend", f"--run={folder}", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_recommend_refuses_a_folder_that_is_no_run_and_another_item_table(copied_run, tmp_path, capsys):
    folder, _ = copied_run
    assert main(["recommend", f"--run={tmp_path}", "--user=1"]) == 2
    assert "is not a loadable LSC4Rec run folder" in capsys.readouterr().err
    other = write_tiny_ml100k(str(tmp_path / "other"), n_users=5)  # same name, another item table
    assert main(["recommend", f"--run={folder}", "--user=1", f"--data_path={os.path.dirname(other)}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained on another item table" in err[0]
