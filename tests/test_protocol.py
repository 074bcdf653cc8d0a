"""The device-cloud protocol, checked item by item against its definitions.

For a user sequence s of length n (0-based positions p; a sample's target is s[p], its
fresh history s[:p], its stale history s[:max(p - g, 0)]):
test p = n-1; valid p = n-2; train p in 1..n-3; llm_train p in 1..n-3-g;
retrain p in max(n-2-g, 1)..n-3.
"""

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_lsc.protocol import PHASES, DeviceCloudProtocol, Samples

# user 0 is the padding user; user 1: n = 7, user 2: n = 5, user 3: n = 3 (no training sample)
SEQUENCES = [
    np.zeros(0, dtype=np.int64),
    np.array([11, 12, 13, 14, 15, 16, 17]),
    np.array([21, 22, 23, 24, 25]),
    np.array([31, 32, 33]),
]
FIELDS = {"user": "user_id", "item": "item_id", "item_seq": "item_id_list", "item_seq_len": "item_length"}


def pairs(protocol, phase):
    samples = protocol.samples(phase)
    return list(zip(samples.user.tolist(), protocol.targets(samples).tolist()))


def select(protocol, phase, user, target):
    """The one sample of ``phase`` for ``user`` whose target is ``target``."""
    samples = protocol.samples(phase)
    hit = (samples.user == user) & (protocol.targets(samples) == target)
    assert hit.sum() == 1, (phase, user, target)
    return Samples(user=samples.user[hit], position=samples.position[hit])


def test_phase_samples_g2():
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=2)
    # test: p = n-1 -> the last item of every user with a history
    assert pairs(protocol, "test") == [(1, 17), (2, 25), (3, 33)]
    # valid: p = n-2 -> user 1: p=5 (16), user 2: p=3 (24), user 3: p=1 (32)
    assert pairs(protocol, "valid") == [(1, 16), (2, 24), (3, 32)]
    # train: p = 1..n-3 -> user 1: 1..4, user 2: 1..2, user 3: 1..0 (none)
    assert pairs(protocol, "train") == [(1, 12), (1, 13), (1, 14), (1, 15), (2, 22), (2, 23)]
    # llm_train: p = 1..n-5 -> user 1: 1..2, user 2: 1..0 (none), user 3: none
    assert pairs(protocol, "llm_train") == [(1, 12), (1, 13)]
    # retrain: p = max(n-4, 1)..n-3 -> user 1: 3..4, user 2: 1..2, user 3: 1..0 (none)
    assert pairs(protocol, "retrain") == [(1, 14), (1, 15), (2, 22), (2, 23)]
    # positions, not just targets
    assert protocol.samples("train").position.tolist() == [1, 2, 3, 4, 1, 2]
    assert protocol.samples("retrain").position.tolist() == [3, 4, 1, 2]
    for phase in PHASES:
        assert 0 not in protocol.samples(phase).user.tolist()  # padding user has no sample


def test_llm_train_and_retrain_partition_train():
    for g in range(0, 6):
        protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=g)
        train = sorted(pairs(protocol, "train"))
        split = sorted(pairs(protocol, "llm_train") + pairs(protocol, "retrain"))
        # with g >= 1 the two are disjoint and cover train exactly (user 2, n=5, g=2 is the
        # edge case where llm_train is empty and retrain is all of train)
        if g > 0:
            assert split == train, g
    # g = 4: llm_train p in 1..0 for user 1 -> empty; retrain p in max(1,1)..4 -> all of train
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=4)
    assert pairs(protocol, "llm_train") == []
    assert pairs(protocol, "retrain") == pairs(protocol, "train")


def test_g0_llm_train_is_train_and_retrain_empty():
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=0)
    assert pairs(protocol, "llm_train") == pairs(protocol, "train")
    assert protocol.samples("llm_train").position.tolist() == protocol.samples("train").position.tolist()
    assert len(protocol.samples("retrain")) == 0
    assert protocol.samples("retrain").user.shape == (0,)
    # with g = 0 the stale history is the fresh one
    samples = protocol.samples("test")
    fresh = protocol.history(samples, "fresh", 10)
    stale = protocol.history(samples, "stale", 10)
    assert np.array_equal(fresh[0], stale[0]) and np.array_equal(fresh[1], stale[1])


def test_history_user1_test_sample():
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=2)
    s = select(protocol, "test", 1, 17)  # p = 6
    # fresh = s[:6] = 11..16 ; stale = s[:4] = 11..14
    seq, length = protocol.history(s, "fresh", 3)
    assert seq.tolist() == [[14, 15, 16]] and length.tolist() == [3]
    seq, length = protocol.history(s, "fresh", 10)
    assert seq.tolist() == [[11, 12, 13, 14, 15, 16, 0, 0, 0, 0]] and length.tolist() == [6]
    seq, length = protocol.history(s, "stale", 3)
    assert seq.tolist() == [[12, 13, 14]] and length.tolist() == [3]
    seq, length = protocol.history(s, "stale", 10)
    assert seq.tolist() == [[11, 12, 13, 14, 0, 0, 0, 0, 0, 0]] and length.tolist() == [4]
    assert seq.dtype == np.int64 and length.dtype == np.int64


def test_history_batch_of_several_users():
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=2)
    samples = protocol.samples("valid")  # (1, p=5), (2, p=3), (3, p=1)
    # fresh: s1[:5]=11..15, s2[:3]=21..23, s3[:1]=31
    seq, length = protocol.history(samples, "fresh", 3)
    assert seq.tolist() == [[13, 14, 15], [21, 22, 23], [31, 0, 0]]
    assert length.tolist() == [3, 3, 1]
    seq, length = protocol.history(samples, "fresh", 10)
    assert seq.tolist() == [
        [11, 12, 13, 14, 15, 0, 0, 0, 0, 0],
        [21, 22, 23, 0, 0, 0, 0, 0, 0, 0],
        [31, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert length.tolist() == [5, 3, 1]
    # stale: s1[:3]=11..13, s2[:1]=21, s3[:max(-1,0)] = empty
    seq, length = protocol.history(samples, "stale", 3)
    assert seq.tolist() == [[11, 12, 13], [21, 0, 0], [0, 0, 0]]
    assert length.tolist() == [3, 1, 0]
    seq, length = protocol.history(samples, "stale", 10)
    assert seq.tolist() == [
        [11, 12, 13, 0, 0, 0, 0, 0, 0, 0],
        [21, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0] * 10,
    ]
    assert length.tolist() == [3, 1, 0]


def test_history_train_samples_user2():
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=2)
    s = select(protocol, "train", 2, 23)  # p = 2: fresh = [21, 22], stale = s[:0] = []
    seq, length = protocol.history(s, "fresh", 3)
    assert seq.tolist() == [[21, 22, 0]] and length.tolist() == [2]
    seq, length = protocol.history(s, "stale", 3)
    assert seq.tolist() == [[0, 0, 0]] and length.tolist() == [0]
    s = select(protocol, "retrain", 1, 15)  # p = 4: fresh = 11..14, stale = s[:2] = [11, 12]
    seq, length = protocol.history(s, "fresh", 3)
    assert seq.tolist() == [[12, 13, 14]] and length.tolist() == [3]
    seq, length = protocol.history(s, "stale", 10)
    assert seq.tolist() == [[11, 12] + [0] * 8] and length.tolist() == [2]


def test_history_of_no_samples():
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=0)
    seq, length = protocol.history(protocol.samples("retrain"), "fresh", 4)
    assert seq.shape == (0, 4) and length.shape == (0,)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="cloud_lag"):
        DeviceCloudProtocol(SEQUENCES, cloud_lag=-1)
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=2)
    with pytest.raises(ValueError, match="phase"):
        protocol.samples("pretrain")
    with pytest.raises(ValueError, match="view"):
        protocol.history(protocol.samples("test"), "future", 3)
    with pytest.raises(ValueError, match="view"):
        protocol.interaction(protocol.samples("test"), "both", 3, FIELDS)


def test_interaction_fields_and_values():
    protocol = DeviceCloudProtocol(SEQUENCES, cloud_lag=2)
    inter = protocol.interaction(protocol.samples("test"), "stale", 3, FIELDS)
    assert isinstance(inter, Interaction)
    assert set(inter.columns) == set(FIELDS.values())
    assert len(inter) == 3
    assert inter["user_id"].tolist() == [1, 2, 3]
    assert inter["item_id"].tolist() == [17, 25, 33]
    # stale histories of the test samples: s1[:4] -> newest 3 = 12..14, s2[:2] = [21, 22], s3[:0]
    assert inter["item_id_list"].tolist() == [[12, 13, 14], [21, 22, 0], [0, 0, 0]]
    assert inter["item_length"].tolist() == [3, 2, 0]
    for field in FIELDS.values():
        assert inter[field].dtype == torch.int64


# ---------------------------------------------------------------- a real RecBole dataset
def _rows_by_user(inter_feat):
    users = inter_feat["user_id"].numpy()
    return {int(u): i for i, u in enumerate(users)}, users


def _assert_matches_recbole(protocol, train_data, valid_data, test_data, max_len):
    for phase, loader in (("test", test_data), ("valid", valid_data)):
        feat = loader._dataset.inter_feat
        row_of, users = _rows_by_user(feat)
        assert len(row_of) == len(users)  # one sample per user in valid/test
        samples = protocol.samples(phase)
        assert sorted(samples.user.tolist()) == sorted(row_of)
        seq, length = protocol.history(samples, "fresh", max_len)
        targets = protocol.targets(samples)
        rows = np.array([row_of[int(u)] for u in samples.user])
        assert np.array_equal(targets, feat["item_id"].numpy()[rows]), phase
        assert np.array_equal(length, feat["item_length"].numpy()[rows]), phase
        assert np.array_equal(seq, feat["item_id_list"].numpy()[rows]), phase

    # training samples: same count, and per user the same samples in the same order
    feat = train_data._dataset.inter_feat
    samples = protocol.samples("train")
    assert len(samples) == len(train_data._dataset)
    order = np.argsort(feat["user_id"].numpy(), kind="stable")
    assert np.array_equal(samples.user, feat["user_id"].numpy()[order])
    assert np.array_equal(protocol.targets(samples), feat["item_id"].numpy()[order])
    seq, length = protocol.history(samples, "fresh", max_len)
    assert np.array_equal(length, feat["item_length"].numpy()[order])
    assert np.array_equal(seq, feat["item_id_list"].numpy()[order])


def _recbole_data(tiny_config):
    from recbole_lsc.data.loading import create_dataset

    from recbole_lsc.config import LSCConfig

    config = LSCConfig(model="SASRec", dataset="mltiny", config_dict=tiny_config)
    return config, create_dataset(config)


def test_from_dataset_after_data_preparation_matches_recbole(tiny_config):
    from recbole_lsc.data.loading import data_preparation

    config, dataset = _recbole_data(tiny_config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    protocol = DeviceCloudProtocol.from_dataset(dataset, cloud_lag=2)
    assert protocol.cloud_lag == 2
    assert len(protocol.lengths) == dataset.user_num
    _assert_matches_recbole(protocol, train_data, valid_data, test_data, config["MAX_ITEM_LIST_LENGTH"])
    # the g-split of train is consistent on real data too
    assert len(protocol.samples("llm_train")) + len(protocol.samples("retrain")) == len(protocol.samples("train"))


def test_from_dataset_before_data_preparation_matches_recbole(tiny_config):
    """``user_sequences`` documents that it works before ``dataset.build()`` too."""
    from recbole_lsc.data.loading import data_preparation

    config, dataset = _recbole_data(tiny_config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, cloud_lag=2)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    _assert_matches_recbole(protocol, train_data, valid_data, test_data, config["MAX_ITEM_LIST_LENGTH"])
