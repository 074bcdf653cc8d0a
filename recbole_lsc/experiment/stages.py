"""The training stages of one LSC4Rec run (docs/method.md, "Training").

1. independent: the cloud LLM on the cloud's windows (:func:`~recbole_lsc.cloud.trainer.train_or_load`),
   the device SRM with its own RecBole trainer on every training target (exactly the ``srm`` row);
2. cooperative: the SRM fine-tuned with the cloud's candidates of each training sample
   (stale history) as hard negatives; the lists are computed once and cached;
3. adaptive re-training: the SRM fine-tuned on the freshest window the cloud never saw.

Each stage returns a new SRM (or the one it was given, when validation did not improve), so
every state stays available: the ablations are built from them, nothing is rewound.
"""

import logging
import time
from dataclasses import dataclass, field

import torch
from recbole.utils import get_tensorboard, init_seed

from recbole_lsc.device.training import RerankValidation, cooperative_loss, fine_tune, retraining_loss
from recbole_lsc.experiment.srm import fit_recbole


@dataclass
class DeviceStates:
    """The SRM after each stage; ``retrained_only`` skips the cooperative stage (an ablation)."""

    independent: object
    cooperative: object
    final: object
    retrained_only: object = None
    logs: dict = field(default_factory=dict)


def train_independent_srm(config, srm, data, saved):
    """Stage 1 on the device side: RecBole's trainer on every training target; returns the stage's log."""
    init_seed(config["seed"], config["reproducibility"])  # the same SRM whether the LLM was trained or loaded
    start = time.time()
    fit_recbole(data.srm_config, srm.model, data.train_data, data.valid_data, saved=saved)
    return {"seconds": round(time.time() - start, 1)}


def _fine_tuning_samples(protocol, phase, srm):
    return protocol.interaction(protocol.samples(phase), "fresh", srm.max_len, srm.fields)


class FineTuningStages:
    """Stages 2 and 3, each fine-tuning the SRM it is given; validated on the stale valid lists."""

    def __init__(self, config, lists, protocol):
        self.config, self.lists, self.protocol = config, lists, protocol
        self.valid_samples = protocol.samples("valid")
        self.tensorboard = get_tensorboard(logging.getLogger())

    def _validation(self, srm):
        targets = torch.from_numpy(self.protocol.targets(self.valid_samples))
        return RerankValidation(_fine_tuning_samples(self.protocol, "valid", srm), self.lists.get("valid", "stale"),
                                targets, self.config)

    def _run(self, srm, stage, phase, epochs, learning_rate, loss_of):
        interaction = _fine_tuning_samples(self.protocol, phase, srm)
        if epochs == 0 or len(interaction) == 0:
            return srm, {"kept": False, "reason": "no epochs or no samples"}
        return fine_tune(srm, stage, interaction, loss_of(), self._validation(srm), epochs, learning_rate,
                         self.config, self.tensorboard)

    def cooperative(self, srm):
        """Stage 2: the cloud's candidates of each training sample are the SRM's hard negatives."""
        return self._run(srm, "cooperative", "train", self.config["coop_epochs"], self.config["coop_learning_rate"],
                         lambda: cooperative_loss(self.lists.get("train", "stale"), self.config))

    def retraining(self, srm):
        """Stage 3: the SRM's own loss on the fresh window the cloud has not seen."""
        return self._run(srm, "retrain", "retrain", self.config["retrain_epochs"],
                         self.config["retrain_learning_rate"], lambda: retraining_loss)


def device_stages(config, independent, lists, protocol):
    """Stages 2 and 3 from the independently trained SRM, as switched by ``coop_train`` and ``retrain``."""
    stages = FineTuningStages(config, lists, protocol)
    states = DeviceStates(independent, independent, independent)
    if config["coop_train"]:
        states.cooperative, states.logs["cooperative"] = stages.cooperative(independent)
    states.final = states.cooperative
    if config["retrain"]:
        states.final, states.logs["retrain"] = stages.retraining(states.cooperative)
        if config["coop_train"]:
            states.retrained_only, _ = stages.retraining(independent)
    return states
