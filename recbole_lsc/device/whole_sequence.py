"""Whole-sequence training of a RecBole sequential SRM (``srm_trainer: sequence``).

RecBole's trainer feeds one sample per prefix: a user with n targets is encoded n times, each
time to predict one item. SASRec's original training (and the gSASRec line of work) encodes a
window once and predicts the next item at every position of it. Here a user's targets are cut
from the end into windows of ``MAX_ITEM_LIST_LENGTH + 1`` items that advance by ``stride``
items; each window's loss covers its last ``stride`` targets only (its first window, which
starts at the user's first item, covers every target left), so every target is predicted
exactly once, from at least ``MAX_ITEM_LIST_LENGTH + 1 - stride`` items before it (from all of
them when fewer exist). ``stride = 1`` is RecBole's samples exactly; larger strides encode
``stride`` times fewer windows. The loss, the optimizer, the batch size in targets and the
early-stopping rule are the stock ones, so the model converges to the same place
(``benchmarks/convergence.py`` measures it against the stock trainer).

Only models whose encoder is causal and exposes an output per position, with RecBole's ``CE``
loss, train this way (:data:`POSITION_OUTPUTS`); every other model keeps RecBole's trainer.
"""

import numpy as np
import torch
import torch.nn.functional as F


def _sasrec_outputs(model, item_seq):
    """SASRec's (and its relatives') ``forward`` before it gathers the last position: ``[B, L, H]``."""
    positions = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
    embedded = model.item_embedding(item_seq) + model.position_embedding(positions).unsqueeze(0)
    embedded = model.dropout(model.LayerNorm(embedded))
    mask = model.get_attention_mask(item_seq)
    return model.trm_encoder(embedded, mask, output_all_encoded_layers=True)[-1]


def _gru4rec_outputs(model, item_seq):
    """GRU4Rec's ``forward`` before it gathers the last position: ``[B, L, H]``."""
    output, _ = model.gru_layers(model.emb_dropout(model.item_embedding(item_seq)))
    return model.dense(output)


# model class name -> per-position outputs; each is causal (position j reads items 0..j only)
POSITION_OUTPUTS = {"SASRec": _sasrec_outputs, "GRU4Rec": _gru4rec_outputs}


def supports_whole_sequence(model, config):
    """Whether ``model`` trains on whole windows: a causal per-position encoder and ``CE`` loss."""
    return type(model).__name__ in POSITION_OUTPUTS and config["loss_type"] == "CE"


def target_windows(protocol, phase, max_len, stride):
    """The targets of ``phase`` (``train`` or ``llm_train``) as windows (module docstring).

    Returns ``(items [W, max_len + 1], first_target [W])``: right-padded with 0; the loss of
    window w covers its positions ``first_target[w]..`` up to its last item (position 0 is
    context only, so ``first_target >= 1``).
    """
    if not 1 <= stride <= max_len:
        raise ValueError(f"stride must be between 1 and {max_len}, got {stride}")
    samples = protocol.samples(phase)
    last = np.full(len(protocol.lengths), -1, dtype=np.int64)
    np.maximum.at(last, samples.user, samples.position)  # phases are contiguous from position 1
    items, _, firsts = protocol.windows(last + 1, max_len, stride)
    return items, firsts


def window_loss(model, items, first_target):
    """Mean ``CE`` over the targets of a batch of windows (positions ``first_target..`` that hold an item).

    The logits are RecBole's for ``CE``: the output at a position against every row of
    ``item_embedding`` (padding included, as RecBole's own ``calculate_loss``).
    """
    inputs, targets = items[:, :-1], items[:, 1:]
    outputs = POSITION_OUTPUTS[type(model).__name__](model, inputs)
    positions = torch.arange(1, items.size(1), device=items.device).unsqueeze(0)
    scored = (positions >= first_target.unsqueeze(1)) & (targets > 0)
    logits = outputs[scored] @ model.item_embedding.weight.T
    return F.cross_entropy(logits, targets[scored])
