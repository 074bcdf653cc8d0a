"""Safetensors checkpoints: round trip, refusal of foreign/corrupt/malicious files, trainer use."""

import glob
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from conftest import write_tiny_ml100k
from recbole_lsc.checkpoint import META_KEY, load_checkpoint, optimizer_path, read_meta, save_checkpoint
from recbole_lsc.errors import CheckpointError


class Tiny(torch.nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.linear = torch.nn.Linear(width, 2)
        self.embedding = torch.nn.Embedding(5, width, padding_idx=0)


class OtherTiny(Tiny):
    pass


class Payload:
    """Unpickling this runs ``open(path, 'w')``: it would create the marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class ShellPayload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def plant_pickle(path, payload):
    with open(path, "wb") as handle:
        pickle.dump(payload, handle)


def seeded(cls=Tiny, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(**kwargs)


def no_tmp_files(folder):
    return [name for name in os.listdir(folder) if ".tmp-" in name]


def test_round_trip(tmp_path):
    path = str(tmp_path / "ck" / "tiny.safetensors")
    model = seeded(seed=0)
    save_checkpoint(path, model, meta={"epoch": 4, "best_valid_score": 0.25})
    assert os.path.isfile(path)
    assert not os.path.exists(optimizer_path(path))  # no optimizer given, no optimizer file

    fresh = seeded(seed=1)
    assert not torch.equal(fresh.linear.weight, model.linear.weight)
    meta = load_checkpoint(path, fresh)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert meta["epoch"] == 4 and meta["best_valid_score"] == 0.25
    assert meta["model"] == "Tiny"
    assert read_meta(path) == meta
    assert no_tmp_files(os.path.dirname(path)) == []


def test_round_trip_with_optimizer(tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    model = seeded()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.linear(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(path, model, meta={"epoch": 0}, optimizer=optimizer)
    assert optimizer_path(path) == str(tmp_path / "tiny.optim.pt")
    assert os.path.isfile(optimizer_path(path))
    assert no_tmp_files(str(tmp_path)) == []

    fresh = seeded(seed=3)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.5)
    load_checkpoint(path, fresh, optimizer=fresh_opt)
    assert fresh_opt.param_groups[0]["lr"] == 0.01
    saved_state = optimizer.state_dict()["state"]
    loaded_state = fresh_opt.state_dict()["state"]
    assert saved_state.keys() == loaded_state.keys() and len(saved_state) > 0
    for key in saved_state:
        assert torch.equal(saved_state[key]["exp_avg"], loaded_state[key]["exp_avg"])


def test_overwrite_keeps_one_file_and_newest_content(tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    save_checkpoint(path, seeded(seed=0), meta={"epoch": 0})
    newer = seeded(seed=5)
    save_checkpoint(path, newer, meta={"epoch": 1})
    assert read_meta(path)["epoch"] == 1
    fresh = seeded(seed=9)
    load_checkpoint(path, fresh)
    assert torch.equal(fresh.linear.weight, newer.linear.weight)
    assert sorted(os.listdir(tmp_path)) == ["tiny.safetensors"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_meta(str(tmp_path / "nope.safetensors"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope.safetensors"), Tiny())


def test_random_bytes_are_refused(tmp_path):
    path = str(tmp_path / "junk.safetensors")
    with open(path, "wb") as handle:
        handle.write(os.urandom(256))
    with pytest.raises(CheckpointError, match="corrupt"):
        read_meta(path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path, Tiny())


@pytest.mark.parametrize("keep", [4, 20, "half", "minus1"])
def test_truncated_checkpoint_is_refused(tmp_path, keep):
    path = str(tmp_path / "tiny.safetensors")
    save_checkpoint(path, seeded(), meta={"epoch": 0})
    with open(path, "rb") as handle:
        data = handle.read()
    cut = {"half": len(data) // 2, "minus1": len(data) - 1}.get(keep, keep)
    with open(path, "wb") as handle:
        handle.write(data[:cut])
    model = seeded(seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError):
        load_checkpoint(path, model)
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value)  # nothing half-loaded


def test_plain_safetensors_without_header_is_refused(tmp_path):
    path = str(tmp_path / "plain.safetensors")
    save_file({k: v.contiguous() for k, v in seeded().state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="not written by recbole-lsc"):
        read_meta(path)
    with pytest.raises(CheckpointError, match="not written by recbole-lsc"):
        load_checkpoint(path, Tiny())
    # some other metadata, but not ours
    save_file({"w": torch.zeros(2)}, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not written by recbole-lsc"):
        read_meta(path)


def test_corrupt_header_is_refused(tmp_path):
    path = str(tmp_path / "bad.safetensors")
    save_file({"w": torch.zeros(2)}, path, metadata={META_KEY: "{not json"})
    with pytest.raises(CheckpointError, match="corrupt header"):
        read_meta(path)


def test_other_model_class_is_refused(tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    save_checkpoint(path, seeded(Tiny), meta={"epoch": 0})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, OtherTiny())
    assert "Tiny" in str(info.value) and "OtherTiny" in str(info.value)


def test_same_class_other_shape_is_refused_and_leaves_the_model_untouched(tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    saved = seeded(Tiny, width=3)
    saved.linear = torch.nn.Linear(4, 2)  # 'linear' no longer fits a width-4 model, 'embedding' does not either
    saved.embedding = torch.nn.Embedding(5, 4, padding_idx=0)
    saved.linear.bias.data.fill_(7.0)  # same shape as the target's bias: safetensors alone would copy it
    save_checkpoint(path, saved, meta={"epoch": 0})
    target = seeded(Tiny, width=3)
    before = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(path, target)
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_expected_header_entries_are_checked(tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    save_checkpoint(path, seeded(Tiny), meta={"key": "abc"})
    assert load_checkpoint(path, Tiny(), expect={"key": "abc"})["key"] == "abc"
    with pytest.raises(CheckpointError, match="expected 'xyz'"):
        load_checkpoint(path, Tiny(), expect={"key": "xyz"})


@pytest.mark.parametrize("payload_cls", [Payload, ShellPayload])
def test_malicious_pickle_checkpoint_is_not_executed(tmp_path, payload_cls):
    marker = tmp_path / "MARKER"
    path = str(tmp_path / "model.safetensors")
    plant_pickle(path, payload_cls(str(marker)))
    # sanity: the payload really does create the marker when unpickled
    probe = tmp_path / "PROBE"
    pickle.loads(pickle.dumps(payload_cls(str(probe))))
    assert probe.exists()

    with pytest.raises(CheckpointError):
        read_meta(path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path, Tiny())
    assert not marker.exists()


@pytest.mark.parametrize("payload_cls", [Payload, ShellPayload])
def test_malicious_optimizer_state_is_not_executed(tmp_path, payload_cls):
    marker = tmp_path / "MARKER"
    path = str(tmp_path / "model.safetensors")
    model = seeded()
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(path, model, meta={"epoch": 0}, optimizer=optimizer)
    # both the legacy pickle format and torch's zip format carrying the payload
    plant_pickle(optimizer_path(path), payload_cls(str(marker)))
    with pytest.raises(CheckpointError, match="optimizer state"):
        load_checkpoint(path, seeded(), optimizer=torch.optim.Adam(model.parameters()))
    assert not marker.exists()

    torch.save({"state": payload_cls(str(marker))}, optimizer_path(path))
    assert not marker.exists()  # saving does not run it
    with pytest.raises(CheckpointError, match="optimizer state"):
        load_checkpoint(path, seeded(), optimizer=torch.optim.Adam(model.parameters()))
    assert not marker.exists()


def test_missing_optimizer_state(tmp_path):
    path = str(tmp_path / "model.safetensors")
    model = seeded()
    save_checkpoint(path, model, meta={"epoch": 0})
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path, seeded(), optimizer=torch.optim.Adam(model.parameters()))


# ---------------------------------------------------------------- the trainer
def test_trainer_saves_safetensors_and_resumes(tiny_config, tmp_path):
    from recbole_lsc.data.loading import create_dataset, data_preparation
    from recbole.utils import ModelType, init_seed

    from recbole_lsc.config import LSCConfig
    from recbole_lsc.safe_trainer import SafeCheckpointMixin
    from recbole_lsc.utils import get_model, get_trainer

    # 12 users (~1.3k interactions): one epoch is a handful of batches
    small = write_tiny_ml100k(str(tmp_path / "small"), n_users=12)
    values = dict(tiny_config, data_path=os.path.dirname(small), epochs=1, hidden_size=16, inner_size=32)
    config = LSCConfig("SASRec", "mltiny", config_dict=values)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model("SASRec")(config, train_data._dataset)

    trainer_cls = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(trainer_cls, SafeCheckpointMixin)
    assert get_trainer(ModelType.SEQUENTIAL, "SASRec") is trainer_cls  # one class per base
    trainer = trainer_cls(config, model)
    assert trainer.saved_model_file.endswith(".safetensors")
    assert os.path.dirname(trainer.saved_model_file) == tiny_config["checkpoint_dir"]

    best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    path = trainer.saved_model_file
    assert os.path.isfile(path) and os.path.isfile(optimizer_path(path))
    assert glob.glob(os.path.join(tiny_config["checkpoint_dir"], "*.pth")) == []  # no pickled checkpoint
    assert no_tmp_files(tiny_config["checkpoint_dir"]) == []
    meta = read_meta(path)
    assert meta["model"] == "SASRec" and meta["epoch"] == 0
    assert meta["best_valid_score"] == pytest.approx(best_score)

    test_result = trainer.evaluate(test_data, load_best_model=True)
    assert 0.0 <= test_result["hit@10"] <= 1.0
    assert test_result["ndcg@10"] <= test_result["hit@10"]

    # evaluate reloads the saved weights: perturb the model, evaluate again, same metrics
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    again = trainer.evaluate(test_data, load_best_model=True)
    assert dict(again) == dict(test_result)

    # a fresh trainer resumes from the file: epoch, step, score, weights and optimizer
    init_seed(config["seed"] + 1, config["reproducibility"])
    other_model = get_model("SASRec")(config, train_data._dataset)
    other = trainer_cls(config, other_model)
    assert other.start_epoch == 0
    other.resume_checkpoint(path)
    assert other.start_epoch == meta["epoch"] + 1 == 1
    assert other.cur_step == meta["cur_step"]
    assert other.best_valid_score == pytest.approx(best_score)
    assert other.saved_model_file == path
    reference = trainer_cls(config, get_model("SASRec")(config, train_data._dataset))
    load_checkpoint(path, reference.model)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(other_model.state_dict()[key], value), key
    assert len(other.optimizer.state_dict()["state"]) > 0  # Adam moments restored
