"""Re-training on each device alone (``retrain_scope: device``; docs/method.md, "Training").

Each user's device fine-tunes its own copy of the SRM the cloud sent, on its own fresh window
(and, with replay, its own older history), and scores its rows with that copy: nothing it
learns comes from another user's data. The recipe (epochs, learning rate, replay) is the
fleet's, chosen on validation like alpha: every device trains ``retrain_epochs`` epochs while its
validation value after each epoch is recorded; the fleet takes the epoch with the best mean and
keeps it as :func:`~recbole_lsc.device.training.stage_decision` says; every device then re-trains
to that epoch (the same seeds give the same weights). The other scope, ``fleet``, fine-tunes one
SRM on every device's fresh window: what aggregating every device's update in one model gives.

A device's dropout and batch order come from generators seeded with the run's seed, the stage
and its user id, so its copy is a function of its own data alone.
"""

import copy
import logging
import threading
import time

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from recbole_lsc.device.training import stage_decision, train_epoch
from recbole_lsc.random_streams import derived_seed, random_stream

RETRAIN_SCOPES = ("device", "fleet")


def rows_by_user(users):
    """``{user: row indices (LongTensor)}`` of an array of user ids, users in increasing order."""
    users = np.asarray(users)
    order = np.argsort(users, kind="stable")
    cuts = np.flatnonzero(np.diff(users[order])) + 1
    return {int(users[rows[0]]): torch.from_numpy(rows) for rows in np.split(order, cuts) if len(rows)}


class PerDeviceSRM:
    """One SRM per device: ``start`` (the DeviceSRM the cloud sent) and ``vectors``, the flat
    parameters of every device that re-trained (``{user: tensor}``); others keep ``start``.

    It scores like a :class:`~recbole_lsc.device.srm.DeviceSRM`, each row with the copy of the
    user the row belongs to, so the simulation and the device client use it unchanged.
    """

    def __init__(self, start, vectors):
        self.start, self.vectors = start, vectors
        self.start_vector = parameters_to_vector(start.parameters()).detach().clone()
        self._work = copy.deepcopy(start).eval()
        self._lock = threading.Lock()  # one working copy: one user's weights at a time

    name = property(lambda self: self.start.name)
    max_len = property(lambda self: self.start.max_len)
    fields = property(lambda self: self.start.fields)
    model = property(lambda self: self.start.model)

    def eval(self):
        return self

    def vector_of(self, user):
        return self.vectors.get(int(user), self.start_vector)

    def for_user(self, user):
        """A standalone DeviceSRM with ``user``'s weights."""
        own = copy.deepcopy(self.start)
        vector_to_parameters(self.vector_of(user).clone(), own.parameters())
        return own

    def _per_user(self, score, interaction, per_row=None):
        """``score(srm, rows of interaction, rows of per_row)`` with each user's own weights, reassembled."""
        if len(interaction) == 0:
            return score(self.start, interaction, per_row)
        with self._lock:
            return self._score_each_user(score, interaction, per_row)

    def _score_each_user(self, score, interaction, per_row):
        out = None
        for user, rows in rows_by_user(interaction[self.fields["user"]].cpu().numpy()).items():
            vector_to_parameters(self.vector_of(user), self._work.parameters())
            part = score(self._work, interaction[rows], None if per_row is None else per_row[rows])
            if out is None:
                out = part.new_empty((len(interaction), *part.shape[1:]))
            out[rows.to(out.device)] = part
        return out

    def score_lists(self, interaction, item_ids, batch_size, device):
        return self._per_user(lambda srm, rows, ids: srm.score_lists(rows, ids, batch_size, device), interaction,
                              item_ids)

    def score_catalogue(self, interaction, batch_size, device):
        return self._per_user(lambda srm, rows, _: srm.score_catalogue(rows, batch_size, device), interaction)

    @torch.no_grad()
    def catalogue_scores(self, interaction):
        return self._per_user(lambda srm, rows, _: srm.eval().catalogue_scores(rows), interaction)

    @torch.no_grad()
    def candidate_scores(self, interaction, candidate_ids):
        return self._per_user(lambda srm, rows, ids: srm.eval().candidate_scores(rows, ids), interaction,
                              candidate_ids)


def train_one_device(work, start_vector, batch, index, loss_of, epochs, config, seed, after_epoch=None):
    """Fine-tune ``work`` from ``start_vector`` on one device's ``batch`` (rows ``index`` of the
    stage's samples) for ``epochs``; returns its flat parameters. ``after_epoch(epoch, work)``
    is called after each epoch. The caller's random state is left as it was."""
    vector_to_parameters(start_vector.clone(), work.parameters())
    optimizer = torch.optim.Adam(work.parameters(), lr=config["retrain_learning_rate"])
    device_loss = lambda srm, rows, local: loss_of(srm, rows, index[local])  # noqa: E731  (the stage's row ids)
    with random_stream(seed) as generator:
        for epoch in range(epochs):
            train_epoch(work, optimizer, batch, device_loss, torch.randperm(len(index), generator=generator), config)
            if after_epoch is not None:
                after_epoch(epoch, work)
    return parameters_to_vector(work.parameters()).detach().clone()


class DeviceRetraining:
    """Re-training, one copy per device (see the module docstring).

    Args:
        samples: the stage's samples of every device (an Interaction).
        users: the user id of each sample (its device).
        loss_of: ``loss_of(srm, batch, index)``, the loss the device computes.
        validate: per-user validation values ``validate(srm, rows=None)`` over ``valid_users``.
        valid_users: user id of each validation row.
    """

    def __init__(self, samples, users, loss_of, validate, valid_users, config, seed):
        self.samples, self.loss_of, self.validate, self.config, self.seed = samples, loss_of, validate, config, seed
        self.devices = rows_by_user(users)  # user -> its rows of ``samples``
        self.valid_row = {int(user): row for row, user in enumerate(valid_users)}

    def _train(self, start, user, epochs, after_epoch=None):
        """``start`` is ``(working copy, flat start parameters)``."""
        rows = self.devices[user]
        return train_one_device(*start, self.samples[rows], rows, self.loss_of, epochs, self.config,
                                derived_seed(self.seed, user), after_epoch)

    def validation_curves(self, start, start_values):
        """Validation values after each epoch ``[epochs, U]``, devices that do not train keeping
        ``start_values``."""
        curves = np.tile(start_values, (self.config["retrain_epochs"], 1))
        for user in self.devices:
            row = self.valid_row.get(user)

            def record(epoch, model, row=row):
                if row is not None:
                    curves[epoch, row] = self.validate(model, torch.tensor([row]))[0]

            self._train(start, user, self.config["retrain_epochs"], record)
        return curves

    def __call__(self, start, stage, must_beat_start):
        """``(PerDeviceSRM or start when undone, log)``."""
        began, logger = time.time(), logging.getLogger()
        working = (copy.deepcopy(start), parameters_to_vector(start.parameters()).detach())
        start_values = self.validate(start)
        curves = self.validation_curves(working, start_values)
        means = curves.mean(1)
        for epoch, mean in enumerate(means):
            logger.info(f"{stage} epoch {epoch}: valid mean over devices {self.config['valid_metric']} {mean:.4f}")
        best = int(np.argmax(means)) if len(means) else -1
        kept, p, rule = (False, 1.0, "no epochs") if best < 0 else stage_decision(
            start_values, curves[best], must_beat_start, self.config["stage_selection"])
        logger.info(f"{stage}: {'kept epoch %d on every device' % best if kept else 'undone'} "
                    f"(one-sided paired p {p:.3g}, {rule})")
        log = {"kept": kept, "scope": "device", "must_beat_start": must_beat_start, "rule": rule, "p": round(p, 6),
               "best_epoch": best, "epochs": self.config["retrain_epochs"], "devices": len(self.devices),
               "valid_before": round(float(start_values.mean()), 6),
               "valid_after": round(float(means[best]), 6) if best >= 0 else None}
        if not kept:
            log["seconds"] = round(time.time() - began, 1)
            return start, log
        vectors = {user: self._train(working, user, best + 1) for user in self.devices}
        log["seconds"] = round(time.time() - began, 1)
        return PerDeviceSRM(start, vectors), log
