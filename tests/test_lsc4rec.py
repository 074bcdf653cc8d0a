"""LSC4Rec end to end on tiny data: rows, curves, stage switches, caching, validation-only fitting."""

import threading

import numpy as np
import pytest

import recbole_lsc.cloud.source as source_module
from recbole_lsc.device.learned import L2_GRID
from recbole_lsc.errors import ConfigError
from recbole_lsc.quick_start import run_recbole_lsc
from tests.conftest import write_tiny_ml100k

TINY = {
    "llm_hidden_size": 16, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 8, "llm_epochs": 1,
    "llm_batch_size": 64, "candidate_num": 20, "coop_epochs": 2, "retrain_epochs": 1, "epochs": 1,
    "request_curve_ratios": [0.0, 0.1, 0.5, 1.0],
}


@pytest.fixture
def small_config(tiny_config, tmp_path):
    """30 users: enough for every stage and policy, a few seconds per run."""
    write_tiny_ml100k(str(tmp_path / "small"), n_users=30)
    return {**tiny_config, "data_path": str(tmp_path / "small")}


def run(config, **extra):
    return run_recbole_lsc("LSC4Rec", "mltiny", config_dict={**config, **TINY, **extra})


def tensorboard_writer_threads():
    return [thread for thread in threading.enumerate() if type(thread).__name__ == "_AsyncWriterThread"]


def test_one_run_writes_every_row_curve_and_cost(small_config, monkeypatch, capsys):
    calls = []
    original = source_module.prefix_candidates
    monkeypatch.setattr(source_module, "prefix_candidates", lambda *a, **k: calls.append(a[3]) or original(*a, **k))
    writers_before = set(tensorboard_writer_threads())
    out = run(small_config)
    # every tensorboard writer of the run (the LLM's, the SRMs', the device stages') is closed
    assert set(tensorboard_writer_threads()) <= writers_before
    names = [(row["role"], row.get("device_catalogue")) for row in out["rows"]]
    assert names == [("srm", "full"), ("llm_stale", "cloud"), ("llm_fresh", "cloud"), ("srm_rerank", "candidates"),
                     *[(role, mode) for mode in ("candidates", "full") for role in ("lsc4rec", "ablation", "ablation")]]
    # the LLM produced the cooperative candidates once, although the SRM trained 2 epochs on them
    assert calls == ["stale"]
    assert set(out["cost"]["cloud_calls"]["llm_candidate_passes"]) == {
        "llm_train/stale", "retrain/stale", "retrain/fresh", "valid/stale", "valid/fresh", "test/stale", "test/fresh"}
    users = out["cost"]["cloud_calls"]["initial_lists"]
    assert users == len(out["per_user_test"]["lsc4rec/full"]) == 30
    for row in (row for row in out["rows"] if row["role"] == "lsc4rec"):
        assert row["policy"] == "learned" and row["rho"] == 0.1
        assert out["cost"]["cloud_calls"]["requests"][row["device_catalogue"]] == round(row["realized"] * users)
        assert set(row["paired_tests"]) == {"metric", "srm", "srm_rerank", "llm_stale", "llm_fresh"}
    curve = out["request_curve"]
    policies = {mode: {p["policy"] for p in curve if p["device_catalogue"] == mode} for mode in ("candidates", "full")}
    assert policies == {"candidates": {"random", "consistency", "learned", "oracle"},
                        "full": {"random", "consistency", "top1_missing", "regret", "learned", "oracle"}}
    for point in curve:
        assert 0 <= point["test"]["ndcg@10"] <= point["test"]["hit@10"] <= 1
    by = {(p["device_catalogue"], p["policy"], p["rho"]): p for p in curve}
    for mode, names in policies.items():  # rho = 0 is never-request and rho = 1 always-request, whatever the policy
        for policy in names - {"oracle"}:
            assert by[(mode, policy, 0.0)]["test"] == by[(mode, "random", 0.0)]["test"]
            assert by[(mode, policy, 1.0)]["test"] == by[(mode, "random", 1.0)]["test"]
            assert by[(mode, policy, 1.0)]["realized"] == 1.0
    tests = out["policy_tests"]  # learned vs random and every rule of the mode at every ratio inside (0, 1)
    assert [(t["device_catalogue"], t["rho"], t["versus"]) for t in tests] == [
        (mode, r, v) for mode in ("candidates", "full") for r in (0.1, 0.5)
        for v in sorted(policies[mode] - {"learned", "oracle"}, key=["random", "consistency", "top1_missing",
                                                                     "regret"].index)]
    for test in tests:
        mode, rho = test["device_catalogue"], test["rho"]
        gap = by[(mode, "learned", rho)]["test"]["ndcg@10"] - by[(mode, test["versus"], rho)]["test"]["ndcg@10"]
        assert test["mean_diff"] == pytest.approx(gap, abs=1e-5)
    printed = capsys.readouterr().out  # the console shows the rows and the curves as markdown
    assert "| LSC4Rec (full) | lsc4rec |" in printed and "| top1_missing (full) |" in printed
    modes = out["runs"][0]["modes"]
    assert [info["device_catalogue"] for info in modes] == ["candidates", "full"]
    stages = out["runs"][0]["stages"]  # re-training with the item table keeps its best epoch; with the lists, if it gains
    assert stages["retrain (full, device)"]["kept"] and not stages["retrain (full, device)"]["must_beat_start"]
    assert stages["retrain (candidates, device)"]["must_beat_start"] and stages["cooperative"]["must_beat_start"]
    assert stages["retrain (full, device)"]["devices"] == 30  # every device re-trained its own copy
    # calibration calls: every validation user's two lists and every fresh-window sample's two lists
    calibration = out["cost"]["cloud_calls"]["calibration"]
    assert calibration == {"valid/stale": 30, "valid/fresh": 30, "retrain/stale": 60, "retrain/fresh": 60}
    assert out["cost"]["cloud_calls"]["calibration_total"] == 180
    assert all(row["retrain_scope"] == ("device" if row["role"] not in ("srm", "llm_stale", "llm_fresh") else None)
               for row in out["rows"])
    assert all(info["learned_policy_fit_users"] == 30 + 60 for info in modes)  # valid + 2 fresh-window samples a user
    cost = out["cost"]
    assert cost["llm_parameters"] > 0 and cost["srm_parameters"] > 0 and cost["bytes_per_request"] > 0


@pytest.mark.parametrize("switch, stage", [("coop_train", "cooperative"), ("retrain", "retrain")])
def test_each_ablation_switch_removes_its_stage(small_config, switch, stage):
    out = run(small_config, **{switch: False})
    stages = out["runs"][0]["stages"]
    assert not any(name.startswith(stage) for name in stages)
    names = [row["name"] for row in out["rows"] if row["role"] == "ablation"]
    if switch == "coop_train":
        # the training samples' lists are then needed only by re-training's replay (candidates setting)
        assert "llm_train/stale" not in out["cost"]["cloud_calls"]["llm_candidate_passes"]  # replay 0: none
        assert "llm_train/stale" in run(small_config, coop_train=False, retrain_replay="all")["cost"]["cloud_calls"][
            "llm_candidate_passes"]
        assert names == ["LSC4Rec (candidates) w/o re-training", "LSC4Rec (full) w/o re-training"]
    else:
        assert names == []


@pytest.mark.parametrize("srm", ["GRU4Rec", "NARM", "BERT4Rec"])
def test_other_device_models(small_config, srm):
    out = run(small_config, srm=srm, coop_epochs=1, request_curve_ratios=[0.0, 1.0])
    assert out["rows"][0]["name"] == srm
    assert all(0 <= row["test"]["ndcg@10"] <= 1 for row in out["rows"])


def test_two_seeds_give_mean_and_std(small_config):
    out = run(small_config, seeds=2, coop_train=False, retrain=False, request_curve_ratios=[0.0, 1.0])
    assert out["seeds"] == [7, 8]
    assert all("test_std" in row for row in out["rows"])


@pytest.mark.parametrize(
    "key, value, message",
    [("fusion_alpha", 1.5, "fusion_alpha"), ("request_ratio", -0.1, "request_ratio"),
     ("request_policy", "sometimes", "request_policy"), ("candidate_num", 0, "candidate_num"),
     ("fusion_norm", "softmax", "fusion_norm")],
)
def test_bad_values_are_refused_before_training(small_config, key, value, message):
    with pytest.raises(ConfigError, match=message):
        run(small_config, **{key: value})


@pytest.mark.parametrize("srm", ["SASRec", "GRU4Rec", "NARM", "BERT4Rec"])
def test_candidate_only_device_scores_equal_the_gathered_full_ranking(small_config, srm):
    import torch
    from recbole_lsc.data.loading import create_dataset

    from recbole_lsc.config import srm_config_of
    from recbole_lsc.lsc4rec import LSC4Rec
    from recbole_lsc.protocol import DeviceCloudProtocol
    from recbole_lsc.quick_start import build_config
    from recbole_lsc.utils import get_model

    config = build_config("LSC4Rec", "mltiny", config_dict={**small_config, **TINY, "srm": srm})
    srm_config = srm_config_of(config)
    dataset = create_dataset(srm_config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    device = LSC4Rec(config, dataset, get_model(srm), srm_config).srm.eval()
    samples = protocol.samples("test")
    batch = protocol.interaction(samples, "fresh", device.max_len, device.fields)
    candidates = torch.randint(1, dataset.item_num, (len(samples), 20))
    with torch.no_grad():
        gathered = device.catalogue_scores(batch).gather(1, candidates)
        only = device.candidate_scores(batch, candidates)
    assert only.shape == (len(samples), 20)
    assert torch.allclose(only, gathered, atol=1e-5)


def test_an_undone_stage_leaves_its_ablation_equal_to_lsc4rec(small_config):
    # a learning rate of 0 cannot improve validation: re-training is undone, so the SRM "w/o
    # re-training" is the final SRM, and its row (policy fit included) must equal the main row
    # (with the list loss of 'candidates': the SRM re-ranking the stale lists must beat its start)
    out = run(small_config, retrain_learning_rate=1e-12, device_catalogue="candidates")
    assert out["runs"][0]["stages"]["retrain (candidates, device)"]["kept"] is False
    rows = {row["name"]: row for row in out["rows"]}
    main, ablation = rows["LSC4Rec (candidates)"], rows["LSC4Rec (candidates) w/o re-training"]
    assert ablation["test"] == main["test"] and ablation["valid"] == main["valid"]
    assert ablation["realized"] == main["realized"]


@pytest.mark.parametrize("scope", ["device", "fleet"])
def test_an_undone_cooperative_stage_leaves_its_ablation_equal_to_lsc4rec(small_config, scope):
    # the cooperative stage undone, "w/o cooperative training" re-trains the same SRM with the
    # same generators: the very computation of the main row, not another dropout draw of it
    out = run(small_config, coop_learning_rate=1e-12, device_catalogue="candidates", retrain_scope=scope,
              stage_selection="always", retrain_epochs=2, request_curve_ratios=[0.0, 1.0])
    stages = out["runs"][0]["stages"]
    assert stages["cooperative"]["kept"] and stages["cooperative"]["best_epoch"] >= 0  # 'always' keeps it ...
    out = run(small_config, coop_learning_rate=1e-12, device_catalogue="candidates", retrain_scope=scope,
              retrain_epochs=2, request_curve_ratios=[0.0, 1.0])
    assert out["runs"][0]["stages"]["cooperative"]["kept"] is False  # ... 'validated' undoes a stage that cannot gain
    rows = {row["name"]: row for row in out["rows"]}
    label = "candidates" if scope == "device" else "candidates, fleet re-training"
    main, ablation = rows[f"LSC4Rec ({label})"], rows[f"LSC4Rec ({label}) w/o cooperative training"]
    assert ablation["test"] == main["test"] and ablation["valid"] == main["valid"]


@pytest.mark.parametrize("srm", ["SASRec", "GRU4Rec"])
def test_users_whose_stale_history_is_empty(small_config, srm):
    """Users with 4 interactions: the list for their validation target was built from an empty
    history, which the device's SRM still reads (as one padding item) for the drift features."""
    path = f"{small_config['data_path']}/mltiny/mltiny.inter"
    with open(path, encoding="utf-8") as handle:
        header, *rows = handle.read().splitlines()
    kept, seen = [], {}
    for row in sorted(rows, key=lambda line: float(line.split("\t")[3])):
        user = row.split("\t", 1)[0]
        seen[user] = seen.get(user, 0) + 1
        if int(user) > 10 or seen[user] <= 4:  # users 1-10 keep their first 4 interactions
            kept.append(row)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join([header, *kept]) + "\n")
    out = run(small_config, srm=srm, coop_epochs=1, request_curve_ratios=[0.0, 0.1, 1.0])
    lsc_rows = [row for row in out["rows"] if row["role"] == "lsc4rec"]
    assert len(lsc_rows) == 2 and all(0 <= row["test"]["ndcg@10"] <= 1 for row in lsc_rows)


def test_results_json_is_written_after_the_device_bundles(small_config, monkeypatch):
    """A sweep takes an existing results.json for a finished job: nothing may be written after it,
    and it lands in the bundles' folder even when the clock of a default run name moves on."""
    import datetime
    import itertools
    import os
    import types

    import recbole_lsc.results as results_module

    from recbole_lsc.device.bundle import DeviceBundle

    original, seen = DeviceBundle.save_pretrained, []

    def save(bundle, folder, srm):
        seen.append(os.path.exists(os.path.join(os.path.dirname(os.path.dirname(folder)), "results.json")))
        return original(bundle, folder, srm)

    monkeypatch.setattr(DeviceBundle, "save_pretrained", save)
    ticks = itertools.count()

    class Ticking(datetime.datetime):  # every reading of the clock is one second later
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=next(ticks))

    monkeypatch.setattr(results_module, "datetime", types.SimpleNamespace(datetime=Ticking))
    out = run(small_config, coop_train=False, request_curve_ratios=[0.0, 1.0])
    assert seen == [False, False] and os.path.isfile(out["path"])
    assert os.path.isdir(os.path.join(os.path.dirname(out["path"]), "device", "full"))
