"""The device's small recommendation model: any RecBole sequential model, wrapped.

The wrapper scores what the device holds: the fresh history and the candidate lists it was
sent (``candidate_scores``), or the whole item table (``catalogue_scores``), and carries the
losses of the device-side training stages (docs/method.md, "Training"; docs/backbones.md for
how each RecBole model is handled).
"""

import inspect

import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction
from recbole.data.transform import construct_transform
from torch import nn

from recbole_lsc.device.negatives import negative_sampling
from recbole_lsc.errors import ConfigError
from recbole_lsc.protocol import model_fields
from recbole_lsc.random_streams import random_stream

COOP_LOSSES = ("mixed", "distill")
# how candidate_scores reads a list: the cost figures say which (``srm_candidate_scoring``)
CANDIDATE_EMBEDDINGS = "candidate embeddings only"
CATALOGUE_GATHER = "whole catalogue scored, candidates gathered"
_PROBE_ROWS = 4


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
        # closures, not attributes: copies of the SRM (one per training stage) share the dataset
        self._transform = lambda interaction: transform(dataset, interaction)
        self._negatives = negative_sampling(srm_config, dataset)
        self.dot_product_scores = scores_are_dot_products(model, self.max_len, self.fields)

    @property
    def name(self):
        return type(self.model).__name__

    def catalogue_scores(self, interaction):
        """Scores ``[B, n_items]`` of the whole item table (needs the table on the device)."""
        return self.model.full_sort_predict(interaction)

    @property
    def candidate_scoring(self):
        """How :meth:`candidate_scores` reads a list (:data:`CANDIDATE_EMBEDDINGS` or :data:`CATALOGUE_GATHER`)."""
        return CANDIDATE_EMBEDDINGS if self.dot_product_scores else CATALOGUE_GATHER

    def candidate_scores(self, interaction, candidate_ids):
        """Scores ``[B, C]`` of each candidate list: what the device computes in deployment.

        For SRMs whose full ranking is ``forward(seq) . item_embedding``
        (:func:`scores_are_dot_products`) only the C candidate embeddings are read (C dot
        products per user instead of n_items); any other SRM scores the catalogue and gathers,
        which gives the same scores at full cost.
        """
        model = self.model
        if self.dot_product_scores:
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
        """The SRM's own RecBole loss (re-training), on the batch as RecBole's training loader
        hands it over: the SRM's own transform, then the negatives its loss reads, if any."""
        batch = self._transform(interaction)
        if self._negatives is not None:
            device = batch[self.fields["item"]].device
            batch = self._negatives(batch.to("cpu"), self.model).to(device)
        return self.model.calculate_loss(batch)

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


def scores_are_dot_products(model, max_len, fields):
    """Whether ``model``'s full ranking is ``forward(item_seq, item_seq_len) @ item_embedding.weight.T``:
    then a candidate's score needs only its own embedding.

    Recognised on the model itself rather than from a list of names, so every RecBole model of
    that form (SASRec, GRU4Rec, NARM, STAMP, SRGNN, the feature and knowledge-graph variants, ...)
    and any new one is covered: its ``forward`` reads the history alone (RecBole's
    ``(item_seq, item_seq_len)`` signature) and, on a few random histories in eval mode, the
    full ranking equals those dot products (to float precision, relative to the scores' scale).
    The caller's random state and the model's train/eval mode are left as they were.
    """
    table = getattr(model, "item_embedding", None)
    if not isinstance(table, nn.Embedding) or table.num_embeddings < 2 or \
            list(inspect.signature(model.forward).parameters)[:2] != ["item_seq", "item_seq_len"]:
        return False
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, max_len + 1, (_PROBE_ROWS,), generator=generator)
    items = torch.randint(1, table.num_embeddings, (_PROBE_ROWS, max_len), generator=generator)
    items = items * (torch.arange(max_len) < lengths.unsqueeze(1))
    probe = Interaction({fields["user"]: torch.ones(_PROBE_ROWS, dtype=torch.long), fields["item"]: items[:, 0],
                         fields["item_seq"]: items, fields["item_seq_len"]: lengths}).to(table.weight.device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), random_stream(0):
            full = model.full_sort_predict(probe)
            output = model.forward(probe[fields["item_seq"]], probe[fields["item_seq_len"]])
    finally:
        model.train(training)
    if not torch.is_tensor(output) or output.shape != (_PROBE_ROWS, table.embedding_dim):
        return False  # e.g. KSR's output is wider than its item table, SASRecCPR's a list of facets
    dot = output @ table.weight.detach().T
    scale = float(full.abs().max()) if full.numel() else 0.0
    return full.shape == dot.shape and bool(torch.allclose(full, dot, rtol=1e-4, atol=1e-5 * scale))


def _target_against_list(target_scores, list_scores, list_ids, target):
    """CE over {target} + the list's other items (a listed copy of the target and padding are left out)."""
    list_scores = list_scores.masked_fill((list_ids == target.unsqueeze(1)) | (list_ids == 0), -torch.inf)
    logits = torch.cat([target_scores.unsqueeze(1), list_scores], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(target))
