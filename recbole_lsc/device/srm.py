"""The device's small recommendation model: any RecBole sequential model, wrapped.

The wrapper scores what the device holds: the fresh history and the candidate lists it was
sent (``candidate_scores``), or the whole item table (``catalogue_scores``), and carries the
losses of the device-side training stages (docs/method.md, "Training").
"""

import torch
import torch.nn.functional as F
from recbole.data.transform import construct_transform
from torch import nn

from recbole_lsc.errors import ConfigError
from recbole_lsc.protocol import model_fields

COOP_LOSSES = ("mixed", "distill")
# RecBole SRMs whose full_sort_predict is forward(item_seq, item_seq_len) @ item_embedding.weight.T
DOT_PRODUCT_SRMS = ("SASRec", "GRU4Rec", "NARM", "STAMP")


class DeviceSRM(nn.Module):
    """A RecBole sequential model ``model`` with the scoring and losses the device needs.

    Args:
        model: the RecBole model (built from ``srm_config``).
        srm_config: its config (``MAX_ITEM_LIST_LENGTH`` is how much history it reads).
        dataset: the dataset, for the model's own batch transform (e.g. BERT4Rec's masking).
    """

    def __init__(self, model, srm_config, dataset):
        super().__init__()
        self.model = model
        self.max_len = srm_config["MAX_ITEM_LIST_LENGTH"]
        self.fields = model_fields(model)
        transform = construct_transform(srm_config)
        # a closure, not an attribute: copies of the SRM (one per training stage) share the dataset
        self._transform = lambda interaction: transform(dataset, interaction)

    @property
    def name(self):
        return type(self.model).__name__

    def catalogue_scores(self, interaction):
        """Scores ``[B, n_items]`` of the whole item table (needs the table on the device)."""
        return self.model.full_sort_predict(interaction)

    def candidate_scores(self, interaction, candidate_ids):
        """Scores ``[B, C]`` of each candidate list: what the device computes in deployment.

        For SRMs whose full ranking is ``forward(seq) . item_embedding`` only the C candidate
        embeddings are read (C dot products per user instead of n_items); any other SRM scores
        the catalogue and gathers, which gives the same scores at full cost.
        """
        model = self.model
        if self.name in DOT_PRODUCT_SRMS:
            seq_output = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
            return torch.einsum("bd,bcd->bc", seq_output, model.item_embedding(candidate_ids))
        return self.catalogue_scores(interaction).gather(1, candidate_ids)

    @torch.no_grad()
    def score_lists(self, interaction, item_ids, batch_size, device):
        """``candidate_scores`` of every list ``[N, C]``, in batches, on the CPU."""
        self.eval()
        parts = [self.candidate_scores(interaction[start : start + batch_size].to(device),
                                       item_ids[start : start + batch_size].to(device)).cpu()
                 for start in range(0, len(interaction), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, item_ids.size(1))

    @torch.no_grad()
    def score_catalogue(self, interaction, batch_size, device):
        """``catalogue_scores`` of every history ``[N, n_items]``, in batches, on the CPU."""
        self.eval()
        parts = [self.catalogue_scores(interaction[start : start + batch_size].to(device)).cpu()
                 for start in range(0, len(interaction), batch_size)]
        return torch.cat(parts)

    def loss(self, interaction):
        """The SRM's own RecBole loss, after its own batch transform (re-training)."""
        return self.model.calculate_loss(self._transform(interaction))

    def held_items_loss(self, interaction, held):
        """CE of the target over the items the device holds (``held``: a
        :class:`~recbole_lsc.device.held.HeldItems`): re-training on a device that holds only
        what it was sent.

        The catalogue's scores are computed and those of items the user does not hold are set
        to -inf: the loss (and its gradient) is the softmax over the held items alone, which the
        device computes from their embeddings; an item it does not hold gets no gradient.
        """
        target = interaction[self.fields["item"]]
        scores = self.catalogue_scores(interaction)
        holds = held.mask(interaction[self.fields["user"]], scores.size(1)).to(scores.device)
        holds[torch.arange(len(target), device=scores.device), target] = True  # the device saw its target
        return F.cross_entropy(scores.masked_fill(~holds, -torch.inf), target)

    def cooperative_loss(self, interaction, candidates, kind, weight):
        """Full-catalogue CE plus a term on the cloud's candidates, which are hard negatives.

        * ``mixed``: CE of the target against the candidates only (softmax over
          {target} + candidates), weighted by ``weight``;
        * ``distill``: KL from the LLM's distribution over its candidates (``candidates.scores``)
          to the SRM's, weighted by ``weight`` (the SRM learns the cloud's preferences among them).

        The full-catalogue term keeps the SRM's general ranking (alone, the restricted loss
        wrecks it).
        """
        if kind not in COOP_LOSSES:
            raise ConfigError(f"coop_loss must be one of {COOP_LOSSES}, got '{kind}'")
        target = interaction[self.fields["item"]]
        full = self.catalogue_scores(interaction)
        loss = F.cross_entropy(full, target)
        cand_scores = full.gather(1, candidates.item_ids)
        if kind == "mixed":
            restricted = _target_against_list(full.gather(1, target.unsqueeze(1)).squeeze(1), cand_scores,
                                              candidates.item_ids, target)
        else:
            teacher = torch.softmax(candidates.scores, dim=1)
            restricted = F.kl_div(torch.log_softmax(cand_scores, dim=1), teacher, reduction="batchmean")
        return loss + weight * restricted


def _target_against_list(target_scores, list_scores, list_ids, target):
    """CE over {target} + the list's other items (a listed copy of the target and padding are left out)."""
    list_scores = list_scores.masked_fill((list_ids == target.unsqueeze(1)) | (list_ids == 0), -torch.inf)
    logits = torch.cat([target_scores.unsqueeze(1), list_scores], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(target))
