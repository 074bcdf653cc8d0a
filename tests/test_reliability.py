"""Reliability and security: one-line errors for bad input, no unpickling of swappable files,
no half-written results, reproducible runs, and messy datasets handled with counts logged.

Complements test_config / test_checkpoint / test_llmrec / test_lsc4rec / test_results_cli /
test_llm_store, which already cover the unknown model, the missing dataset, malformed yaml,
wrong types, the checkpoint format and the trained-LLM cache's keys and checksums.
"""

import glob
import hashlib
import json
import logging
import os
import pickle
import random
import re

import numpy as np
import pytest
import torch

import recbole_lsc
import recbole_lsc.cloud.backbones as llm_backbone
from recbole_lsc.data.loading import create_dataset, data_preparation
import recbole_lsc.experiment.lsc4rec as lsc4rec_pipeline
from recbole_lsc.cli import main
from recbole_lsc.config import LSCConfig, srm_config_of
from recbole_lsc.protocol import DeviceCloudProtocol, user_sequences
from recbole_lsc.data.item_text import item_titles
from recbole_lsc.errors import ConfigError
from recbole_lsc.cloud.store import entry_path, llm_key, load_trained_llm
from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.quick_start import run_recbole_lsc
from test_llmrec import _save_local_llama

LOAD_INTER = {"inter": ["user_id", "item_id", "timestamp"]}
LOAD_TEXT = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "movie_title"]}
# LSC4Rec small enough for a few seconds on 2 cores (15 items: top-k and C below that)
TINY_LSC = {
    "llm_hidden_size": 16, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 8, "llm_epochs": 1,
    "llm_batch_size": 64, "candidate_num": 10, "coop_epochs": 1, "retrain_epochs": 1, "epochs": 1,
    "hidden_size": 16, "inner_size": 32, "topk": [5, 10], "request_curve_ratios": [0.0, 1.0],
    "train_batch_size": 256, "eval_batch_size": 256, "use_gpu": False, "state": "ERROR", "show_progress": False,
    "trained_llm_cache": None, "device_catalogue": ["candidates"],  # the synthetic catalogue is < 2 x candidate_num
}
# more than 50 test users: scipy's Wilcoxon test switches from an exact permutation test
# (seconds per call) to its normal approximation, so a whole LSC4Rec run takes under a second
RUN_USERS = (8,) * 60


class Payload:
    """Unpickling this creates ``path``: proof that a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---------------------------------------------------------------- helpers
def write_atomic(folder, name, rows, titles=None):
    """RecBole atomic files: ``rows`` of (user, item, timestamp) in the given order, titles by item."""
    target = os.path.join(folder, name)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, f"{name}.inter"), "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        handle.writelines(f"{user}\t{item}\t{stamp}\n" for user, item, stamp in rows)
    if titles is not None:
        with open(os.path.join(target, f"{name}.item"), "w", encoding="utf-8") as handle:
            handle.write("item_id:token\tmovie_title:token_seq\n")
            handle.writelines(f"{item}\t{title}\n" for item, title in titles.items())
    return folder


def messy_rows(lengths, n_items=15, seed=0):
    """String ids (with spaces), distinct timestamps per user, rows shuffled out of time order."""
    rng = random.Random(seed)
    rows = [(f"user-{u}", f"it {rng.randrange(n_items)}", 1000 + 10 * t + u) for u, n in enumerate(lengths) for t in range(n)]
    rng.shuffle(rows)
    return rows


def all_titles(n_items=15, untitled=(0, 3)):
    return {f"it {i}": "" if i in untitled else f"Title {i}" for i in range(n_items)}


def write_messy(tmp_path, lengths=(8,) * 12, name="syn", **kwargs):
    return write_atomic(str(tmp_path / "data"), name, messy_rows(lengths, **kwargs), all_titles())


def error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def nothing_written():
    """No results folder and no checkpoint or cache file (the log folder is not a result)."""
    return not os.path.exists("R") and not glob.glob("saved/**/*.*", recursive=True)


def cli(data, *args, model="LSC4Rec", dataset="syn"):
    with open("tiny.yaml", "w", encoding="utf-8") as handle:
        json.dump(TINY_LSC, handle)  # JSON is yaml
    return main([f"--model={model}", f"--dataset={dataset}", f"--data_path={data}", "--config_files=tiny.yaml",
                 "--results_dir=R", "--checkpoint_dir=saved", *args])


# ---------------------------------------------------------------- 1. bad input
@pytest.mark.parametrize(
    "args, message",
    [
        (["--srm=NoSuchSRM"], "srm 'NoSuchSRM' is not a RecBole sequential model; pass --srm=NAME"),
        (["--srm=BPR"], "srm 'BPR' is not a RecBole sequential model"),
        (["--srm=LLMRec"], "srm 'LLMRec' is not a RecBole sequential model"),
        (["--fusion_alpah=0.5"], "unknown config key 'fusion_alpah'; did you mean 'fusion_alpha'?"),
        (["--cloudlag=3"], "unknown config key 'cloudlag'; did you mean 'cloud_lag'?"),
        (["--Candidate_Num=5"], "did you mean 'candidate_num'?"),
        (["--fusion_alpha=1.5"], "config key 'fusion_alpha' must be a number in [0, 1] or 'auto', got 1.5"),
        (["--fusion_alpha=half"], "config key 'fusion_alpha' must be a number in [0, 1] or 'auto', got 'half'"),
        (["--request_curve_ratios=[0.1,1.5]"], "'request_curve_ratios' must be a list of numbers in [0, 1]"),
        (["--save_dataset=True"], "'save_dataset' is not supported: recbole-lsc never writes or reads pickled"),
        (["--llm_backbone=/no/such/model"], "llm_backbone '/no/such/model' is neither 'tiny', 'smollm2-135m' nor an "
                                            "existing folder"),
        (["--llm_backbone=smollm2-135M"], "llm_backbone 'smollm2-135M' is neither"),  # names are exact
        (["--llm_backbone=~"], "llm_backbone is empty; set 'tiny', 'smollm2-135m' or the path"),
    ],
)
def test_config_errors_are_one_line_before_any_data(capsys, tmp_path, args, message):
    data = write_messy(tmp_path)
    assert cli(data, *args) == 2
    assert message in error_line(capsys)
    assert nothing_written()


def test_a_backbone_folder_without_a_model_config_is_refused_before_any_data(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr("recbole_lsc.quick_start.PIPELINES", {})  # reaching a pipeline would be the defect
    assert cli(write_messy(tmp_path), f"--llm_backbone={folder}", model="LLMRec") == 2
    assert "has no config.json: it is not a Hugging Face model folder" in error_line(capsys)
    assert nothing_written()


def test_the_backbone_of_a_run_folder_is_not_a_config_check(tiny_config, tmp_path):
    """A replayed run folder carries the training machine's backbone path and never loads the
    cloud: reading its config must not need the folder."""
    config = LSCConfig("LSC4Rec", "mltiny", config_dict={**tiny_config, "llm_backbone": str(tmp_path / "elsewhere")})
    assert config["llm_backbone"] == str(tmp_path / "elsewhere")


def test_misspelt_recbole_key_of_a_plain_model(capsys, tmp_path):
    assert cli(write_messy(tmp_path), "--learnig_rate=0.1", model="SASRec") == 2
    assert "did you mean 'learning_rate'?" in error_line(capsys)


def test_keys_of_other_models_and_datasets_are_not_misspellings(tiny_config):
    # GRU4Rec's num_layers, RecBole's dataset keys, a plugin key for the SRM of another run
    config = LSCConfig("SASRec", "mltiny", config_dict={**tiny_config, "num_layers": 2, "seq_separator": " ",
                                                        "coop_epochs": 1, "my_own_note": "kept"})
    assert config["my_own_note"] == "kept"  # far from every known key: RecBole's rule, kept


@pytest.mark.parametrize(
    "lengths, args, message",
    [
        ((8,) * 12, ["--candidate_num=20"],
         "candidate_num (20) is larger than the catalogue of 15 items; set candidate_num to at most 15"),
        ((8,) * 12, ["--candidate_num=12", "--llm_mask_history=True"],
         "minus the up to 8 history items llm_mask_history removes; set candidate_num to at most 7"),
        ((6,) * 12, ["--cloud_lag=3"],
         "cloud_lag=3 is too large for this dataset: its longest user has 6 interactions, so the cloud has no "
         "training target (a user needs more than cloud_lag + 3); lower cloud_lag"),
        ((8,) * 12 + (2, 3), ["--user_inter_num_interval=[0,inf)"],
         "2 of 14 users have fewer than 4 interactions (each needs a train, a valid and a test target); "
         "drop them with user_inter_num_interval: '[4,inf)'"),
        ((2, 3, 3), [], "filtering left no interactions of its 3 users (user_inter_num_interval: [4,inf)"),
        ((8,) * 12, ["--device_catalogue=full"],
         "device_catalogue 'full' adds the device's own top-C to the cloud's C candidates, but the catalogue has only "
         "15 items; set candidate_num to at most 7 or device_catalogue: candidates"),
        ((8,) * 12, ["--request_policy=regret"],
         "request_policy 'regret' reads the SRM's scores of the whole item table, which a device with "
         "device_catalogue 'candidates' does not hold"),
        ((8,) * 12, ["--device_catalogue=[candidates,somewhere]"], "config key 'device_catalogue' must be one or more"),
    ],
    ids=["candidates-over-catalogue", "candidates-over-masked-catalogue", "cloud-lag-too-large",
         "users-too-short", "every-user-too-short", "full-catalogue-too-small", "catalogue-policy-without-table",
         "unknown-device-catalogue"],
)
def test_data_errors_are_one_line_before_training(capsys, tmp_path, monkeypatch, lengths, args, message):
    trained = []
    monkeypatch.setattr(lsc4rec_pipeline, "train_or_load", lambda *args: trained.append(1))
    assert cli(write_messy(tmp_path, lengths), *args) == 2
    assert message in error_line(capsys)
    assert trained == [] and nothing_written()


def test_cloud_lag_that_starves_some_users_says_how_many(tmp_path, caplog):
    data = write_messy(tmp_path, (8,) * 10 + (4, 5, 6))
    config = LSCConfig("LSC4Rec", "syn", config_dict={**TINY_LSC, "data_path": data, "load_col": LOAD_INTER, "cloud_lag": 3})
    with caplog.at_level(logging.WARNING):
        protocol = DeviceCloudProtocol.from_dataset(create_dataset(config), config["cloud_lag"])
    assert ("cloud_lag=3: 3 of 13 users have fewer than 7 interactions, so the cloud never trains on a target of "
            "theirs; it still serves them from their stale history, which is empty at test for 1 of them") in caplog.text
    # what the message says: the 4-interaction user has no cloud target and an empty stale test history
    short = int(np.flatnonzero(protocol.lengths == 4)[0])
    test = protocol.samples("test")
    assert short not in protocol.samples("llm_train").user
    assert protocol.history_end(test, "stale")[list(test.user).index(short)] == 0


def text_config(tmp_path, data):
    folder = str(tmp_path / "llama")
    _save_local_llama(folder, ["Title"] + [str(i) for i in range(15)])
    values = {**TINY_LSC, "data_path": data, "load_col": LOAD_TEXT, "llm_backbone": folder}
    return LSCConfig("LLMRec", "syn", config_dict=values)


def test_items_without_titles_are_counted(tmp_path, caplog):
    config = text_config(tmp_path, write_messy(tmp_path))
    with caplog.at_level(logging.WARNING):
        LLMRec(config, create_dataset(config))
    assert "2 items have no title; their tokens start at random" in caplog.text


@pytest.mark.parametrize("case", ["all-empty", "no-item-file"])
def test_text_prompts_without_any_title_are_refused(tmp_path, case):
    rows = messy_rows((8,) * 12)
    titles = {item: "" for item in all_titles()} if case == "all-empty" else None
    config = text_config(tmp_path, write_atomic(str(tmp_path / "data"), "syn", rows, titles))
    message = "every item title is empty" if case == "all-empty" else "item text field 'movie_title' is not loaded"
    with pytest.raises(ConfigError, match=re.escape(message)):
        LLMRec(config, create_dataset(config))


@pytest.mark.parametrize("weights", ["pickle-bin", "garbage-safetensors"])
def test_backbone_folder_that_is_not_a_model(tiny_config, tmp_path, weights):
    folder = tmp_path / "fake-model"
    _save_local_llama(str(folder), ["a"])
    os.remove(folder / "model.safetensors")
    marker = tmp_path / "MARKER"
    if weights == "pickle-bin":
        torch.save({"weight": Payload(marker)}, folder / "pytorch_model.bin")
    else:
        (folder / "model.safetensors").write_bytes(os.urandom(200))
    config = LSCConfig("LLMRec", "mltiny", config_dict={**tiny_config, "llm_backbone": str(folder), "load_col": LOAD_TEXT})
    with pytest.raises(ConfigError) as info:
        LLMRec(config, create_dataset(config))
    assert "could not be loaded as a causal LM" in str(info.value) and "safetensors" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()


# ---------------------------------------------------------------- 2. nothing user-swappable is unpickled
def test_no_unsafe_deserialisation_in_the_package():
    """Every load in recbole_lsc is safetensors, json or torch.load(weights_only=True)."""
    root = os.path.dirname(recbole_lsc.__file__)
    unsafe = re.compile(r"pickle\.loads?\(|joblib\.load|dill\.|allow_pickle\s*=\s*True|(?<![\w.])(?<!def )eval\(|torch\.load\((?!.*weights_only=True)")
    hits = [
        f"{os.path.relpath(path, root)}:{number}: {line.strip()}"
        for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
        for number, line in enumerate(open(path, encoding="utf-8"), start=1)
        if unsafe.search(line)
    ]
    assert hits == []


def test_config_values_are_never_evaluated_as_code(tiny_config, tmp_path):
    marker, other = tmp_path / "MARKER", tmp_path / "OTHER"
    with pytest.raises(ConfigError, match="'epochs' must be an integer"):
        LSCConfig("SASRec", "mltiny", config_dict=tiny_config, cmd_args=[f"--epochs=__import__('os').system('touch {marker}')"])
    code = f"__import__('os').system('touch {other}')"
    config = LSCConfig("SASRec", "mltiny", config_dict={**tiny_config, "llm_prompt": code},
                       cmd_args=["--run_name=a=b", "--epochs=1", "--epochs=3"])
    assert config["llm_prompt"] == code and config["run_name"] == "a=b"  # kept as text; '=' in a value is fine
    assert config["epochs"] == 3  # a repeated key: the last value wins, as with argparse
    with pytest.raises(ConfigError, match="config override 'epochs=2' is not of the form --key=value"):
        LSCConfig("SASRec", "mltiny", config_dict=tiny_config, cmd_args=["epochs=2"])
    assert not marker.exists() and not other.exists()
    # literals still parse as RecBole parses them
    config = LSCConfig("SASRec", "mltiny", config_dict=tiny_config,
                       cmd_args=["--topk=[5,10]", "--learning_rate=1e-3", "--use_gpu=false", "--load_col=None"])
    assert config["topk"] == [5, 10] and config["learning_rate"] == 0.001 and config["use_gpu"] is False


def test_recbole_pickled_dataset_caches_are_ignored(tiny_config, caplog):
    marker = os.path.abspath("MARKER")
    saved = tiny_config["checkpoint_dir"]
    os.makedirs(saved, exist_ok=True)
    for name in ("mltiny-SequentialDataset.pth", "mltiny-for-SASRec-dataloader.pth"):
        with open(os.path.join(saved, name), "wb") as handle:
            pickle.dump(Payload(marker), handle)
    config = LSCConfig("SASRec", "mltiny", config_dict=tiny_config)
    with caplog.at_level(logging.WARNING):
        train, _, _ = data_preparation(config, create_dataset(config))  # the plugin's loaders
    assert not os.path.exists(marker) and len(train.dataset) > 0
    assert caplog.text.count("recbole-lsc never unpickles cached") == 2
    for key in ("dataset_save_path", "dataloaders_save_path"):
        with pytest.raises(ConfigError, match=f"'{key}' is not supported"):
            LSCConfig("SASRec", "mltiny", config_dict={**tiny_config, key: os.path.join(saved, "x.pth")})


def test_planted_pickle_in_the_trained_llm_cache_is_not_executed(tiny_config, tmp_path):
    values = {**tiny_config, **{k: TINY_LSC[k] for k in ("llm_hidden_size", "llm_layers", "llm_heads", "llm_max_len")},
              "trained_llm_cache": str(tmp_path / "llm_cache")}
    config = LSCConfig("LLMRec", "mltiny", config_dict=values)
    dataset = create_dataset(config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    path, marker = entry_path(config, llm_key(config, dataset, protocol)), tmp_path / "MARKER"
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        pickle.dump(Payload(marker), handle)
    with open(f"{path}.sha256", "w", encoding="utf-8") as handle:  # even with a matching checksum
        handle.write(hashlib.sha256(open(path, "rb").read()).hexdigest())
    assert load_trained_llm(config, dataset, protocol, LLMRec(config, dataset)) is None
    assert not marker.exists()


@pytest.fixture
def fake_smollm2(tmp_path, monkeypatch):
    """SmolLM2's GGUF file and dequantisation replaced by a tiny local Llama; returns the build log."""
    gguf = tmp_path / "wheel" / llm_backbone.SMOLLM2_GGUF
    gguf.parent.mkdir()
    gguf.write_bytes(b"v1")
    builds = []

    def build(gguf_file, folder):
        builds.append(folder)
        _save_local_llama(folder, ["a", "b"])

    monkeypatch.setattr(llm_backbone, "smollm2_gguf_path", lambda: str(gguf))
    monkeypatch.setattr(llm_backbone, "_dequantise_smollm2", build)
    return gguf, builds


def test_smollm2_cache_is_reused_checked_and_rebuilt(fake_smollm2, tmp_path, caplog):
    gguf, builds = fake_smollm2
    cache = str(tmp_path / "backbones")
    folder = llm_backbone.resolve_backbone_folder("smollm2-135m", cache)
    assert llm_backbone.resolve_backbone_folder("smollm2-135m", cache) == folder and len(builds) == 1
    model, tokenizer = llm_backbone.load_pretrained("smollm2-135m", cache, need_tokenizer=True)
    assert tokenizer is not None and len(builds) == 1  # valid cache: reused

    weights = os.path.join(folder, "model.safetensors")
    with open(weights, "r+b") as handle:  # corrupt the tensor data, keep the size
        handle.seek(os.path.getsize(weights) - 8)
        handle.write(b"\xff" * 8)
    with caplog.at_level(logging.WARNING):
        llm_backbone.load_pretrained("smollm2-135m", cache, need_tokenizer=True)
    assert len(builds) == 2 and "fails its checksum (model.safetensors)" in caplog.text

    marker = tmp_path / "MARKER"  # a swapped-in pickle: never read, the cache is rebuilt
    os.remove(weights)
    torch.save({"w": Payload(marker)}, os.path.join(folder, "pytorch_model.bin"))
    llm_backbone.load_pretrained("smollm2-135m", cache, need_tokenizer=True)
    assert len(builds) == 3 and not marker.exists()
    assert not os.path.exists(os.path.join(folder, "pytorch_model.bin"))

    gguf.write_bytes(b"v2 of the file")  # another source never shares the entry
    with caplog.at_level(logging.WARNING):
        llm_backbone.resolve_backbone_folder("smollm2-135m", cache)
    assert len(builds) == 4 and "was made from another GGUF file" in caplog.text


def test_interrupted_smollm2_build_leaves_no_cache(fake_smollm2, tmp_path, monkeypatch):
    def crash(gguf_file, folder):
        os.makedirs(folder)
        open(os.path.join(folder, "config.json"), "w").close()  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(llm_backbone, "_dequantise_smollm2", crash)
    cache = tmp_path / "backbones"
    with pytest.raises(KeyboardInterrupt):
        llm_backbone.resolve_backbone_folder("smollm2-135m", str(cache))
    assert not cache.exists() or os.listdir(cache) in ([], ["smollm2-135m.lock"])  # the lock file is not a cache


# ---------------------------------------------------------------- 3. faults
def test_crash_leaves_no_results_and_a_rerun_recovers(capsys, tmp_path, monkeypatch):
    data = write_messy(tmp_path, RUN_USERS)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # the last stage before results.json: everything else has run

    with monkeypatch.context() as patch:
        patch.setattr(lsc4rec_pipeline, "measure_cost", interrupted)
        assert cli(data, "--run_name=one") == 130
    assert "no results were written" in capsys.readouterr().err
    assert not glob.glob("R/**/*.json", recursive=True) and not glob.glob("R/**/.tmp-*", recursive=True)

    assert cli(data, "--run_name=one") == 0
    with open(os.path.join("R", "one", "results.json"), encoding="utf-8") as handle:
        payload = json.load(handle)
    assert [row["role"] for row in payload["results"]][:5] == ["srm", "llm_stale", "llm_fresh", "srm_rerank", "lsc4rec"]


def test_two_trainers_started_in_the_same_second_never_share_a_checkpoint(tmp_path):
    from recbole_lsc.utils import get_model, get_trainer

    data = write_messy(tmp_path)
    config = LSCConfig("SASRec", "syn", config_dict={**TINY_LSC, "data_path": data, "load_col": LOAD_INTER})
    dataset = create_dataset(config)
    trainer_cls = get_trainer(config["MODEL_TYPE"], "SASRec")
    files = {trainer_cls(config, get_model("SASRec")(config, dataset)).saved_model_file for _ in range(3)}
    assert len(files) == 3 and all(name.endswith(".safetensors") for name in files)


# ---------------------------------------------------------------- 4. reproducibility
def _run_twice(model, data, dataset, extra):
    outs = []
    for name in ("first", "second"):
        values = {**TINY_LSC, "data_path": data, "load_col": LOAD_INTER, "results_dir": "R", "run_name": name, **extra}
        outs.append(run_recbole_lsc(model, dataset, config_dict=values))
    payloads = []
    for out in outs:
        with open(out["path"], encoding="utf-8") as handle:
            payloads.append(json.load(handle))
    return outs, payloads


def test_same_seed_same_metrics_sasrec(tmp_path):
    outs, payloads = _run_twice("SASRec", write_messy(tmp_path, RUN_USERS), "syn", {"epochs": 2})
    assert outs[0]["rows"] == outs[1]["rows"] and outs[0]["rows"][0]["test"]["ndcg@10"] > 0
    first, second = ({k: v for k, v in p["config"].items() if k != "run_name"} for p in payloads)
    assert first == second
    assert payloads[0]["versions"] == payloads[1]["versions"]
    assert all(payloads[0]["versions"][name] for name in ("recbole-lsc", "recbole", "torch", "numpy"))


def test_same_seed_same_metrics_lsc4rec_without_llm_cache(tmp_path):
    outs, payloads = _run_twice("LSC4Rec", write_messy(tmp_path, RUN_USERS), "syn", {})
    assert outs[0]["rows"] == outs[1]["rows"]
    assert outs[0]["request_curve"] == outs[1]["request_curve"]
    assert payloads[0]["config"]["trained_llm_cache"] is None  # both runs trained their own LLM


# ---------------------------------------------------------------- 5. robust data
def test_messy_dataset_is_cleaned_as_documented(tmp_path, caplog):
    lengths = (8,) * 10 + (2, 3)
    rows = messy_rows(lengths)
    rows += [row for row in rows if row[0] == "user-0"][:3]  # three exact duplicate rows
    data = write_atomic(str(tmp_path / "data"), "syn", rows, all_titles())
    config = LSCConfig("LSC4Rec", "syn", config_dict={**TINY_LSC, "data_path": data, "load_col": LOAD_TEXT})
    srm_config = srm_config_of(config)  # the pipeline's data config
    with caplog.at_level(logging.INFO):
        dataset = create_dataset(srm_config)
    log = caplog.text
    duplicates = len(rows) - len({(u, i) for u, i, _ in rows})
    assert f"syn: {duplicates} repeated (user, item) interactions are kept as separate steps" in log
    assert "interactions are listed before an earlier one of the same user; each user's sequence is sorted by timestamp" in log
    assert f"syn: filtering dropped 2 of 12 users and 5 of {len(rows)} interactions" in log

    # string ids: each user's sequence is its items sorted by timestamp (file order for ties)
    sequences = user_sequences(dataset)
    for user in ("user-0", "user-7"):
        mine = sorted((stamp, n) for n, (u, _, stamp) in enumerate(rows) if u == user)
        expected = [rows[n][1] for _, n in mine]
        assert list(dataset.id2token("item_id", sequences[dataset.token2id("user_id", user)])) == expected
    assert "user-10" not in dataset.field2id_token["user_id"]  # the 2-interaction user was dropped
    titles = item_titles(dataset, "movie_title")
    assert titles[dataset.token2id("item_id", "it 4")] == "Title 4" and titles[dataset.token2id("item_id", "it 3")] == ""

    # the protocol and RecBole's split see the same users and targets
    protocol = DeviceCloudProtocol.from_dataset(dataset, 2)
    _, valid_data, test_data = data_preparation(srm_config, dataset)
    for phase, loader in (("valid", valid_data), ("test", test_data)):
        samples = protocol.samples(phase)
        feat = loader.dataset.inter_feat
        assert sorted(zip(samples.user, protocol.targets(samples))) == sorted(zip(feat["user_id"].tolist(), feat["item_id"].tolist()))


def test_duplicates_can_be_dropped(tmp_path, caplog):
    rows = messy_rows((8,) * 6)
    data = write_atomic(str(tmp_path / "data"), "syn", rows + rows[:4], None)
    config = LSCConfig("SASRec", "syn", config_dict={**TINY_LSC, "data_path": data, "load_col": LOAD_INTER, "rm_dup_inter": "first"})
    with caplog.at_level(logging.INFO):
        dataset = create_dataset(config)
    assert "rm_dup_inter: first dropped repeated (user, item) interactions" in caplog.text
    assert dataset.inter_num == len({(u, i) for u, i, _ in rows})
