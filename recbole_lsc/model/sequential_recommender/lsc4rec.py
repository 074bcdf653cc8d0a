"""LSC4Rec: a cloud LLM (LLMRec) proposes candidates from a stale history, a device SRM (any
RecBole sequential model, ``srm``) re-scores them with the fresh history.

The class holds both models and the SRM's losses; the stages (independent, cooperative,
re-training), fusion and request decisions live in ``LSC4RecTrainer`` and
``recbole_lsc.collab``. Its config includes LLMRec's keys (``base_config_models``); the
SRM gets a config of its own (its RecBole and plugin yaml plus the user's overrides).
"""

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_lsc.errors import ConfigError
from recbole_lsc.model.sequential_recommender.llmrec import LLMRec

COOP_LOSSES = ("mixed", "distill")
# RecBole SRMs whose full_sort_predict is forward(item_seq, item_seq_len) @ item_embedding.weight.T
DOT_PRODUCT_SRMS = ("SASRec", "GRU4Rec", "NARM", "STAMP")


class LSC4Rec(SequentialRecommender):
    input_type = InputType.POINTWISE
    base_config_models = ("LLMRec",)

    def __init__(self, config, dataset, srm_config=None, llm=None):
        super().__init__(config, dataset)
        _check_candidate_num(config, self.n_items - 1)
        from recbole_lsc.utils import get_model

        if srm_config is None:
            from recbole_lsc.config import srm_config_of

            srm_config = srm_config_of(config)
        self.srm_config = srm_config
        self.llm = llm if llm is not None else LLMRec(config, dataset)
        self.srm = get_model(config["srm"])(srm_config, dataset)
        self.coop_loss = config["coop_loss"]
        self.coop_weight = config["coop_weight"]
        if self.coop_loss not in COOP_LOSSES:
            raise ConfigError(f"coop_loss must be one of {COOP_LOSSES}, got '{self.coop_loss}'")

    def srm_full_scores(self, interaction):
        """The SRM's scores of the whole catalogue for fresh histories ``[B, n_items]``."""
        return self.srm.full_sort_predict(interaction)

    def srm_candidate_scores(self, interaction, candidate_ids):
        """The SRM's scores of each candidate list ``[B, C]`` (and the full scores)."""
        full = self.srm_full_scores(interaction)
        return full.gather(1, candidate_ids), full

    def srm_scores_of_candidates(self, interaction, candidate_ids):
        """The SRM's scores of the candidates only ``[B, C]``: what the device computes in deployment.

        For SRMs whose full ranking is ``forward(seq) . item_embedding`` the C candidate
        embeddings are gathered (C dot products per user instead of n_items); any other SRM
        scores the catalogue and gathers, which gives the same scores at full cost.
        """
        srm = self.srm
        if type(srm).__name__ in DOT_PRODUCT_SRMS:
            seq_output = srm.forward(interaction[srm.ITEM_SEQ], interaction[srm.ITEM_SEQ_LEN])
            return torch.einsum("bd,bcd->bc", seq_output, srm.item_embedding(candidate_ids))
        return self.srm_full_scores(interaction).gather(1, candidate_ids)

    def calculate_loss(self, interaction):
        """The SRM's own RecBole loss (independent training and adaptive re-training)."""
        return self.srm.calculate_loss(interaction)

    def cooperative_loss(self, interaction, candidate_ids, llm_scores):
        """Full-catalogue CE plus a term on the LLM's candidates, which are hard negatives.

        * ``mixed``: CE of the target against the candidates only (softmax over
          {target} + candidates), weighted by ``coop_weight``;
        * ``distill``: KL from the LLM's distribution over its candidates to the SRM's,
          weighted by ``coop_weight`` (the SRM learns the cloud's preferences among them).
        The full-catalogue term keeps the SRM's general ranking (alone, the restricted loss
        wrecks it: LSC4REC notes).
        """
        target = interaction[self.ITEM_ID]
        full = self.srm_full_scores(interaction)
        loss = F.cross_entropy(full, target)
        cand_scores = full.gather(1, candidate_ids)
        if self.coop_loss == "mixed":
            is_target = candidate_ids == target.unsqueeze(1)
            cand_scores = cand_scores.masked_fill(is_target, -torch.inf)
            logits = torch.cat([full.gather(1, target.unsqueeze(1)), cand_scores], dim=1)
            restricted = F.cross_entropy(logits, torch.zeros_like(target))
        else:
            teacher = torch.softmax(llm_scores, dim=1)
            restricted = F.kl_div(torch.log_softmax(cand_scores, dim=1), teacher, reduction="batchmean")
        return loss + self.coop_weight * restricted

    def predict(self, interaction):
        return self.srm.predict(interaction)

    def full_sort_predict(self, interaction):
        """The device model's own full ranking (the ``srm`` reference row)."""
        return self.srm_full_scores(interaction)


def _check_candidate_num(config, catalogue):
    """Refuse, before any training, candidate lists longer than what the LLM can propose."""
    masked = config["llm_max_len"] if config["llm_mask_history"] else 0
    limit = catalogue - masked
    if config["candidate_num"] > limit:
        why = f" minus the up to {masked} history items llm_mask_history removes" if masked else ""
        raise ConfigError(
            f"candidate_num ({config['candidate_num']}) is larger than the catalogue of {catalogue} items{why}; "
            f"set candidate_num to at most {limit}"
        )
