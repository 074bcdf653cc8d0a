"""A finished LSC4Rec run folder is self-contained: copied alone to an empty directory, with no
trained-model caches anywhere, ``load_run`` rebuilds its cloud and devices and ``recommend``
shows exactly what the run's simulation scored."""

import json
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
def trained(tmp_path_factory):
    """A tiny LSC4Rec run trained in one directory, its run folder copied alone to another, and
    every cache of the training directory moved out of it (kept aside only to compare with the
    trained-LLM store path): ``{"copy", "data", "work", "caches"}``."""
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
    caches = tmp_path_factory.mktemp("kept") / "saved"
    shutil.move(work / "saved", caches)  # llm_cache, srm_cache, checkpoints: nothing but the folder is left
    return {"copy": str(copy), "data": os.path.dirname(data), "work": work, "caches": caches}


@pytest.fixture(scope="module")
def copied_run(trained):
    """``(run folder copy, data path)`` of the tiny run, with no trained-model cache where it was trained."""
    return trained["copy"], trained["data"]


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


def stable_figures(report):
    """A replay report less what depends on timing: its timings, and the size of the answers
    (which requests share a forward pass changes the scores' last bits, so their JSON length)."""
    stable = {key: value for key, value in report.items() if key not in ("seconds", "latency_ms", "throughput")}
    return {**stable, "bytes_per_call": {"up": report["bytes_per_call"]["up"]}}


def replay_report(run_name):
    with open(os.path.join("results", run_name, "results.json"), encoding="utf-8") as handle:
        return json.load(handle)["replay"]


def test_replay_of_a_copied_run_folder_equals_the_replay_through_the_store(trained, capsys):
    """``replay --run`` starts ``serve --run`` (no store: the run's trained_llm_cache is gone) and
    gives the figures of ``replay --replay_bundle`` against ``serve`` from the store."""
    folder = trained["copy"]
    with open(os.path.join(folder, "run.json"), encoding="utf-8") as handle:
        run = json.load(handle)
    given = {**run["config"], "trained_llm_cache": str(trained["caches"] / "llm_cache"), "run_name": "from-store",
             "results_dir": "results", "checkpoint_dir": "saved"}
    flags = [f"--{key}={value!r}" if isinstance(value, str) else f"--{key}={value}" for key, value in given.items()]
    bundle = os.path.join(folder, "device", run["settings"][0])
    assert main(["replay", "--model=LSC4Rec", "--dataset=mltiny", *flags, f"--replay_bundle={bundle}",
                 "--replay_clients=2"]) == 0
    assert main(["replay", f"--run={folder}", "--replay_clients=2", "--run_name=from-run", "--serve_max_queue=32"]) == 0
    from_store, from_run = replay_report("from-store"), replay_report("from-run")
    assert from_run["identical_to_simulation"] and from_run["failures"] == 0 and from_run["served"] > 0
    assert stable_figures(from_run) == stable_figures(from_store)
    assert "identical_to_simulation | True" in capsys.readouterr().out
    assert not os.path.exists(trained["work"] / "saved")  # nothing was written to (or read from) a cache


def test_replay_of_a_run_folder_against_a_given_service_url(trained):
    """``replay --run --replay_cloud_url``: the service (``serve --run``'s app, in this process)
    answers the copied folder's devices as the simulation did, for the setting asked for."""
    import httpx  # the serve extra, as the service needs

    from recbole_lsc.deployment.run_folder import run_config
    from recbole_lsc.deployment.serve import service_app
    from tests.test_deployment import LoopbackServer

    folder = trained["copy"]
    _, config = run_config(folder)
    app, version = service_app(config, run_dir=folder)
    with LoopbackServer(app) as server:
        assert httpx.get(f"{server.url}/health", timeout=10).json()["model_version"] == version
        assert main(["replay", f"--run={folder}", "--setting=full", f"--replay_cloud_url={server.url}",
                     "--replay_clients=1", "--run_name=given-url"]) == 0
    report = replay_report("given-url")
    assert report["identical_to_simulation"] and report["failures"] == 0


def test_serve_and_replay_refuse_a_bad_run_in_one_line(trained, tmp_path, capsys):
    folder = trained["copy"]
    other = tmp_path / "sasrec"
    other.mkdir()
    with open(os.path.join(folder, "run.json"), encoding="utf-8") as handle:
        run = json.load(handle)
    with open(other / "run.json", "w", encoding="utf-8") as handle:
        json.dump({**run, "model": "SASRec"}, handle)
    (tmp_path / "empty").mkdir()
    cases = [
        (["serve", f"--run={tmp_path / 'empty'}"], "is not a loadable LSC4Rec run folder"),
        (["replay", f"--run={other}"], "is a run of model 'SASRec', not LSC4Rec"),
        (["serve", f"--run={folder}", "--dataset=ml-100k"], "is a run on dataset 'mltiny', not 'ml-100k'"),
        (["replay", f"--run={folder}", "--model=SASRec"], "is a run on model 'LSC4Rec', not 'SASRec'"),
        (["serve", f"--run={folder}", "--epochs=3", "--serve_max_queue=8"], "not epochs"),
        (["replay", f"--run={folder}", f"--replay_bundle={folder}/device/full"], "not replay_bundle"),
        (["replay", f"--run={folder}", "--setting=nowhere"], "no device setting 'nowhere'"),
        (["serve", f"--run={folder}", f"--data_path={tmp_path / 'empty'}"], "dataset 'mltiny' not found"),
        (["serve", f"--run={folder}", "--config_files=a.yaml"], "not config_files"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
    assert not os.path.exists("results")  # nothing half-written
