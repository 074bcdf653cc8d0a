"""What the device holds: with ``device_catalogue: candidates`` nothing the device computes may
depend on items outside its lists and its history; with ``full`` alpha = 0 is the SRM's own
ranking. And the training windows: the device SRM's first training never sees a fresh-window
target, re-training sees exactly those."""

import numpy as np
import pytest
import torch

from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.experiment.lists import CloudLists
from recbole_lsc.experiment.lsc4rec import collaboration, load_data, srm_ranks
import recbole_lsc.experiment.stages as stages_module
from recbole_lsc.experiment.stages import FineTuningStages, _fine_tuning_samples, cloud_window_loader, replay_rows
from recbole_lsc.lsc4rec import LSC4Rec
from recbole_lsc.quick_start import build_config
from recbole_lsc.utils import get_model
from tests.conftest import write_tiny_ml100k

TINY = {"llm_hidden_size": 16, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 8, "candidate_num": 20,
        "request_curve_ratios": [0.0, 0.1, 0.3, 1.0]}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    folder = tmp_path_factory.mktemp("boundary")
    write_tiny_ml100k(str(folder), n_users=40)
    config = build_config("LSC4Rec", "mltiny", config_dict={
        **TINY, "data_path": str(folder), "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "state": "ERROR", "show_progress": False, "use_gpu": False, "eval_batch_size": 256, "seed": 3,
        "checkpoint_dir": str(folder / "saved")})
    data = load_data(config)
    model = LSC4Rec(config, data.dataset, get_model("SASRec"), data.srm_config).eval()
    lists = CloudLists(InProcessCloud(model.llm, 64, "cpu"), data.protocol, config)
    return config, data, model.srm, lists


def held_items(srm, lists, protocol):
    """Every item the device holds: its lists (valid, test, fresh window) and the histories it reads."""
    held = set()
    for phase in ("valid", "test", "retrain"):
        for view in ("stale", "fresh"):
            held |= set(lists.get(phase, view).item_ids.flatten().tolist())
        item_seq, _ = protocol.history(protocol.samples(phase), "fresh", srm.max_len)
        held |= set(item_seq.flatten().tolist())
        held |= set(protocol.targets(protocol.samples(phase)).tolist()) if phase == "retrain" else set()
    return held


def outcome(config, srm, lists, protocol, mode):
    collab = collaboration(config, srm, lists, protocol, mode, fresh_window_srm=srm)
    rows = [collab.row("x", "lsc4rec", policy, 0.3, 1)[0] for policy in collab.policies]
    cv_scores = {rho: policy.cv_scores for rho, policy in collab.learned_by_budget.items()}
    return rows, collab.curve(config["request_curve_ratios"], 1)[0], cv_scores


def perturbed(srm, items):
    import copy

    other = copy.deepcopy(srm)
    with torch.no_grad():
        index = torch.tensor(sorted(items))
        other.model.item_embedding.weight[index] += 3.0 * torch.randn(len(index), other.model.item_embedding.weight.size(1))
    return other


def test_candidates_setting_ignores_every_item_the_device_does_not_hold(setting):
    config, data, srm, lists = setting
    outside = set(range(1, data.dataset.item_num)) - held_items(srm, lists, data.protocol)
    assert len(outside) > 100  # the test perturbs something
    changed = perturbed(srm, outside)
    assert outcome(config, srm, lists, data.protocol, "candidates") == outcome(config, changed, lists, data.protocol,
                                                                               "candidates")
    # the same perturbation reaches a device that holds the item table: the test can fail
    assert outcome(config, srm, lists, data.protocol, "full") != outcome(config, changed, lists, data.protocol, "full")


def test_full_setting_at_alpha_zero_is_the_srms_own_ranking(setting):
    config, data, srm, lists = setting
    fixed = build_config("LSC4Rec", "mltiny", config_dict={**dict(config.external_config_dict), "fusion_alpha": 0.0})
    collab = collaboration(fixed, srm, lists, data.protocol, "full")
    size = config["candidate_num"]
    reference = srm_ranks(config, srm, data.protocol, "test").clamp(max=size)  # within the top C
    for age in ("stale", "fresh"):
        assert torch.equal(collab.ranks["test"][age].clamp(max=size), reference)


def test_device_training_windows(setting):
    config, data, srm, _ = setting
    protocol = data.protocol
    loader = cloud_window_loader(data.train_data, protocol)
    dataset = loader._dataset
    users = dataset.inter_feat[dataset.uid_field].numpy()
    targets = dataset.inter_feat[dataset.iid_field].numpy()
    cloud_seen = protocol.samples("llm_train")
    # the independent SRM trains on exactly the targets the cloud has seen, user by user
    assert sorted(zip(users.tolist(), targets.tolist())) == sorted(zip(cloud_seen.user.tolist(),
                                                                       protocol.targets(cloud_seen).tolist()))
    fresh = protocol.samples("retrain")
    n = protocol.lengths[fresh.user]
    g = protocol.cloud_lag
    assert np.all((fresh.position >= n - 2 - g) & (fresh.position <= n - 3)) and len(fresh) == 2 * 40
    retraining = _fine_tuning_samples(protocol, "retrain", srm)
    assert torch.equal(retraining[srm.fields["item"]], torch.from_numpy(protocol.targets(fresh)))
    assert not set(zip(fresh.user.tolist(), fresh.position.tolist())) & set(
        zip(cloud_seen.user.tolist(), cloud_seen.position.tolist()))


def test_retraining_replays_older_local_samples_beside_the_fresh_window(setting, monkeypatch):
    config, data, srm, lists = setting
    protocol = data.protocol
    fresh, older = protocol.samples("retrain"), protocol.samples("llm_train")
    rows = replay_rows(protocol, 1.5, seed=3, scope="fleet")
    assert len(rows) == round(1.5 * len(fresh)) and len(set(rows.tolist())) == len(rows)
    assert rows.min() >= 0 and rows.max() < len(older) and np.array_equal(rows, np.sort(rows))
    assert np.array_equal(rows, replay_rows(protocol, 1.5, seed=3, scope="fleet")) and not np.array_equal(rows, replay_rows(protocol, 1.5, seed=4, scope="fleet"))
    assert len(replay_rows(protocol, 0.0, seed=3, scope="fleet")) == 0 and len(replay_rows(protocol, 1e9, seed=3, scope="fleet")) == len(older)
    assert np.array_equal(replay_rows(protocol, "all", seed=3), np.arange(len(older)))  # the whole local history
    seen = []
    monkeypatch.setattr(stages_module, "fine_tune", lambda srm_, stage, interaction, loss_of, *a, **k: seen.append(
        (interaction, loss_of)) or (srm_, {}))
    stages = FineTuningStages({**config.final_config_dict, "retrain_replay": 1.5, "seed": 3}, lists, protocol)
    stages.retraining(srm, "candidates", "fleet")
    interaction, _ = seen[0]
    targets = np.r_[protocol.targets(fresh), protocol.targets(older)[rows]]
    assert torch.equal(interaction[srm.fields["item"]], torch.from_numpy(targets))  # fresh window first, then replay
    retrain_lists = stages._retraining_lists(rows)
    assert torch.equal(retrain_lists.item_ids[: len(fresh)], lists.get("retrain", "stale").item_ids)
    assert torch.equal(retrain_lists.item_ids[len(fresh):], lists.get("llm_train", "stale").item_ids[rows])


def test_retraining_without_the_item_table_reads_only_what_each_device_holds(setting):
    config, data, srm, lists = setting
    protocol = data.protocol
    stages = FineTuningStages({**config.final_config_dict, "retrain_replay": 1.5, "seed": 3}, lists, protocol)
    replay = stages.retraining_samples()
    held, sent = stages.held_items(replay), stages._retraining_lists(replay)
    list_users = np.r_[protocol.samples("retrain").user, protocol.samples("llm_train").user[replay]]
    for user in np.flatnonzero(protocol.lengths):
        sequence = protocol.items[protocol.offsets[user] : protocol.offsets[user] + protocol.lengths[user]]
        received = sent.item_ids[torch.from_numpy(list_users == user)]
        # its history before the validation target and the lists it was sent, nothing else
        assert set(held.items_of(user).tolist()) == (set(sequence[:-2].tolist()) | set(received.flatten().tolist())) - {0}
    user = int(protocol.samples("retrain").user[0])
    fresh = protocol.samples("retrain")
    batch = protocol.interaction(stages_module.Samples(fresh.user[fresh.user == user], fresh.position[fresh.user == user]),
                                 "fresh", srm.max_len, srm.fields)
    outside = set(range(1, data.dataset.item_num)) - set(held.items_of(user).tolist())
    changed = perturbed(srm, outside)
    with torch.no_grad():
        assert changed.held_items_loss(batch, held).item() == pytest.approx(srm.held_items_loss(batch, held).item(), rel=1e-6)
        assert changed.loss(batch).item() != pytest.approx(srm.loss(batch).item(), rel=1e-3)  # the item table's loss moves
