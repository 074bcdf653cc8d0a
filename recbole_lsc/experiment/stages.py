"""The training stages of one LSC4Rec run (docs/method.md, "Training").

1. independent, in the cloud: the LLM on the cloud's windows
   (:func:`~recbole_lsc.cloud.trainer.train_or_load`) and the device SRM (whole-sequence
   windows or its own RecBole trainer, ``srm_trainer``) on the targets the cloud has seen (``srm_train_window: cloud``; ``all`` trains on
   every training target, as the ``srm`` reference row always does);
2. cooperative, in the cloud: the SRM fine-tuned with the cloud's candidates of each of those
   training samples (stale history) as hard negatives; the lists are computed once and cached;
3. adaptive re-training, on the device: the SRM fine-tuned on the freshest window, which the
   cloud has not seen, with what the device holds (``device_catalogue``): the SRM's own loss
   over the item table (``full``) or a softmax over the items its device holds: its history and
   the cloud lists it was sent (``candidates``); each device its own copy on its own data
   (``retrain_scope: device``) or one model on every device's data (``fleet``).

Each stage returns a new SRM (or the one it was given, when validation did not improve), so
every state stays available: the ablations are built from them, nothing is rewound.
"""

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
from recbole_lsc.device.per_device import DeviceRetraining, rows_by_user
from recbole_lsc.device.sequence_trainer import WholeSequenceTrainer
from recbole_lsc.device.srm import DeviceSRM
from recbole_lsc.device.srm_store import load_trained_srm, srm_key, store_trained_srm
from recbole_lsc.device.whole_sequence import supports_whole_sequence
from recbole_lsc.experiment.srm import epochs_of, fit_recbole
from recbole_lsc.protocol import Samples
from recbole_lsc.random_streams import derived_seed
from recbole_lsc.utils import get_model


@dataclass
class DeviceStates:
    """The SRM after each stage. ``final`` and ``retrained_only`` (re-training without the
    cooperative stage, an ablation) hold one SRM per (``device_catalogue``, ``retrain_scope``)
    setting: a :class:`~recbole_lsc.device.per_device.PerDeviceSRM` where each device re-trained
    its own copy."""

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


def fresh_srm(config, data):
    """A new device SRM drawn exactly as a plain RecBole run draws it at this seed (reseeded
    first, built on the training split's dataset), whatever was built before it."""
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["srm"])(data.srm_config, data.train_data._dataset).to(config["device"])
    return DeviceSRM(model, data.srm_config, data.dataset)


def train_srm(config, data, phase, saved):
    """A fresh SRM (:func:`fresh_srm`) trained on ``phase``'s targets (``train``: every training
    target; ``llm_train``: those the cloud has seen) right after it is drawn, as ``run_recbole``
    does, or loaded from the SRM store; returns ``(srm, the stage's log)``.

    ``srm_trainer: sequence`` trains backbones with a causal per-position encoder on whole
    windows (``recbole_lsc.device.sequence_trainer``); any other backbone, or ``recbole``,
    uses the SRM's own RecBole trainer on RecBole's samples.
    """
    srm = fresh_srm(config, data)
    trainer = "sequence" if config["srm_trainer"] == "sequence" and supports_whole_sequence(
        srm.model, data.srm_config) else "recbole"
    stride = config["srm_window_stride"] if trainer == "sequence" else None
    key = srm_key(data.srm_config, data.protocol, data.dataset.item_num, phase, trainer, stride)
    stored = load_trained_srm(config["trained_srm_cache"], key, data.srm_config, srm.model)
    if stored is not None:
        return srm, stored
    start = time.time()
    if trainer == "sequence":
        validate = CatalogueValidation(_fine_tuning_samples(data.protocol, "valid", srm), data.srm_config)
        fitted = WholeSequenceTrainer(srm, data.srm_config, validate, stride)
        best = fitted.fit(data.protocol, phase)
        log = fitted.log()
    else:
        train_data = data.train_data if phase == "train" else cloud_window_loader(data.train_data, data.protocol)
        fitted, best_valid = fit_recbole(data.srm_config, srm.model, train_data, data.valid_data, saved=saved)
        best = best_valid[data.srm_config["valid_metric"].lower()]
        log = {"trainer": "recbole", **epochs_of(fitted)}
    log["best_valid"] = round(float(best), 6)
    log = {"seconds": round(time.time() - start, 1), "samples": len(data.protocol.samples(phase)), **log}
    store_trained_srm(config["trained_srm_cache"], key, data.srm_config, srm.model, log)
    return srm, log


def train_reference_and_device_srm(config, data, saved):
    """The ``srm`` reference (every training target; the plain ``--model=<srm>`` run at this
    seed with ``srm_trainer: recbole``) and the device's independent SRM (the
    ``srm_train_window``), both from the same initial weights; returns ``(reference, device, logs)``.

    The global generator is reseeded afterwards, so what follows draws the same whether the
    SRMs were trained or loaded from the store.
    """
    reference, log = train_srm(config, data, "train", saved)
    logs = {"srm": log}
    device = reference
    if config["srm_train_window"] != "all":
        device, logs["device_srm"] = train_srm(config, data, "llm_train", saved)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    return reference, device, logs


def _fine_tuning_samples(protocol, phase, srm):
    return protocol.interaction(protocol.samples(phase), "fresh", srm.max_len, srm.fields)


def replay_rows(protocol, ratio, seed, scope="device"):
    """Which older samples (``llm_train``: targets the cloud has seen too, all of them in the
    device's own history) re-training replays beside the fresh window, as rows of that phase in
    protocol order; ``"all"``: every one of them, each device's whole local history.

    A number is ``ratio`` per fresh sample, drawn without replacement: with ``device`` scope
    from each device's own older samples (a generator per user), with ``fleet`` from the pool of
    every device's. Replay lets re-training take enough steps to learn the fresh window without
    drifting from what the SRM learnt in the cloud (docs/method.md, "Training").
    """
    older, fresh = protocol.samples("llm_train"), protocol.samples("retrain")
    if ratio == "all":
        return np.arange(len(older))
    if scope == "fleet":
        count = min(len(older), int(round(ratio * len(fresh))))
        return np.sort(np.random.default_rng(derived_seed(seed, "replay")).choice(len(older), count, replace=False))
    fresh_count = np.bincount(fresh.user, minlength=len(protocol.lengths))
    picked = [rows[np.random.default_rng(derived_seed(seed, "replay", user)).choice(
                  len(rows), min(len(rows), int(round(ratio * fresh_count[user]))), replace=False)]
              for user, rows in rows_by_user(older.user).items()]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


class FineTuningStages:
    """Stages 2 and 3, each fine-tuning the SRM it is given; validated on the stale valid lists, or
    (re-training with the item table) on the SRM's full ranking of the valid targets. Each stage
    draws from generators of its own (:func:`~recbole_lsc.random_streams.derived_seed` of its name)."""

    def __init__(self, config, lists, protocol):
        self.config, self.lists, self.protocol = config, lists, protocol
        self.tensorboard = get_tensorboard(logging.getLogger())
        self._held = {}  # HeldItems per replay: the re-trainings without the item table read the same

    def close(self):
        """Every stage has logged: close the tensorboard writer, so no writer thread outlives them."""
        self.tensorboard.close()

    def _validation(self, srm, device_catalogue):
        interaction = _fine_tuning_samples(self.protocol, "valid", srm)
        if device_catalogue == "full":
            return CatalogueValidation(interaction, self.config)
        targets = torch.from_numpy(self.protocol.targets(self.protocol.samples("valid")))
        return RerankValidation(interaction, self.lists.get("valid", "stale"), targets, self.config)

    def _samples(self, srm, phase, replay):
        interaction = _fine_tuning_samples(self.protocol, phase, srm)
        if replay is not None and len(replay):
            older = self.protocol.samples("llm_train")
            picked = Samples(older.user[replay], older.position[replay])
            interaction = cat_interactions([interaction, self.protocol.interaction(picked, "fresh", srm.max_len,
                                                                                   srm.fields)])
        return interaction

    def cooperative(self, srm):
        """Stage 2: the cloud's candidates of each training sample are the SRM's hard negatives."""
        phase = "llm_train" if self.config["srm_train_window"] == "cloud" else "train"
        interaction = _fine_tuning_samples(self.protocol, phase, srm)
        epochs = self.config["coop_epochs"]
        if epochs == 0 or len(interaction) == 0:
            return srm, {"kept": False, "reason": "no epochs or no samples"}
        validate = self._validation(srm, "candidates")
        return fine_tune(srm, "cooperative", interaction, cooperative_loss(self.lists.get(phase, "stale"), self.config),
                         validate, epochs, self.config["coop_learning_rate"], self.config,
                         derived_seed(self.config["seed"], "cooperative"), self.tensorboard,
                         must_beat_start=validate.fair_bar)

    def retraining_samples(self, scope="device"):
        """Rows of the older samples re-training replays (``retrain_replay`` per fresh sample)."""
        return replay_rows(self.protocol, self.config["retrain_replay"], self.config["seed"], scope)

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

    def retraining(self, srm, device_catalogue, scope="device"):
        """Stage 3: the fresh window the cloud has not seen, and a replay of older local samples,
        with the loss the device can compute; on each device alone (``scope`` ``device``) or as
        one model of the fleet (``fleet``)."""
        replay = self.retraining_samples(scope)
        if device_catalogue == "full":
            loss = retraining_loss
        else:
            loss = held_items_retraining_loss(self.held_items(replay))
        interaction = self._samples(srm, "retrain", replay)
        stage, epochs = f"retrain ({device_catalogue}, {scope})", self.config["retrain_epochs"]
        if epochs == 0 or len(interaction) == 0:
            return srm, {"kept": False, "reason": "no epochs or no samples"}
        validate = self._validation(srm, device_catalogue)
        seed = derived_seed(self.config["seed"], "retrain", device_catalogue, scope)
        if scope == "device":
            run = DeviceRetraining(interaction, interaction[srm.fields["user"]].numpy(), loss, validate,
                                   self.protocol.samples("valid").user, self.config, seed)
            return run(srm, stage, must_beat_start=validate.fair_bar)
        return fine_tune(srm, stage, interaction, loss, validate, epochs, self.config["retrain_learning_rate"],
                         self.config, seed, self.tensorboard, must_beat_start=validate.fair_bar)


def settings_of(config):
    """The (``device_catalogue``, ``retrain_scope``) settings a run evaluates, in config order."""
    return [(mode, scope) for mode in config["device_catalogue"] for scope in config["retrain_scope"]]


def device_stages(config, independent, lists, protocol, extra_settings=()):
    """Stages 2 and 3 from the independently trained SRM, as switched by ``coop_train`` and
    ``retrain``, re-training once per setting (:func:`settings_of`, and ``extra_settings``).

    Every stage draws from its own generators, so each state is the same whichever settings
    a run evaluates and in whatever order.
    """
    stages = FineTuningStages(config, lists, protocol)
    states = DeviceStates(independent, independent, {})
    if config["coop_train"]:
        states.cooperative, states.logs["cooperative"] = stages.cooperative(independent)
    settings = list(dict.fromkeys([*settings_of(config), *extra_settings]))
    for mode, scope in settings:
        states.final[(mode, scope)] = states.cooperative
        if config["retrain"]:
            states.final[(mode, scope)], states.logs[f"retrain ({mode}, {scope})"] = stages.retraining(
                states.cooperative, mode, scope)
    if config["retrain"] and config["coop_train"]:
        for setting in settings_of(config):
            if states.cooperative is independent:  # the stage was undone: the same computation
                states.retrained_only[setting] = states.final[setting]
            else:
                states.retrained_only[setting], _ = stages.retraining(independent, *setting)
    stages.close()
    return states
