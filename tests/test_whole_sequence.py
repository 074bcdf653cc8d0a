"""Whole-sequence SRM training: its windows cover each target once with the promised context,
stride 1 is RecBole's loss exactly, the trainer early-stops and keeps its best epoch, and the
SRM store gives back the same model without training it again."""

import numpy as np
import pytest
import torch
from recbole.model.sequential_recommender import GRU4Rec, SASRec

from recbole_lsc.data.loading import create_dataset, data_preparation
from recbole_lsc.device.sequence_trainer import WholeSequenceTrainer
from recbole_lsc.device.srm import DeviceSRM
from recbole_lsc.device.whole_sequence import supports_whole_sequence, target_windows, window_loss
from recbole_lsc.config import LSCConfig
from recbole_lsc.errors import ConfigError
from recbole_lsc.protocol import DeviceCloudProtocol
from recbole_lsc.quick_start import run_recbole_lsc


def toy_protocol():
    """Three users of lengths 15, 6 and 4 over items 1..20, cloud lag 2."""
    sequences = [np.zeros(0, dtype=np.int64), np.arange(1, 16), np.array([3, 5, 7, 9, 11, 13]), np.array([2, 4, 6, 8])]
    return DeviceCloudProtocol(sequences, cloud_lag=2)


def window_samples(items, firsts):
    """``(history tuple, target)`` of every target a batch of windows scores."""
    pairs = []
    for row, first in zip(items, firsts):
        length = int((row > 0).sum())
        for position in range(first, length):
            pairs.append((tuple(row[:position]), int(row[position])))
    return pairs


@pytest.mark.parametrize("phase", ["train", "llm_train"])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_windows_score_each_target_once_with_its_context(phase, stride):
    protocol, max_len = toy_protocol(), 4
    items, firsts = target_windows(protocol, phase, max_len, stride)
    got = window_samples(items, firsts)
    samples = protocol.samples(phase)
    histories, lengths = protocol.history(samples, "fresh", max_len)
    targets = protocol.targets(samples)
    assert len(got) == len(samples)  # each target exactly once
    expected = {}
    for history, length, target, position in zip(histories, lengths, targets, samples.position):
        expected[(tuple(history[:length]), int(target))] = position
    for history, target in got:
        # the window's history is the newest items before the target, at least max_len + 1 - stride of them
        match = [key for key in expected if key[1] == target and key[0][len(key[0]) - len(history):] == history]
        assert match, (history, target)
        full = max(match, key=lambda key: len(key[0]))
        assert len(history) >= min(len(full[0]), max_len + 1 - stride)
    if stride == 1:
        assert sorted(got) == sorted(expected)  # RecBole's samples, history for history


def test_window_stride_is_checked():
    with pytest.raises(ValueError, match="stride must be between 1 and 4"):
        target_windows(toy_protocol(), "train", 4, 5)


def recbole_dataset(tiny_config, model):
    config = LSCConfig(model, "mltiny", config_dict={**tiny_config, "MAX_ITEM_LIST_LENGTH": 5})
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    return config, dataset, train_data


@pytest.mark.parametrize("model_class", [SASRec, GRU4Rec])
def test_stride_one_loss_equals_recbole_loss(tiny_config, model_class):
    config, dataset, train_data = recbole_dataset(tiny_config, model_class.__name__)
    torch.manual_seed(0)
    model = model_class(config, train_data._dataset).eval()  # no dropout: the two passes must agree
    assert supports_whole_sequence(model, config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, 2)
    items, firsts = target_windows(protocol, "train", 5, 1)
    fields = {"user": model.USER_ID, "item": model.ITEM_ID, "item_seq": model.ITEM_SEQ,
              "item_seq_len": model.ITEM_SEQ_LEN}
    with torch.no_grad():
        whole = window_loss(model, torch.from_numpy(items), torch.from_numpy(firsts))
        stock = model.calculate_loss(protocol.interaction(protocol.samples("train"), "fresh", 5, fields))
    assert whole.item() == pytest.approx(stock.item(), rel=1e-5)


def test_bpr_backbones_keep_recbole_trainer(tiny_config):
    config, _, train_data = recbole_dataset(tiny_config, "SASRec")
    config["loss_type"] = "BPR"
    assert not supports_whole_sequence(SASRec(config, train_data._dataset), config)


class ScriptedValidation:
    """Validation values from a script, one call per validation; records the SRM's weights."""

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def __call__(self, srm):
        self.seen.append(srm.model.item_embedding.weight.detach().clone())
        return np.array([self.scores.pop(0)])


def test_trainer_early_stops_and_keeps_its_best_epoch(tiny_config):
    config, dataset, train_data = recbole_dataset(tiny_config, "SASRec")
    config["epochs"], config["stopping_step"], config["eval_step"] = 20, 2, 1
    srm = DeviceSRM(SASRec(config, train_data._dataset), config, dataset)
    validate = ScriptedValidation([0.1, 0.3, 0.2, 0.25, 0.29, 0.5])
    trainer = WholeSequenceTrainer(srm, config, validate, stride=3)
    best = trainer.fit(DeviceCloudProtocol.from_dataset(dataset, 2), "train")
    # best at epoch 1; epochs 2, 3 and 4 do not improve: RecBole stops after stopping_step + 1 of them
    assert best == pytest.approx(0.3) and trainer.best_epoch == 1 and trainer.epochs_trained == 4 + 1
    assert torch.equal(srm.model.item_embedding.weight, validate.seen[1])
    log = trainer.log()
    assert log["trainer"] == "sequence" and log["epochs_trained"] == 5 and log["best_epoch"] == 1


def lsc4rec_config(tiny_config, **extra):
    return {**tiny_config, "epochs": 2, "llm_epochs": 1, "coop_epochs": 1, "retrain_epochs": 1,
            "device_catalogue": ["candidates"], "request_curve_ratios": [0.0, 1.0], "llm_hidden_size": 16,
            "trained_srm_cache": str(tiny_config["checkpoint_dir"]) + "/srm_store", **extra}


@pytest.mark.parametrize("trainer", ["sequence", "recbole"])
def test_srm_store_reuses_the_trained_srms(tiny_config, trainer):
    config = lsc4rec_config(tiny_config, srm_trainer=trainer)
    first = run_recbole_lsc("LSC4Rec", "mltiny", config_dict=config)
    second = run_recbole_lsc("LSC4Rec", "mltiny", config_dict=config)
    stages = second["runs"][0]["stages"]
    assert "cached" in stages["srm"] and "cached" in stages["device_srm"]
    assert stages["srm"]["trainer"] == trainer
    rows = {row["name"]: row for row in first["rows"]}
    for row in second["rows"]:
        assert row["test"] == rows[row["name"]]["test"], row["name"]
    srm_row = next(row for row in second["rows"] if row["role"] == "srm")
    assert srm_row["srm_trainer"] == trainer


def test_stride_larger_than_the_window_is_refused(tiny_config):
    with pytest.raises(ConfigError, match="srm_window_stride .11. must be at most MAX_ITEM_LIST_LENGTH .10."):
        run_recbole_lsc("LSC4Rec", "mltiny", config_dict=lsc4rec_config(tiny_config, srm_window_stride=11))
