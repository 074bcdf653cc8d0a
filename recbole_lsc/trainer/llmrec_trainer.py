"""Training loop of the cloud LLM on the protocol's cloud windows.

RecBole's Trainer feeds one target per sample; the LLM learns far faster from next-item
loss on every position of a window (``DeviceCloudProtocol.cloud_training_windows``), so it
has its own loop. The epoch is chosen on validation NDCG (``valid_metric``) with the
history named by ``llm_select_on`` (fresh by default: after a request the cloud serves
fresh histories), never on test.
"""

import copy
import logging
import time

import torch
from recbole.utils import get_tensorboard, init_seed
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from recbole_lsc.data.protocol import model_fields
from recbole_lsc.evaluation import evaluate_scorer


class LLMRecTrainer:
    def __init__(self, config, model, protocol):
        self.config = config
        self.model = model
        self.protocol = protocol
        self.device = config["device"]
        self.logger = logging.getLogger()
        self.valid_metric = config["valid_metric"].lower()
        self.epochs_trained = 0
        self.best_epoch = -1
        self.tensorboard = get_tensorboard(self.logger)  # the same log_tensorboard/ run folder as RecBole's

    def _loader(self):
        items, lengths = self.protocol.cloud_training_windows(self.config["llm_max_len"])
        generator = torch.Generator().manual_seed(self.config["seed"])
        dataset = TensorDataset(torch.from_numpy(items), torch.from_numpy(lengths))
        return DataLoader(dataset, batch_size=self.config["llm_batch_size"], shuffle=True, generator=generator)

    def fit(self, show_progress=False):
        """Train with early stopping; the best epoch's weights stay in the model. Returns its valid metrics.

        Reseeds first: dropout draws from the global generator, and the trained LLM must not
        depend on what was built before it (an SRM of any kind, or none), since runs with
        different SRMs share it through the trained-LLM cache.
        """
        init_seed(self.config["seed"], self.config["reproducibility"])
        loader = self._loader()
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=self.config["llm_learning_rate"], weight_decay=self.config["llm_weight_decay"]
        )
        view = self.config["llm_select_on"]
        best_score, best_state, best_result, patience = -1.0, None, {}, 0
        for epoch in range(self.config["llm_epochs"]):
            start = time.time()
            self.model.train()
            total = 0.0
            batches = tqdm(loader, desc=f"LLM epoch {epoch}", disable=not show_progress, leave=False)
            for items, lengths in batches:
                optimizer.zero_grad()
                loss = self.model.window_loss(items.to(self.device), lengths.to(self.device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                total += loss.item()
            result = self.evaluate("valid", view)
            score = result[self.valid_metric]
            self.epochs_trained = epoch + 1
            self.tensorboard.add_scalar("LLM/Loss/Train", total / max(len(loader), 1), epoch)
            self.tensorboard.add_scalar(f"LLM/Valid/{self.valid_metric} ({view})", score, epoch)
            self.logger.info(
                f"LLM epoch {epoch}: loss {total / max(len(loader), 1):.4f}, valid ({view}) "
                f"{self.valid_metric} {score:.4f} [{time.time() - start:.1f}s]"
            )
            if score > best_score:
                best_score, best_result, patience, self.best_epoch = score, result, 0, epoch
                best_state = copy.deepcopy(self.model.state_dict())
            else:
                patience += 1
                if patience >= self.config["llm_stopping_step"]:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.logger.info(f"LLM best epoch {self.best_epoch} of {self.epochs_trained} ({self.valid_metric} {best_score:.4f})")
        return best_result

    def interaction(self, phase, view):
        samples = self.protocol.samples(phase)
        return self.protocol.interaction(samples, view, self.config["llm_max_len"], model_fields(self.model))

    @torch.no_grad()
    def evaluate(self, phase, view):
        """Full-catalogue RecBole metrics of the LLM on ``phase`` samples with ``view`` histories."""
        self.model.eval()
        return evaluate_scorer(
            self.config,
            lambda batch: self.model.full_sort_predict(batch.to(self.device)),
            self.interaction(phase, view),
            self.config["eval_batch_size"],
            self.model.ITEM_ID,
        )
