"""The whole-sequence trainer of a device SRM (``srm_trainer: sequence``).

Stock RecBole training in everything but the batches (``recbole_lsc.device.whole_sequence``):
the SRM's own optimizer settings (``learning_rate``, ``weight_decay``), ``train_batch_size``
targets a step, validation every ``eval_step`` epochs on the full-catalogue ``valid_metric`` of
the validation targets (RecBole's full-sort evaluation of the same samples), RecBole's
``early_stopping`` rule with ``stopping_step``, and the best epoch's weights kept. The batch
order comes from a generator seeded with the run's seed; dropout draws from the global
generator, as in RecBole's trainer, so the caller seeds it (``stages.fresh_srm``).
"""

import copy
import logging
import time

import numpy as np
import torch
from recbole.utils import early_stopping
from tqdm.auto import tqdm

from recbole_lsc.device.whole_sequence import target_windows, window_loss


class WholeSequenceTrainer:
    """Fit ``srm`` (a ``DeviceSRM``) on the targets of a protocol phase; see the module docstring.

    ``config`` is the SRM's own (its optimizer, batch and early-stopping keys), ``validate(srm)``
    the per-user validation values, ``stride`` the windows' advance (``srm_window_stride``).
    """

    def __init__(self, srm, config, validate, stride, tensorboard=None):
        self.srm, self.config, self.validate, self.stride = srm, config, validate, stride
        self.tensorboard = tensorboard
        self.logger = logging.getLogger()
        self.epochs_trained, self.best_epoch = 0, None
        self.train_seconds, self.valid_seconds = [], []

    def _batches(self, windows, generator):
        items, firsts = windows
        size = max(1, self.config["train_batch_size"] // self.stride)
        order = torch.randperm(len(items), generator=generator)
        for start in range(0, len(order), size):
            index = order[start : start + size]
            yield items[index].to(self.config["device"]), firsts[index].to(self.config["device"])

    def _train_epoch(self, windows, optimizer, generator, epoch):
        model = self.srm.model
        model.train()
        total, steps = 0.0, 0
        batches = self._batches(windows, generator)
        for items, firsts in tqdm(batches, desc=f"SRM epoch {epoch}", leave=False,
                                  disable=not self.config["show_progress"]):
            optimizer.zero_grad()
            loss = window_loss(model, items, firsts)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        return total / max(steps, 1)

    def fit(self, protocol, phase):
        """Train on ``phase``'s targets to early stopping; the best epoch's weights stay in the SRM.
        Returns the best validation score (mean ``valid_metric``)."""
        config, model = self.config, self.srm.model
        items, firsts = target_windows(protocol, phase, self.srm.max_len, self.stride)
        windows = (torch.from_numpy(items), torch.from_numpy(firsts))
        generator = torch.Generator().manual_seed(config["seed"])
        optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"],
                                     weight_decay=config["weight_decay"])
        best_score, bad_steps, best_state = -np.inf, 0, None
        for epoch in range(config["epochs"]):
            started = time.time()
            loss = self._train_epoch(windows, optimizer, generator, epoch)
            self.train_seconds.append(time.time() - started)
            self.epochs_trained = epoch + 1
            if (epoch + 1) % config["eval_step"]:
                continue
            started = time.time()
            score = float(self.validate(self.srm).mean())
            self.valid_seconds.append(time.time() - started)
            self.logger.info(f"SRM epoch {epoch}: train loss {loss:.4f}, valid {config['valid_metric']} {score:.4f} "
                             f"[train {self.train_seconds[-1]:.1f}s, valid {self.valid_seconds[-1]:.1f}s]")
            if self.tensorboard is not None:
                self.tensorboard.add_scalar("SRM/Loss/Train", loss, epoch)
                self.tensorboard.add_scalar(f"SRM/Valid/{config['valid_metric']}", score, epoch)
            best_score, bad_steps, stop, improved = early_stopping(
                score, best_score, bad_steps, max_step=config["stopping_step"])
            if improved:
                self.best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
            if stop:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        self.logger.info(f"SRM best epoch {self.best_epoch} of {self.epochs_trained} "
                         f"({config['valid_metric']} {best_score:.4f})")
        return best_score

    def log(self):
        """Epochs, best epoch and seconds per training epoch and per validation pass."""
        return {"trainer": "sequence", "epochs_trained": self.epochs_trained, "best_epoch": self.best_epoch,
                "train_seconds_per_epoch": _mean(self.train_seconds), "valid_seconds_per_pass": _mean(self.valid_seconds)}


def _mean(seconds):
    return round(float(np.mean(seconds)), 4) if seconds else None
