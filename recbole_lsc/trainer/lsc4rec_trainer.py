"""The three training stages of LSC4Rec (LSC4REC.md section 3).

1. independent: the LLM on the cloud's windows (``LLMRecTrainer``), the SRM with its own
   RecBole trainer on every training target (exactly the ``srm`` baseline);
2. cooperative: the frozen LLM's top-C candidates for each training sample (stale
   history) are computed once and cached; the SRM is fine-tuned with
   ``LSC4Rec.cooperative_loss`` (they are its hard negatives);
3. adaptive re-training: the SRM is fine-tuned on the freshest window the cloud never saw.

A fine-tuning stage keeps its best epoch only if it beats the SRM it started from on
validation (``valid_metric`` of the SRM re-ranking the stale candidate lists: the job the
SRM does in deployment); otherwise the stage leaves the SRM unchanged and says so.
"""

import copy
import logging
import time

import torch
from recbole.data.transform import construct_transform
from recbole.utils import get_tensorboard, init_seed
from tqdm.auto import tqdm

from recbole_lsc.collab.candidates import prefix_candidates, sample_candidates
from recbole_lsc.collab.fusion import target_rank
from recbole_lsc.collab.metrics import per_user_metrics
from recbole_lsc.data.protocol import model_fields
from recbole_lsc.llm_store import load_trained_llm, store_trained_llm
from recbole_lsc.trainer.llmrec_trainer import LLMRecTrainer
from recbole_lsc.utils import get_trainer


class LSC4RecTrainer:
    def __init__(self, config, model, protocol, dataset):
        self.config = config
        self.dataset = dataset
        # the SRM's own batch transform (e.g. BERT4Rec's item masking), as its dataloader applies it
        self.transform = construct_transform(model.srm_config)
        self.model = model
        self.protocol = protocol
        self.device = config["device"]
        self.logger = logging.getLogger()
        self.srm_max_len = model.srm_config["MAX_ITEM_LIST_LENGTH"]
        self.llm_calls = {}  # stage -> number of LLM candidate computations (one per cache fill)
        self._cache = {}
        self.stage_log = {}
        self.tensorboard = get_tensorboard(self.logger)

    # --------------------------------------------------------------- stage 1
    def train_llm(self):
        """Train the cloud LLM, or load the one a run with the same LLM config cached."""
        trainer = LLMRecTrainer(self.config, self.model.llm, self.protocol)
        cached = load_trained_llm(self.config, self.dataset, self.protocol, self.model.llm)
        if cached is None:
            start = time.time()
            trainer.fit(show_progress=self.config["show_progress"])
            log = {"seconds": round(time.time() - start, 1), "epochs_trained": trainer.epochs_trained,
                   "best_epoch": trainer.best_epoch}
            store_trained_llm(self.config, self.dataset, self.protocol, self.model.llm, log)
            self.stage_log["llm"] = log
        else:
            self.stage_log["llm"] = cached
        self.model.llm.requires_grad_(False)
        return trainer

    def train_srm(self, train_data, valid_data, saved=True):
        # reseed: the SRM's training does not depend on whether the LLM was trained or loaded
        init_seed(self.config["seed"], self.config["reproducibility"])
        srm_config = self.model.srm_config
        trainer = get_trainer(srm_config["MODEL_TYPE"], srm_config["model"])(srm_config, self.model.srm)
        start = time.time()
        _, best_valid = trainer.fit(train_data, valid_data, saved=saved, show_progress=self.config["show_progress"])
        if saved:  # fit leaves the last epoch's weights; the baseline is the best epoch
            trainer.evaluate(valid_data, load_best_model=True)
        self.stage_log["srm"] = {"seconds": round(time.time() - start, 1)}
        return trainer, best_valid

    # ------------------------------------------------------------ candidates
    def candidates(self, phase, view):
        """Cached top-C LLM candidates ``(ids, log_probs)``; the LLM runs once per (phase, view)."""
        key = (phase, view)
        if key not in self._cache:
            samples = self.protocol.samples(phase)
            fill = prefix_candidates if phase in ("train", "retrain", "llm_train") else sample_candidates
            self._cache[key] = fill(
                self.model.llm, self.protocol, samples, view, self.config["candidate_num"],
                self.config["eval_batch_size"] if fill is sample_candidates else self.config["llm_batch_size"],
                self.device, show_progress=self.config["show_progress"],
            )
            self.llm_calls[f"{phase}/{view}"] = self.llm_calls.get(f"{phase}/{view}", 0) + 1
        return self._cache[key]

    def srm_interaction(self, phase):
        return self.protocol.interaction(
            self.protocol.samples(phase), "fresh", self.srm_max_len, model_fields(self.model.srm)
        )

    @torch.no_grad()
    def srm_scores(self, phase, candidate_ids, candidates_only=False):
        """SRM scores ``([N, C] of the candidates, [N, n_items] full)`` with fresh histories.

        ``candidates_only`` skips the full ranking (returns ``(scores, None)``): the device's
        deployment cost. The full scores feed the request features and the ``srm`` row.
        """
        self.model.srm.eval()
        interaction = self.srm_interaction(phase)
        parts, fulls = [], []
        size = self.config["eval_batch_size"]
        for start in range(0, len(interaction), size):
            batch = interaction[start : start + size].to(self.device)
            cands = candidate_ids[start : start + size].to(self.device)
            if candidates_only:
                parts.append(self.model.srm_scores_of_candidates(batch, cands).cpu())
                continue
            cand, full = self.model.srm_candidate_scores(batch, cands)
            parts.append(cand.cpu())
            fulls.append(full.cpu())
        return torch.cat(parts), (torch.cat(fulls) if fulls else None)

    def rerank_score(self, phase="valid"):
        """``valid_metric`` of the SRM re-ranking the stale candidate lists (fusion alpha = 0)."""
        ids, _ = self.candidates(phase, "stale")
        srm_cand, _ = self.srm_scores(phase, ids, candidates_only=True)  # the full ranking is not needed here
        ranks = target_rank(ids, srm_cand, torch.from_numpy(self.protocol.targets(self.protocol.samples(phase))))
        metric = self.config["valid_metric"].lower()
        name, k = metric.split("@")
        return float(per_user_metrics(ranks.numpy(), [name], [int(k)])[metric].mean())

    # ---------------------------------------------------------- stages 2 & 3
    def _fine_tune(self, stage, phase, epochs, learning_rate, with_candidates):
        """Fine-tune the SRM on ``phase`` samples; keep the best epoch only if validation improves."""
        if epochs == 0 or len(self.protocol.samples(phase)) == 0:
            self.stage_log[stage] = {"kept": False, "reason": "no epochs or no samples"}
            return
        srm = self.model.srm
        initial_state = copy.deepcopy(srm.state_dict())
        start_score = best_score = self.rerank_score()
        best_state, best_epoch = None, -1
        interaction = self.srm_interaction(phase)
        if with_candidates:
            cand_ids, cand_scores = self.candidates(phase, "stale")
        optimizer = torch.optim.Adam(srm.parameters(), lr=learning_rate)
        generator = torch.Generator().manual_seed(self.config["seed"])
        size = self.config["train_batch_size"]
        started = time.time()
        for epoch in range(epochs):
            srm.train()
            order = torch.randperm(len(interaction), generator=generator)
            for start in tqdm(range(0, len(order), size), desc=f"{stage} epoch {epoch}",
                              disable=not self.config["show_progress"], leave=False):
                index = order[start : start + size]
                batch = interaction[index].to(self.device)
                optimizer.zero_grad()
                if with_candidates:
                    loss = self.model.cooperative_loss(batch, cand_ids[index].to(self.device), cand_scores[index].to(self.device))
                else:
                    loss = self.model.calculate_loss(self.transform(self.dataset, batch))
                loss.backward()
                optimizer.step()
            score = self.rerank_score()
            self.logger.info(f"{stage} epoch {epoch}: valid re-rank {self.config['valid_metric']} {score:.4f}")
            self.tensorboard.add_scalar(f"{stage}/Valid/re-rank {self.config['valid_metric']}", score, epoch)
            if score > best_score:
                best_score, best_epoch, best_state = score, epoch, copy.deepcopy(srm.state_dict())
        kept = best_state is not None
        if kept:
            srm.load_state_dict(best_state)
        else:  # no epoch beat the starting SRM: undo the stage
            srm.load_state_dict(initial_state)
        self.stage_log[stage] = {
            "kept": kept, "best_epoch": best_epoch, "valid_before": round(start_score, 6),
            "valid_after": round(best_score, 6), "seconds": round(time.time() - started, 1),
        }
        self.logger.info(f"{stage}: {'kept epoch %d' % best_epoch if kept else 'no gain on validation, undone'}")

    def cooperative_training(self):
        self._fine_tune("cooperative", "train", self.config["coop_epochs"], self.config["coop_learning_rate"], True)

    def adaptive_retraining(self):
        self._fine_tune("retrain", "retrain", self.config["retrain_epochs"], self.config["retrain_learning_rate"], False)

