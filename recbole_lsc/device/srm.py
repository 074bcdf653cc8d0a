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

    def list_loss(self, interaction, candidates, with_history=False):
        """CE of the target against a candidate list, from candidate-only scores: the loss a
        device that holds only the items it was sent (and its history, hence the target) can train.

        ``with_history``: the items of the sample's history are negatives too (those not in the
        list and not the target; the device holds them). A cloud list made from a stale history
        often holds items the user has taken since; where a dataset never repeats an item the
        SRM learns to push those down, where it does the positives say so.
        """
        target = interaction[self.fields["item"]]
        negatives = candidates.item_ids
        if with_history:
            negatives = torch.cat([negatives, _new_history_items(interaction[self.fields["item_seq"]], negatives)], 1)
        scores = self.candidate_scores(interaction, torch.cat([target.unsqueeze(1), negatives], dim=1))
        return _target_against_list(scores[:, 0], scores[:, 1:], negatives, target)

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


def _new_history_items(item_seq, list_ids):
    """``item_seq`` with padding, items already in ``list_ids`` and repeats set to 0 (padding)."""
    seen = (item_seq.unsqueeze(2) == list_ids.unsqueeze(1)).any(2)
    earlier = torch.triu(item_seq.unsqueeze(2) == item_seq.unsqueeze(1), diagonal=1).any(1)
    return item_seq.masked_fill(seen | earlier, 0)


def _target_against_list(target_scores, list_scores, list_ids, target):
    """CE over {target} + the list's other items (a listed copy of the target and padding are left out)."""
    list_scores = list_scores.masked_fill((list_ids == target.unsqueeze(1)) | (list_ids == 0), -torch.inf)
    logits = torch.cat([target_scores.unsqueeze(1), list_scores], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(target))
