"""Re-training on each device alone: a device's copy, its fused list, its request features and
its row contribution depend on its own data only (``retrain_scope: device``), and on everyone's
with one model for the fleet (``fleet``)."""

import numpy as np
import pytest
import torch

from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.config import srm_config_of
from recbole_lsc.data.loading import create_dataset
from recbole_lsc.device.per_device import PerDeviceSRM
from recbole_lsc.experiment.collaboration import Collaboration, phase_lists
from recbole_lsc.experiment.lists import CloudLists
from recbole_lsc.experiment.stages import FineTuningStages, replay_rows
from recbole_lsc.lsc4rec import LSC4Rec
from recbole_lsc.protocol import DeviceCloudProtocol
from recbole_lsc.quick_start import build_config
from recbole_lsc.utils import get_model
from tests.test_lsc4rec import TINY

A, B = 3, 5  # user ids (RecBole's internal ids start at 1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A config, the untrained cloud and device SRM of a 30-user dataset, and its protocol."""
    from tests.conftest import write_tiny_ml100k

    folder = tmp_path_factory.mktemp("scope")
    write_tiny_ml100k(str(folder), n_users=30)
    config = build_config("LSC4Rec", "mltiny", config_dict={
        **TINY, "data_path": str(folder), "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "state": "ERROR", "show_progress": False, "use_gpu": False, "seed": 7, "retrain_epochs": 2,
        "stage_selection": "always", "fusion_alpha": 0.5, "retrain_learning_rate": 0.01,
        "checkpoint_dir": str(folder / "saved")})
    srm_config = srm_config_of(config)
    dataset = create_dataset(srm_config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    model = LSC4Rec(config, dataset, get_model("SASRec"), srm_config)
    cloud = InProcessCloud(model.llm.eval(), config["eval_batch_size"], "cpu")
    return config, cloud, model.srm, protocol


def perturbed(protocol, user):
    """``protocol`` with ``user``'s fresh window (the targets the cloud has not seen) replaced."""
    sequences = [protocol.items[start : start + length].copy() for start, length in
                 zip(protocol.offsets, protocol.lengths)]
    retrain = protocol.samples("retrain")
    n_items = int(protocol.items.max())
    for position in retrain.position[retrain.user == user]:
        sequences[user][position] = sequences[user][position] % n_items + 1
    return DeviceCloudProtocol(sequences, protocol.cloud_lag)


def device_view(config, cloud, start, protocol, scope, mode):
    """What the devices compute after re-training: ``(srm, {phase: Collaboration inputs})``."""
    lists = CloudLists(cloud, protocol, config)
    srm, _ = FineTuningStages(config, lists, protocol).retraining(start, mode, scope)
    valid, test = (phase_lists(srm, lists, protocol, phase, config, mode) for phase in ("valid", "test"))
    return srm, Collaboration(config, valid, test)


def row_of(protocol, user):
    return int(np.flatnonzero(protocol.samples("test").user == user)[0])


@pytest.mark.parametrize("mode", ["candidates", "full"])
def test_a_device_learns_from_its_own_data_alone(world, mode):
    config, cloud, start, protocol = world
    other = perturbed(protocol, B)
    assert not np.array_equal(other.items, protocol.items)
    for scope in ("device", "fleet"):
        srm, collab = device_view(config, cloud, start, protocol, scope, mode)
        srm_b, collab_b = device_view(config, cloud, start, other, scope, mode)
        a = row_of(protocol, A)
        same = {
            "weights": None,
            "scores": torch.equal(collab.phases["test"].lists.stale_srm[a], collab_b.phases["test"].lists.stale_srm[a]),
            "features": all(np.array_equal(collab.phases["test"].columns[name][a],
                                           collab_b.phases["test"].columns[name][a], equal_nan=True)
                            for name in collab.feature_names),
            "priority": collab.priority("consistency", 0.1, "test", 7)[a] == collab_b.priority("consistency", 0.1,
                                                                                               "test", 7)[a],
            "rank": all(torch.equal(collab.ranks["test"][age][a], collab_b.ranks["test"][age][a])
                        for age in ("stale", "fresh")),
        }
        if scope == "device":
            assert isinstance(srm, PerDeviceSRM) and isinstance(srm_b, PerDeviceSRM)
            same["weights"] = torch.equal(srm.vector_of(A), srm_b.vector_of(A))
            assert not torch.equal(srm.vector_of(B), srm_b.vector_of(B))  # B's own copy did change
            assert all(same.values()), same  # bit-identical for A
        else:
            same["weights"] = all(torch.equal(x, y) for x, y in zip(srm.parameters(), srm_b.parameters()))
            assert not same["weights"] and not same["scores"]  # the fleet's model learnt from B's window


def test_the_per_device_srm_scores_each_row_with_its_users_copy(world):
    config, cloud, start, protocol = world
    srm, _ = device_view(config, cloud, start, protocol, "device", "candidates")
    samples = protocol.samples("test")
    batch = protocol.interaction(samples, "fresh", srm.max_len, srm.fields)
    ids = torch.randint(1, int(protocol.items.max()) + 1, (len(samples), 5))
    together = srm.score_lists(batch, ids, 7, "cpu")
    for row in (0, row_of(protocol, A), len(samples) - 1):
        alone = srm.for_user(samples.user[row]).score_lists(batch[[row]], ids[[row]], 7, "cpu")
        assert torch.equal(together[row], alone[0])
    assert not torch.equal(srm.vector_of(A), srm.vector_of(B))


def test_replay_with_a_ratio_draws_from_each_devices_own_history(world):
    _, _, _, protocol = world
    older = protocol.samples("llm_train")
    fresh = np.bincount(protocol.samples("retrain").user, minlength=len(protocol.lengths))
    rows = replay_rows(protocol, 3, 7, "device")
    assert np.array_equal(np.bincount(older.user[rows], minlength=len(fresh)),
                          np.minimum(3 * fresh, np.bincount(older.user, minlength=len(fresh))))
    assert np.array_equal(replay_rows(protocol, "all", 7, "device"), np.arange(len(older)))
    # a device's draw does not depend on another's history
    other = perturbed(protocol, B)
    assert np.array_equal(rows[older.user[rows] == A],
                          replay_rows(other, 3, 7, "device")[older.user[rows] == A])
