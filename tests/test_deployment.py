"""The device-cloud split over loopback HTTP: the service, the device client, the replay.

Servers run on 127.0.0.1 on a free port, started and stopped by each test; every wait is bounded.
"""

import json
import os
import threading
import time

import httpx
import numpy as np
import pytest
import torch
import uvicorn

from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.cloud.service import ServiceLimits, create_app
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.config import LSCConfig
from recbole_lsc.deployment.process import free_port
from recbole_lsc.deployment.replay import Replay, replay_report, replay_turns
from recbole_lsc.device.bundle import DeviceBundle, RequestRule, tokens_digest
from recbole_lsc.device.client import DeviceClient
from recbole_lsc.device.http_cloud import HttpCloud
from recbole_lsc.device.srm import DeviceSRM
from recbole_lsc.experiment.lsc4rec import load_dataset
from recbole_lsc.results import setting_key
from recbole_lsc.utils import get_model
from tests.conftest import write_tiny_ml100k

TINY = {"llm_hidden_size": 16, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 8, "candidate_num": 10}


class LoopbackServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread, for the length of a ``with`` block."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the loopback server did not start within 20 s"
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.stop()


class SlowCloud(InProcessCloud):
    """A cloud that answers ``delay`` seconds late."""

    def __init__(self, llm, delay):
        super().__init__(llm, 64, "cpu")
        self.delay = delay

    def candidates(self, item_seq, item_len, k):
        time.sleep(self.delay)
        return super().candidates(item_seq, item_len, k)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny dataset, an untrained tiny LLM and SRM on it (no training: the split is what is tested)."""
    folder = tmp_path_factory.mktemp("deployment")
    write_tiny_ml100k(str(folder / "data"), n_users=30)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        config = LSCConfig("LSC4Rec", "mltiny", config_dict={
            "data_path": str(folder / "data"), "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "state": "ERROR", "show_progress": False, "use_gpu": False, "seed": 7, **TINY})
        dataset, protocol, srm_config = load_dataset(config)
        torch.manual_seed(0)
        llm = LLMRec(config, dataset).eval()
        srm = DeviceSRM(get_model("SASRec")(srm_config, dataset), srm_config, dataset).eval()
    finally:
        os.chdir(cwd)
    tokens = list(dataset.field2id_token[dataset.iid_field])
    return {"config": config, "dataset": dataset, "protocol": protocol, "llm": llm, "srm": srm, "tokens": tokens,
            "srm_config": srm_config}


def app_of(world, **kwargs):
    cloud = kwargs.pop("cloud", None) or InProcessCloud(world["llm"], 64, "cpu")
    return create_app(cloud, world["tokens"], "v-test", **kwargs)


def post(url, body, **kwargs):
    return httpx.post(f"{url}/candidates", content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                      headers={"content-type": "application/json", **kwargs.pop("headers", {})}, timeout=10, **kwargs)


def test_service_answers_what_the_in_process_cloud_answers(world):
    histories = [world["protocol"].items[start : start + length]
                 for start, length in ((0, 3), (40, 8), (100, 12), (7, 1))]
    local = InProcessCloud(world["llm"], 64, "cpu")
    with LoopbackServer(app_of(world)) as server:
        remote = HttpCloud(server.url, world["tokens"])
        for history in histories:
            seq = torch.as_tensor(history).view(1, -1)
            kept = seq[:, -TINY["llm_max_len"]:]  # the service reads the newest llm_max_len items, as the simulation
            expected = local.candidates(kept, torch.tensor([kept.size(1)]), 10)
            answer = remote.candidates(seq, torch.tensor([seq.size(1)]), 10)
            assert torch.equal(answer.item_ids, expected.item_ids)
            assert torch.allclose(answer.scores, expected.scores, atol=1e-6)
            assert int(answer.history_len[0]) == kept.size(1) and answer.model_id == "LLMRec"
        remote.close()
        health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["model_version"] == "v-test" and health["items"] == len(world["tokens"]) - 1


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(world):
    history = [world["tokens"][item] for item in world["protocol"].items[:5]]
    with LoopbackServer(app_of(world, batch_window_ms=50.0)) as server:
        alone = post(server.url, {"history": history, "k": 7}).json()
        answers = [None] * 12
        bodies = [{"history": history[: 1 + index % 5], "k": 3 + index % 4} for index in range(12)]

        def ask(index):
            answers[index] = post(server.url, bodies[index]).json()

        threads = [threading.Thread(target=ask, args=(index,)) for index in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        batches = server.server.config.app.state.batcher.batches
    assert batches < 1 + 12  # some of the 12 concurrent requests shared a pass
    for body, answer in zip(bodies, answers):
        assert len(answer["items"]) == body["k"] and answer["history_len"] == len(body["history"])
        assert answer["scores"] == sorted(answer["scores"], reverse=True)
    assert bodies[4]["history"] == history and answers[4]["items"] == alone["items"][:3]  # same history, k 3 of 7


def test_bearer_token_is_required_when_set(world):
    history = {"history": [world["tokens"][1]], "k": 3}
    with LoopbackServer(app_of(world, token="s3cret")) as server:
        missing = post(server.url, history)
        wrong = post(server.url, history, headers={"Authorization": "Bearer nope"})
        right = post(server.url, history, headers={"Authorization": "Bearer s3cret"})
    assert missing.status_code == 401 and wrong.status_code == 401 and right.status_code == 200
    assert "bearer token" in missing.json()["error"] and missing.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("body, status, says", [
    (b"{not json", 400, "not JSON"),
    ([1, 2], 422, "JSON object"),
    ({"k": 3}, 422, "JSON object"),
    ({"history": [], "k": 3}, 422, "history is empty"),
    ({"history": ["no-such-item", "1"], "k": 3}, 422, "unknown item token"),
    ({"history": ["1"], "k": 0}, 422, "k must be between 1 and"),
    ({"history": ["1"], "k": 10 ** 6}, 422, "k must be between 1 and"),
    ({"history": ["1"], "k": "5"}, 422, "k must be an integer"),
    ({"history": ["1"], "k": True}, 422, "k must be an integer"),
    ({"history": ["1"]}, 422, "k is missing"),
    ({"history": [{"a": 1}, ["b"]], "k": 3}, 422, "history items must be item tokens"),
    ({"history": [True], "k": 3}, 422, "history items must be item tokens"),
    (b'{"history": ["1"], "k": ' + b"9" * 9000 + b"}", 413, "at most 8192"),
    (b'{"history": ["1"], "k": ' + b"9" * 4400 + b"}", 400, "not JSON this service reads"),
    (b"[" * 2000 + b"]" * 2000, 400, "not JSON this service reads"),
    (b"\xff\xfe{", 400, "not JSON"),
    ({"history": ["1"] * 31, "k": 3}, 413, "at most 30"),
    ({"history": ["1"], "k": 3, "pad": "x" * 9000}, 413, "at most 8192"),
])
def test_bad_requests_get_a_clear_4xx_and_the_service_keeps_running(world, body, status, says):
    limits = ServiceLimits(max_body_bytes=8192, max_history=30, max_k=50)
    with LoopbackServer(app_of(world, limits=limits)) as server:
        answer = post(server.url, body)
        after = post(server.url, {"history": [world["tokens"][1]], "k": 3})
    assert answer.status_code == status and says in answer.json()["error"]
    assert after.status_code == 200 and len(after.json()["items"]) == 3


def always_bundle(world, device_catalogue="candidates", always=True):
    """A bundle whose device asks for a fresh list every time (or never)."""
    return DeviceBundle(srm="SASRec", device_catalogue=device_catalogue, alpha_stale=0.5, alpha_fresh=0.5,
                        fusion_norm="prob", candidate_num=10, cloud_lag=2, metric_by_rank=[1.0] * 10, cloud_history=8,
                        request=RequestRule("always" if always else "never", 1.0 if always else 0.0, 7, always=always),
                        cloud_model_id="LLMRec", item_tokens_sha256=tokens_digest(world["tokens"]))


def test_device_serves_its_cached_list_when_the_cloud_is_down(world):
    turn = replay_turns(world["protocol"])[0]
    with LoopbackServer(app_of(world)) as server:
        cloud = HttpCloud(server.url, world["tokens"], timeout=0.5)
        device = DeviceClient(world["srm"], always_bundle(world), cloud)
        assert device.receive(turn.user, turn.stale)
        up = device.recommend(turn.user, turn.fresh)
        server.stop()
        started = time.perf_counter()
        down = device.recommend(turn.user, turn.fresh)
        waited = time.perf_counter() - started
    assert up.requested and up.fresh
    assert down.requested and not down.fresh and device.failures == 1 and waited < 2.0
    cached = DeviceClient(world["srm"], always_bundle(world, always=False), cloud)
    cached._cached[turn.user] = device._cached[turn.user]  # the list the device held when the cloud went down
    expected = cached.recommend(turn.user, turn.fresh)
    assert torch.equal(down.item_ids, expected.item_ids) and torch.equal(down.scores, expected.scores)
    assert [call.ok for call in cloud.calls] == [True, True, False]


def test_device_never_waits_past_its_timeout_for_a_slow_cloud(world):
    turn = replay_turns(world["protocol"])[1]
    with LoopbackServer(app_of(world, cloud=SlowCloud(world["llm"], delay=1.5))) as server:
        cloud = HttpCloud(server.url, world["tokens"], timeout=0.3)
        device = DeviceClient(world["srm"], always_bundle(world, "full"), cloud)
        started = time.perf_counter()
        received = device.receive(turn.user, turn.stale)
        waited = time.perf_counter() - started
    assert not received and not device.has_list(turn.user) and device.failures == 1
    assert waited < 1.2  # the timeout (0.3 s), not the cloud's 1.5 s


def test_replay_with_the_cloud_stopped_halfway_counts_failures_and_serves_cached_lists(world):
    turns = replay_turns(world["protocol"])
    config = {**world["config"].final_config_dict, "request_timeout": 0.5}
    with LoopbackServer(app_of(world)) as server:
        simulation = {"users": [turn.user for turn in turns], "test": [0.0] * len(turns), "metric": "ndcg@10"}
        bundle = always_bundle(world)
        bundle.simulation = simulation
        replay = Replay(world["srm"], bundle, lambda: HttpCloud(server.url, world["tokens"], timeout=0.5), 4,
                        stop_after=0.5, on_share=lambda share: server.stop())
        log = replay.run(turns)
    report = replay_report(config, log, turns, simulation)
    assert report["served"] == len(turns)  # every user got a list before the outage
    assert report["requests"]["asked"] == len(turns)
    assert 0 < report["failures"] < len(turns) and report["requests"]["answered"] == len(turns) - report["failures"]
    assert report["served_from_cache_after_failed_request"]["users"] == report["failures"]
    assert report["latency_ms"]["p50"] is not None and report["bytes_per_call"]["up"] > 0


def test_bundle_round_trip_and_its_request_rule(world, tmp_path):
    bundle = always_bundle(world, "full")
    bundle.request = RequestRule("consistency", 0.1, 7, threshold=0.25)
    bundle.save_pretrained(str(tmp_path / "b"), world["srm"])
    torch.manual_seed(1)  # other weights than the saved ones
    srm = DeviceSRM(get_model("SASRec")(world["srm_config"], world["dataset"]), world["srm_config"], world["dataset"])
    loaded = DeviceBundle.from_pretrained(str(tmp_path / "b"), srm)
    assert loaded == bundle
    for name, tensor in world["srm"].state_dict().items():
        assert torch.equal(srm.state_dict()[name], tensor)
    columns = {"rank_displacement": np.array([0.1, 0.3, 0.25 - 1e-6])}
    assert loaded.request.requests(columns, np.array([1, 2, 3]), np.array([5, 5, 5])).tolist() == [False, True, False]


def tiny_job_args(tiny_config, tmp_path, data, run_name="job"):
    """``--key=value`` flags of a tiny LSC4Rec run whose LLM lands in a trained-LLM store."""
    values = {**tiny_config, **TINY, "candidate_num": 20, "data_path": data, "llm_epochs": 1, "llm_batch_size": 64, "coop_epochs": 1,
              "retrain_epochs": 1, "epochs": 1, "trained_llm_cache": str(tmp_path / "store"),
              "request_curve_ratios": [0.0, 0.1, 1.0], "run_name": run_name}
    return ["--model=LSC4Rec", "--dataset=mltiny", *(f"--{key}={value!r}" if isinstance(value, str) else
                                                     f"--{key}={value}" for key, value in values.items())]


def test_a_concurrent_replay_over_http_equals_the_simulation(tiny_config, tmp_path, capsys):
    from recbole_lsc.cli import main

    write_tiny_ml100k(str(tmp_path / "small"), n_users=30)
    args = tiny_job_args(tiny_config, tmp_path, str(tmp_path / "small"))
    assert main([*args, "--retrain_scope=['device', 'fleet']"]) == 0
    # re-training with the item table is kept: each device carries its own weights; the fleet's one model
    assert (tmp_path / "results" / "job" / "device" / "full" / "devices.safetensors").is_file()
    assert not (tmp_path / "results" / "job" / "device" / "full-fleet" / "devices.safetensors").exists()
    for setting in ("candidates", "full", "full-fleet"):
        bundle = tmp_path / "results" / "job" / "device" / setting
        replay_args = tiny_job_args(tiny_config, tmp_path, str(tmp_path / "small"), run_name=f"replay-{setting}")
        assert main(["replay", *replay_args, f"--replay_bundle={bundle}", "--replay_clients=4"]) == 0
        with open(tmp_path / "results" / f"replay-{setting}" / "results.json", encoding="utf-8") as handle:
            report = json.load(handle)["replay"]
        with open(tmp_path / "results" / "job" / "results.json", encoding="utf-8") as handle:
            job = json.load(handle)
        row = next(row for row in job["results"] if row["role"] == "lsc4rec"
                   and setting_key(row["device_catalogue"], row["retrain_scope"]) == setting)
        assert report["identical_to_simulation"] and report["users_differing"] == 0 and report["failures"] == 0
        assert report["test"] == row["test"]  # the very row the simulation printed
        assert report["requests"]["ratio"] == row["realized"]
    assert "identical_to_simulation | True" in capsys.readouterr().out


def test_replay_and_serve_refuse_bad_input_with_one_line(tiny_config, tmp_path, capsys):
    from recbole_lsc.cli import main

    args = tiny_job_args(tiny_config, tmp_path, tiny_config["data_path"])
    assert main(["replay", *args]) == 2
    assert main(["replay", *args, f"--replay_bundle={tmp_path / 'nowhere'}"]) == 2
    assert main(["serve", *args]) == 2  # nothing trained in the store yet
    assert main(["serve", *args, "--serve_token_file=" + str(tmp_path / "missing")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "--replay_bundle=" in lines[0] and "does not exist" in lines[1]
    assert "no trained cloud LLM" in lines[2] and "recbole-lsc --model=LSC4Rec" in lines[2]
    assert "serve_token_file" in lines[3]
    assert not os.path.exists(tmp_path / "results")  # nothing half-written


def test_serve_freezes_what_it_loaded_out_of_the_collector_before_it_answers(monkeypatch):
    """A full collection walks every tracked object: the loaded libraries and model must be out
    of its reach (``gc.freeze``) by the time uvicorn answers, or each one stalls every request."""
    import gc

    from recbole_lsc.deployment import serve as serve_command

    frozen = {}
    monkeypatch.setattr(serve_command, "init_logger", lambda config: None)
    monkeypatch.setattr(serve_command, "service_app", lambda config, run_dir: (object(), "v1"))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: frozen.setdefault("objects", gc.get_freeze_count()))
    gc.unfreeze()
    try:
        serve_command.serve({"serve_threads": 0, "serve_host": "127.0.0.1", "serve_port": 0})
    finally:
        gc.unfreeze()
    assert frozen["objects"] > 1000  # at least this test process's own modules
