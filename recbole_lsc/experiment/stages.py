"""The training stages of one LSC4Rec run (docs/method.md, "Training").

1. independent, in the cloud: the LLM on the cloud's windows
   (:func:`~recbole_lsc.cloud.trainer.train_or_load`) and the device SRM with its own RecBole
   trainer on the targets the cloud has seen (``srm_train_window: cloud``; ``all`` trains on
   every training target, as the ``srm`` reference row always does);
2. cooperative, in the cloud: the SRM fine-tuned with the cloud's candidates of each of those
   training samples (stale history) as hard negatives; the lists are computed once and cached;
3. adaptive re-training, on the device: the SRM fine-tuned on the freshest window, which the
   cloud has not seen, with what the device holds (``device_catalogue``): the SRM's own loss
   over the item table (``full``) or a softmax over the items its device holds: its history and
   the cloud lists it was sent (``candidates``).

Each stage returns a new SRM (or the one it was given, when validation did not improve), so
every state stays available: the ablations are built from them, nothing is rewound.
"""

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.data.interaction import cat_interactions
from recbole.utils import get_tensorboard, init_seed

from recbole_lsc.channel import concat_lists
from recbole_lsc.device.training import (
    CatalogueValidation, RerankValidation, cooperative_loss, fine_tune, held_items_retraining_loss, retraining_loss,
)
from recbole_lsc.device.held import HeldItems
from recbole_lsc.experiment.srm import fit_recbole
from recbole_lsc.protocol import Samples


@dataclass
class DeviceStates:
    """The SRM after each stage. ``final`` and ``retrained_only`` (re-training without the
    cooperative stage, an ablation) hold one SRM per ``device_catalogue`` setting."""

    independent: object
    cooperative: object
    final: dict
    retrained_only: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)


def cloud_window_loader(train_data, protocol):
    """RecBole's training loader restricted to the samples whose target the cloud has seen.

    RecBole's training samples of a user are its targets i_2..i_{n-2} in order; the cloud has
    seen i_2..i_{n-2-g} (the protocol's ``llm_train`` phase).
    """
    dataset = train_data._dataset
    users = dataset.inter_feat[dataset.uid_field].numpy()
    order = np.argsort(users, kind="stable")
    starts = np.r_[0, np.flatnonzero(users[order][1:] != users[order][:-1]) + 1]
    rank = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    position = np.empty(len(users), dtype=np.int64)
    position[order] = rank + 1  # 0-based position of the target in the user's sequence
    seen = position <= protocol.lengths[users] - 3 - protocol.cloud_lag
    subset = dataset.copy(dataset.inter_feat[torch.from_numpy(np.flatnonzero(seen))])
    return TrainDataLoader(train_data.config, subset, train_data._sampler, shuffle=train_data.shuffle)


def train_srm(config, srm, data, train_data, saved):
    """RecBole's trainer on ``train_data`` (reseeded: the SRM does not depend on whether the LLM
    was trained or loaded); returns the stage's log."""
    init_seed(config["seed"], config["reproducibility"])
    start = time.time()
    fit_recbole(data.srm_config, srm.model, train_data, data.valid_data, saved=saved)
    return {"seconds": round(time.time() - start, 1), "samples": len(train_data._dataset)}


def train_reference_and_device_srm(config, srm, data, saved):
    """The ``srm`` reference (every training target) and the device's independent SRM (the
    ``srm_train_window``), both from the same initial weights; returns ``(reference, device, logs)``."""
    initial = copy.deepcopy(srm)
    logs = {"srm": train_srm(config, srm, data, data.train_data, saved)}
    if config["srm_train_window"] == "all":
        return srm, srm, logs
    logs["device_srm"] = train_srm(config, initial, data, cloud_window_loader(data.train_data, data.protocol), saved)
    return srm, initial, logs


def _fine_tuning_samples(protocol, phase, srm):
    return protocol.interaction(protocol.samples(phase), "fresh", srm.max_len, srm.fields)


def replay_rows(protocol, ratio, seed):
    """Which older samples (``llm_train``: targets the cloud has seen too, all of them in the
    device's own history) re-training replays beside the fresh window: ``ratio`` per fresh
    sample, drawn without replacement by a generator seeded with ``seed``, in protocol order;
    ``"all"``: every one of them, the device's whole local history.

    Replay lets re-training take enough steps to learn the fresh window without drifting from
    what the SRM learnt in the cloud (docs/method.md, "Training").
    """
    older, fresh = len(protocol.samples("llm_train")), len(protocol.samples("retrain"))
    if ratio == "all":
        return np.arange(older)
    count = min(older, int(round(ratio * fresh)))
    return np.sort(np.random.default_rng(seed).choice(older, count, replace=False))


class FineTuningStages:
    """Stages 2 and 3, each fine-tuning the SRM it is given; validated on the stale valid lists, or
    (re-training with the item table) on the SRM's full ranking of the valid targets."""

    def __init__(self, config, lists, protocol):
        self.config, self.lists, self.protocol = config, lists, protocol
        self.tensorboard = get_tensorboard(logging.getLogger())
        self._held = {}  # HeldItems per replay: both re-trainings without the item table read the same

    def close(self):
        """Every stage has logged: close the tensorboard writer, so no writer thread outlives them."""
        self.tensorboard.close()

    def _validation(self, srm, device_catalogue):
        interaction = _fine_tuning_samples(self.protocol, "valid", srm)
        if device_catalogue == "full":
            return CatalogueValidation(interaction, self.config)
        targets = torch.from_numpy(self.protocol.targets(self.protocol.samples("valid")))
        return RerankValidation(interaction, self.lists.get("valid", "stale"), targets, self.config)

    def _run(self, srm, stage, phase, epochs, learning_rate, loss_of, replay=None, device_catalogue="candidates"):
        interaction = _fine_tuning_samples(self.protocol, phase, srm)
        if replay is not None and len(replay):
            older = self.protocol.samples("llm_train")
            picked = Samples(older.user[replay], older.position[replay])
            interaction = cat_interactions([interaction, self.protocol.interaction(picked, "fresh", srm.max_len,
                                                                                   srm.fields)])
        if epochs == 0 or len(interaction) == 0:
            return srm, {"kept": False, "reason": "no epochs or no samples"}
        validate = self._validation(srm, device_catalogue)
        return fine_tune(srm, stage, interaction, loss_of(), validate, epochs, learning_rate, self.config,
                         self.tensorboard, must_beat_start=validate.fair_bar)

    def cooperative(self, srm):
        """Stage 2: the cloud's candidates of each training sample are the SRM's hard negatives."""
        phase = "llm_train" if self.config["srm_train_window"] == "cloud" else "train"
        return self._run(srm, "cooperative", phase, self.config["coop_epochs"], self.config["coop_learning_rate"],
                         lambda: cooperative_loss(self.lists.get(phase, "stale"), self.config))

    def retraining_samples(self):
        """Rows of the older samples re-training replays (``retrain_replay`` per fresh sample)."""
        return replay_rows(self.protocol, self.config["retrain_replay"], self.config["seed"])

    def _retraining_lists(self, replay):
        """The cloud lists of the re-training samples: fresh window, then the replayed ones."""
        fresh = self.lists.get("retrain", "stale")
        if not len(replay):
            return fresh
        return concat_lists([fresh, self.lists.get("llm_train", "stale").select(torch.from_numpy(replay))])

    def held_items(self, replay):
        """What each device holds at re-training without the item table: its history and the
        cloud lists of its re-training samples (fresh window, then the replayed ones)."""
        key = np.asarray(replay).tobytes()
        if key not in self._held:
            users = np.r_[self.protocol.samples("retrain").user, self.protocol.samples("llm_train").user[replay]]
            self._held[key] = HeldItems.at_retraining(self.protocol, users, self._retraining_lists(replay))
        return self._held[key]

    def retraining(self, srm, device_catalogue):
        """Stage 3: the fresh window the cloud has not seen, and a replay of older local samples,
        with the loss the device can compute."""
        replay = self.retraining_samples()
        if device_catalogue == "full":
            loss_of = lambda: retraining_loss  # noqa: E731
        else:
            loss_of = lambda: held_items_retraining_loss(self.held_items(replay))  # noqa: E731
        return self._run(srm, "retrain", "retrain", self.config["retrain_epochs"],
                         self.config["retrain_learning_rate"], loss_of, replay, device_catalogue)


def device_stages(config, independent, lists, protocol):
    """Stages 2 and 3 from the independently trained SRM, as switched by ``coop_train`` and
    ``retrain``, re-training once per ``device_catalogue`` setting."""
    stages = FineTuningStages(config, lists, protocol)
    states = DeviceStates(independent, independent, {})
    if config["coop_train"]:
        states.cooperative, states.logs["cooperative"] = stages.cooperative(independent)
    for mode in config["device_catalogue"]:
        states.final[mode] = states.cooperative
        if config["retrain"]:
            states.final[mode], states.logs[f"retrain ({mode})"] = stages.retraining(states.cooperative, mode)
    if config["retrain"] and config["coop_train"]:
        for mode in config["device_catalogue"]:
            states.retrained_only[mode], _ = stages.retraining(independent, mode)
    stages.close()
    return states
