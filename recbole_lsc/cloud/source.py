"""The cloud as a :class:`~recbole_lsc.channel.CandidateSource`: a trained LLMRec in this process.

It answers "candidates for these histories" and nothing else; an HTTP service implements
the same interface.
"""

import dataclasses

import torch
from tqdm.auto import tqdm

from recbole_lsc.channel import CandidateList
from recbole_lsc.cloud.candidates import prefix_candidates


class InProcessCloud:
    """Exact top-k candidate lists of ``llm`` (an :class:`~recbole_lsc.cloud.llmrec.LLMRec`), in batches."""

    def __init__(self, llm, batch_size, device, model_id="LLMRec", show_progress=False):
        self.llm = llm
        self.batch_size = batch_size
        self.device = device
        self.model_id = model_id
        self.show_progress = show_progress

    @property
    def max_history(self):
        """How many of the newest history items the cloud reads."""
        return self.llm.max_history

    @torch.no_grad()
    def candidates(self, item_seq, item_len, k):
        self.llm.eval()
        ids, scores = [], []
        for start in tqdm(range(0, len(item_seq), self.batch_size), desc="cloud candidates",
                          disable=not self.show_progress, leave=False):
            seq = item_seq[start : start + self.batch_size].to(self.device)
            length = item_len[start : start + self.batch_size].to(self.device)
            batch_ids, batch_scores = self.llm.top_candidates(seq, length, k)
            ids.append(batch_ids.cpu())
            scores.append(batch_scores.cpu())
        if not ids:
            empty = torch.zeros(0, k)
            return CandidateList(empty.long(), empty, self.model_id, item_len.cpu())
        return CandidateList(torch.cat(ids), torch.cat(scores), self.model_id, item_len.cpu())

    def training_candidates(self, protocol, samples, view, k, batch_size):
        """Lists for many training samples at once (cooperative training's hard negatives),
        from windowed passes over each user's sequence (:func:`prefix_candidates`)."""
        lists = prefix_candidates(self.llm, protocol, samples, view, k, batch_size, self.device,
                                  show_progress=self.show_progress)
        return dataclasses.replace(lists, model_id=self.model_id)
