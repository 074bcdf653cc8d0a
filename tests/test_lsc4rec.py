"""LSC4Rec end to end on tiny data: rows, curves, stage switches, caching, validation-only fitting."""

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


def test_one_run_writes_every_row_curve_and_cost(small_config, monkeypatch, capsys):
    calls = []
    original = source_module.prefix_candidates
    monkeypatch.setattr(source_module, "prefix_candidates", lambda *a, **k: calls.append(a[3]) or original(*a, **k))
    out = run(small_config)
    roles = [row["role"] for row in out["rows"]]
    assert roles == ["srm", "llm_stale", "llm_fresh", "srm_rerank", "lsc4rec", "ablation", "ablation"]
    # the LLM produced the cooperative candidates once, although the SRM trained 2 epochs on them
    # and two re-trainings (main and ablation) followed
    assert calls == ["stale"]
    main = out["rows"][4]
    assert main["policy"] == "learned" and main["rho"] == 0.1
    users = out["cost"]["cloud_calls"]["initial_lists"]
    assert users == len(out["per_user_test"]["lsc4rec"]) == 30
    assert out["cost"]["cloud_calls"]["requests"] == round(main["realized"] * users)
    assert set(main["paired_tests"]) == {"metric", "srm", "srm_rerank", "llm_stale", "llm_fresh"}
    curve = out["request_curve"]
    assert {p["policy"] for p in curve} == {"random", "consistency", "top1_missing", "regret", "learned", "oracle"}
    for point in curve:
        assert 0 <= point["test"]["ndcg@10"] <= point["test"]["hit@10"] <= 1
    by = {(p["policy"], p["rho"]): p for p in curve}
    # rho = 0 is never-request and rho = 1 always-request, whatever the policy
    for policy in ("consistency", "top1_missing", "regret", "learned"):
        assert by[(policy, 0.0)]["test"] == by[("oracle", 0.0)]["test"] == by[("random", 0.0)]["test"]
        assert by[(policy, 1.0)]["test"] == by[("random", 1.0)]["test"]
        assert by[(policy, 1.0)]["realized"] == 1.0
    tests = out["policy_tests"]  # learned vs random and consistency at every ratio strictly inside (0, 1)
    assert [(t["rho"], t["versus"]) for t in tests] == [(r, v) for r in (0.1, 0.5)
                                                       for v in ("random", "consistency", "top1_missing", "regret")]
    for test in tests:
        mean_gap = by[("learned", test["rho"])]["test"]["ndcg@10"] - by[(test["versus"], test["rho"])]["test"]["ndcg@10"]
        assert test["mean_diff"] == pytest.approx(mean_gap, abs=1e-5)
    printed = capsys.readouterr().out  # the console shows the rows and the curves as markdown
    assert "| LSC4Rec | lsc4rec |" in printed and "| top1_missing |" in printed
    info = out["runs"][0]  # the learned policy's penalty was picked by cross-validation from its grid
    assert info["learned_policy_l2"] in L2_GRID and len(info["learned_policy_cv"]) == len(L2_GRID)
    cost = out["cost"]
    assert cost["llm_parameters"] > 0 and cost["srm_parameters"] > 0 and cost["bytes_per_request"] > 0


@pytest.mark.parametrize("switch, stage", [("coop_train", "cooperative"), ("retrain", "retrain")])
def test_each_ablation_switch_removes_its_stage(small_config, switch, stage):
    out = run(small_config, **{switch: False})
    stages = out["runs"][0]["stages"]
    assert stage not in stages
    names = [row["name"] for row in out["rows"] if row["role"] == "ablation"]
    if switch == "coop_train":
        assert "train/stale" not in out["cost"]["cloud_calls"]["llm_candidate_passes"]
        assert names == ["LSC4Rec w/o re-training"]
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
    from recbole.data import create_dataset

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
