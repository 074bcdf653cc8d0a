"""The cloud's candidate lists for training samples (cooperative training's hard negatives).

For evaluation samples (one per user) the cloud reads each exact history
(:class:`~recbole_lsc.cloud.source.InProcessCloud`). For the ~100k training samples of
cooperative training that would cost ~50 forward passes per user, so ``prefix_candidates``
reads every user's sequence in overlapping windows instead: one causal forward pass scores the next item after every prefix at once (about one epoch of LLM
inference in total). Each prefix is read from the window that gives it the most context
(at least ``max_len // 2`` items, or all of them near the start of a sequence). These
training candidates do not apply ``llm_mask_history``; evaluation candidates do.
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from recbole_lsc.channel import CandidateList


def _windows(last_end, span, stride):
    """Windows ``(user, start, length)`` covering positions 0..last_end[u]-1 of each sequence."""
    rows = []
    for user, end in enumerate(last_end):
        start = 0
        while start < end:
            rows.append((user, start, min(span, end - start)))
            if start + span >= end:
                break
            start += stride
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


@torch.no_grad()
def _prefix_top_candidates(llm, protocol, last_end, num, batch_size, device, show_progress):
    """Top-``num`` candidates after every prefix ``sequence[:end]``, ``1 <= end <= last_end[u]``,
    in flat slots ``offsets[u] + end - 1``."""
    span = llm.max_history
    all_ids = torch.zeros(len(protocol.items), num, dtype=torch.long)
    all_scores = torch.zeros(len(protocol.items), num)
    filled = np.zeros(len(protocol.items), dtype=bool)
    windows = _windows(last_end, span, max(span // 2, 1))
    cols = np.arange(span)
    for first in tqdm(range(0, len(windows), batch_size), desc="LLM training candidates",
                      disable=not show_progress, leave=False):
        chunk = windows[first : first + batch_size]
        users, starts, lengths = chunk[:, 0], chunk[:, 1], chunk[:, 2]
        index = (protocol.offsets[users] + starts)[:, None] + cols[None, :]
        valid = cols[None, :] < lengths[:, None]
        items = np.where(valid, protocol.items[np.where(valid, index, 0)], 0)
        flat = index[valid]
        # windows are in (user, start) order, so the first time a prefix appears (in this
        # chunk or an earlier one) is the window that gives it the most context
        _, first_seen = np.unique(flat, return_index=True)
        keep = first_seen[~filled[flat[first_seen]]]
        if len(keep) == 0:
            continue
        items_t, lengths_t = torch.from_numpy(items).to(device), torch.from_numpy(lengths).to(device)
        hidden = llm.sequence_hidden(items_t, lengths_t)[:, len(llm.prompt_ids) :]
        # the item softmax and top-k, the costly part, only for the prefixes kept
        kept_hidden = hidden[torch.from_numpy(valid).to(device)][torch.from_numpy(keep).to(device)]
        top_scores, top_ids = torch.topk(torch.log_softmax(llm.item_logits(kept_hidden), dim=-1), num, dim=-1)
        all_ids[flat[keep]] = top_ids.cpu()
        all_scores[flat[keep]] = top_scores.cpu()
        filled[flat[keep]] = True
    return all_ids, all_scores


@torch.no_grad()
def prefix_candidates(llm, protocol, samples, view, num, batch_size, device, show_progress=False):
    """Top-``num`` LLM candidates of ``samples`` with ``view`` histories, from windowed causal
    passes (see the module docstring), as a :class:`~recbole_lsc.channel.CandidateList` (model id "LLMRec")."""
    llm.eval()
    ends = protocol.history_end(samples, view)  # history = sequence[:end]
    last_end = np.zeros(len(protocol.lengths), dtype=np.int64)
    np.maximum.at(last_end, samples.user, ends)
    all_ids, all_scores = _prefix_top_candidates(llm, protocol, last_end, num, batch_size, device, show_progress)
    # prefixes of length 0 (stale history empty): the prompt-only prediction, shared by all
    empty = torch.zeros(1, 1, dtype=torch.long, device=device)
    prompt_ids, prompt_scores = llm.top_candidates(empty, torch.zeros(1, dtype=torch.long, device=device), num)
    ids = prompt_ids.cpu().repeat(len(samples), 1)
    scores = prompt_scores.cpu().repeat(len(samples), 1)
    has_history = ends > 0
    slot = torch.from_numpy((protocol.offsets[samples.user] + ends - 1)[has_history])
    picked = torch.from_numpy(np.flatnonzero(has_history))
    ids[picked] = all_ids[slot]
    scores[picked] = all_scores[slot]
    return CandidateList(ids, scores, "LLMRec", torch.from_numpy(np.minimum(ends, llm.max_history)))
