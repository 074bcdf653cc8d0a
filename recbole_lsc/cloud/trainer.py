"""Training loop of the cloud LLM on the protocol's cloud windows.

Not a RecBole ``Trainer``: RecBole's feeds one target per sample, while the LLM learns far
faster from next-item loss on every position of a window
(``DeviceCloudProtocol.cloud_training_windows``). The epoch is chosen with RecBole's
``early_stopping`` rule on the validation ``valid_metric`` of the history named by
``llm_select_on`` (fresh by default: after a request the cloud serves fresh histories),
never on test; training stops after ``llm_stopping_step`` + 1 validations without improvement,
and a tie with the best score counts as an improvement: RecBole's ``early_stopping`` with
``max_step = llm_stopping_step``, as its trainer reads ``stopping_step``.
"""

import copy
import logging
import time

import numpy as np
import torch
from recbole.utils import early_stopping, get_tensorboard, init_seed
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from recbole_lsc.cloud.store import load_trained_llm, store_trained_llm
from recbole_lsc.evaluation.metrics import summary
from recbole_lsc.evaluation.ranks import catalogue_ranks
from recbole_lsc.protocol import model_fields


class LLMRecTrainer:
    """The cloud LLM's trainer (``get_trainer(..., "LLMRec")``): next-item loss on every position
    of the protocol's cloud windows, early stopping on validation (see the module docstring).
    It takes the :class:`~recbole_lsc.protocol.DeviceCloudProtocol` instead of RecBole's
    dataloaders: the windows and the stale/fresh histories come from it."""

    def __init__(self, config, model, protocol):
        self.config = config
        self.model = model
        self.protocol = protocol
        self.device = config["device"]
        self.logger = logging.getLogger()
        self.valid_metric = config["valid_metric"].lower()
        self.epochs_trained = 0
        self.best_epoch = -1
        self.train_seconds, self.valid_seconds = [], []  # per epoch: the training pass, the validation pass

    def _loader(self):
        items, lengths = self.protocol.cloud_training_windows(self.config["llm_max_len"])
        generator = torch.Generator().manual_seed(self.config["seed"])
        dataset = TensorDataset(torch.from_numpy(items), torch.from_numpy(lengths))
        return DataLoader(dataset, batch_size=self.config["llm_batch_size"], shuffle=True, generator=generator)

    def _train_epoch(self, loader, optimizer, params, epoch, show_progress):
        self.model.train()
        total = 0.0
        for items, lengths in tqdm(loader, desc=f"LLM epoch {epoch}", disable=not show_progress, leave=False):
            optimizer.zero_grad()
            loss = self.model.window_loss(items.to(self.device), lengths.to(self.device),
                                          self.config["llm_softmax_items"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            total += loss.item()
        return total / max(len(loader), 1)

    def fit(self, show_progress=False):
        """Train with early stopping; the best epoch's weights stay in the model. Returns its valid metrics.

        Reseeds first: dropout draws from the global generator, and the trained LLM must not
        depend on what was built before it (an SRM of any kind, or none), since runs with
        different SRMs share it through the trained-LLM store.
        """
        init_seed(self.config["seed"], self.config["reproducibility"])
        loader = self._loader()
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.config["llm_learning_rate"],
                                      weight_decay=self.config["llm_weight_decay"])
        view = self.config["llm_select_on"]
        best_score, best_state, best_result, bad_epochs = -np.inf, None, {}, 0
        # the same log_tensorboard/ run folder as RecBole's; closed after the last epoch, so no
        # writer thread outlives training
        self.tensorboard = get_tensorboard(self.logger)
        for epoch in range(self.config["llm_epochs"]):
            start = time.time()
            loss = self._train_epoch(loader, optimizer, params, epoch, show_progress)
            trained = time.time()
            result = self.evaluate("valid", view)
            score = result[self.valid_metric]
            self.train_seconds.append(trained - start)
            self.valid_seconds.append(time.time() - trained)
            self.epochs_trained = epoch + 1
            self.tensorboard.add_scalar("LLM/Loss/Train", loss, epoch)
            self.tensorboard.add_scalar(f"LLM/Valid/{self.valid_metric} ({view})", score, epoch)
            self.logger.info(f"LLM epoch {epoch}: loss {loss:.4f}, valid ({view}) {self.valid_metric} {score:.4f} "
                             f"[train {self.train_seconds[-1]:.1f}s, valid {self.valid_seconds[-1]:.1f}s]")
            best_score, bad_epochs, stop, improved = early_stopping(
                score, best_score, bad_epochs, max_step=self.config["llm_stopping_step"])
            if improved:
                best_result, self.best_epoch = result, epoch
                best_state = copy.deepcopy(self.model.state_dict())
            if stop:
                break
        self.tensorboard.close()
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.logger.info(f"LLM best epoch {self.best_epoch} of {self.epochs_trained} ({self.valid_metric} {best_score:.4f})")
        return best_result

    def interaction(self, phase, view):
        samples = self.protocol.samples(phase)
        return self.protocol.interaction(samples, view, self.config["llm_max_len"], model_fields(self.model))

    @torch.no_grad()
    def ranks(self, phase, view):
        """Full-catalogue target ranks of the LLM on ``phase`` samples with ``view`` histories."""
        self.model.eval()
        return catalogue_ranks(lambda batch: self.model.full_sort_predict(batch.to(self.device)),
                               self.interaction(phase, view), self.config["eval_batch_size"], self.model.ITEM_ID)

    def evaluate(self, phase, view):
        """RecBole metrics of the LLM on ``phase`` samples with ``view`` histories."""
        return summary(self.ranks(phase, view), self.config)


def train_or_load(config, llm, protocol, dataset):
    """Train the cloud ``llm``, or fill it from the trained-LLM store; return ``(trainer, log)``.

    A freshly trained LLM is put in the store, so a later run with the same LLM config, data
    and seed (another SRM backbone, a re-run) loads it instead of training it again.
    """
    trainer = LLMRecTrainer(config, llm, protocol)
    cached = load_trained_llm(config, dataset, protocol, llm)
    if cached is not None:
        return trainer, cached
    start = time.time()
    best = trainer.fit(show_progress=config["show_progress"])
    log = {"seconds": round(time.time() - start, 1), "best_valid": round(float(best.get(trainer.valid_metric, np.nan)), 6),
           "epochs_trained": trainer.epochs_trained,
           "best_epoch": trainer.best_epoch, "train_seconds_per_epoch": _mean_seconds(trainer.train_seconds),
           "valid_seconds_per_pass": _mean_seconds(trainer.valid_seconds)}
    store_trained_llm(config, dataset, protocol, llm, log)
    return trainer, log


def _mean_seconds(seconds):
    return round(float(np.mean(seconds)), 4) if seconds else None
