"""The device-cloud protocol (docs/method.md, "Protocol") on top of one RecBole dataset.

For a user sequence i_1..i_n (RecBole's LS valid_and_test split, order TO) the test target
is i_n, the validation target i_{n-1} and the training targets i_2..i_{n-2}. With
``cloud_lag`` = g the cloud has not seen the newest g interactions:

* every sample has a **fresh** history (what the device sees: all items before the target)
  and a **stale** one (what the cloud sees: the fresh history minus its last g items);
* ``llm_train``: samples whose target the cloud has seen (targets i_2..i_{n-2-g});
* ``retrain``: the freshest training samples, whose targets the cloud has not seen
  (i_{n-1-g}..i_{n-2}), for the device's adaptive re-training.

A sample is stored as (user, position of its target in the user's sequence); histories of
any length are cut from the sequence on demand, so the SRM (short) and the LLM (long) read
the same samples with different ``max_len``.

A user needs ``MIN_INTERACTIONS`` = 4 interactions (i_1 as context, then a train, a valid
and a test target); below that RecBole's split and these phases disagree, so LLMRec and
LSC4Rec drop such users by default and ``from_dataset`` refuses a dataset that still has
them. Users shorter than ``cloud_lag + 4`` give the cloud no training target (it still
serves them from their stale history, which is empty at test when n <= g + 1); they are
counted and logged, and a lag that leaves the cloud nothing to learn is refused.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from recbole.data.interaction import Interaction

from recbole_lsc.errors import ConfigError

MIN_INTERACTIONS = 4
PHASES = ("train", "valid", "test", "llm_train", "retrain")
TRAINING_PHASES = ("train", "llm_train")  # many samples per user: lists from windowed passes
VIEWS = ("fresh", "stale")


def user_sequences(dataset):
    """Each user's full item sequence, in RecBole's order, from a sequential dataset.

    RecBole orders a user's interactions by a stable sort on (user, time) and then turns
    i_1..i_n into samples (i_1..i_{t-1} -> i_t). Before ``dataset.build()`` the rows are the
    raw interactions and are sorted the same way here; after it they are the augmented
    samples, and the sequence is the first sample's first history item followed by every
    target (``build`` re-sorts rows stably by time, which keeps each user's order).
    Returns a list indexed by user id (index 0 = padding user: empty).
    """
    inter = dataset.inter_feat
    if isinstance(inter, pd.DataFrame):  # not built yet: raw interactions
        users = inter[dataset.uid_field].to_numpy()
        items = inter[dataset.iid_field].to_numpy()
        # RecBole sorts the float32 tensor it makes of this column: sort on float32 too.
        order = np.argsort(inter[dataset.time_field].to_numpy().astype(np.float32), kind="stable")
        order = order[np.argsort(users[order], kind="stable")]
        users, items = users[order], items[order]
        heads = np.zeros(0, dtype=np.int64)
    else:
        users = inter[dataset.uid_field].numpy()
        order = np.argsort(users, kind="stable")
        users = users[order]
        items = inter[dataset.iid_field].numpy()[order]
        heads = inter[dataset.item_id_list_field][:, 0].numpy()[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(users)]
    sequences = [np.zeros(0, dtype=np.int64) for _ in range(dataset.user_num)]
    for start, end in zip(starts, ends):
        seq = items[start:end] if len(heads) == 0 else np.r_[heads[start], items[start:end]]
        sequences[users[start]] = seq.astype(np.int64)
    return sequences


@dataclass(frozen=True)
class Samples:
    """Next-item samples: ``target = sequence[user][position]``, history = items before it."""

    user: np.ndarray
    position: np.ndarray

    def __len__(self):
        return len(self.user)


class DeviceCloudProtocol:
    """Fresh/stale histories and phase samples for every user of a dataset.

    Args:
        sequences: list indexed by user id of int arrays (chronological item ids).
        cloud_lag: g, how many of the newest interactions the cloud has not seen.
    """

    def __init__(self, sequences, cloud_lag=2):
        if cloud_lag < 0:
            raise ValueError(f"cloud_lag must be >= 0, got {cloud_lag}")
        self.cloud_lag = int(cloud_lag)
        self.lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
        self.offsets = np.r_[0, np.cumsum(self.lengths)[:-1]].astype(np.int64)
        self.items = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in sequences] or [np.zeros(0, np.int64)])
        self._samples = {phase: self._phase_samples(phase) for phase in PHASES}

    @classmethod
    def from_dataset(cls, dataset, cloud_lag=2):
        """The protocol of a RecBole dataset, checked by ``check_coverage`` (raises ConfigError)."""
        protocol = cls(user_sequences(dataset), cloud_lag)
        protocol.check_coverage()
        return protocol

    def check_coverage(self):
        """Refuse users too short for the phases or a lag that starves the cloud; log who is affected."""
        n, g = self.lengths[self.lengths > 0], self.cloud_lag
        if len(n) == 0:
            raise ConfigError(
                f"the dataset has no user with {MIN_INTERACTIONS} or more interactions; check user_inter_num_interval "
                "and the other filters, or use a dataset with longer user histories"
            )
        short = int((n < MIN_INTERACTIONS).sum())
        if short:
            raise ConfigError(
                f"{short} of {len(n)} users have fewer than {MIN_INTERACTIONS} interactions (each needs a train, a "
                f"valid and a test target); drop them with user_inter_num_interval: '[{MIN_INTERACTIONS},inf)'"
            )
        if len(self.samples("llm_train")) == 0:
            raise ConfigError(
                f"cloud_lag={g} is too large for this dataset: its longest user has {int(n.max())} interactions, so the "
                f"cloud has no training target (a user needs more than cloud_lag + 3); lower cloud_lag"
            )
        unseen = int((n < g + MIN_INTERACTIONS).sum())
        if unseen:
            empty = int((n <= g + 1).sum())
            logging.getLogger().warning(
                f"cloud_lag={g}: {unseen} of {len(n)} users have fewer than {g + MIN_INTERACTIONS} interactions, so "
                f"the cloud never trains on a target of theirs; it still serves them from their stale history"
                + (f", which is empty at test for {empty} of them (the LLM answers from its prompt alone)" if empty else "")
            )

    def _phase_samples(self, phase):
        g, n = self.cloud_lag, self.lengths
        # 0-based target positions per user: [low, high) ; test = n-1, valid = n-2, train 1..n-3
        low, high = {
            "test": (n - 1, n),
            "valid": (n - 2, n - 1),
            "train": (np.ones_like(n), n - 2),
            "llm_train": (np.ones_like(n), n - 2 - g),
            "retrain": (n - 2 - g, n - 2),
        }[phase]
        low = np.maximum(low, 1)  # a target needs at least one item before it
        high = np.maximum(high, low)
        counts = high - low
        users = np.repeat(np.arange(len(n)), counts)
        positions = np.repeat(low - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
        return Samples(user=users, position=positions.astype(np.int64))

    def samples(self, phase):
        if phase not in PHASES:
            raise ValueError(f"unknown phase '{phase}', expected one of {PHASES}")
        return self._samples[phase]

    def targets(self, samples):
        return self.items[self.offsets[samples.user] + samples.position]

    def history_end(self, samples, view):
        """Exclusive end position of the history: the target (fresh) or g items earlier (stale)."""
        if view == "fresh":
            return samples.position
        if view == "stale":
            return np.maximum(samples.position - self.cloud_lag, 0)
        raise ValueError(f"unknown view '{view}', expected one of {VIEWS}")

    def history(self, samples, view, max_len):
        """Right-padded histories keeping the newest ``max_len`` items, RecBole style.

        Returns ``(item_seq [N, max_len] int64, item_len [N] int64)``; padding id is 0.
        """
        end = self.history_end(samples, view)
        length = np.minimum(end, max_len)
        start = end - length
        cols = np.arange(max_len)
        index = (self.offsets[samples.user] + start)[:, None] + cols[None, :]
        valid = cols[None, :] < length[:, None]
        seq = np.where(valid, self.items[np.where(valid, index, 0)] if len(self.items) else 0, 0)
        return seq.astype(np.int64), length.astype(np.int64)

    def interaction(self, samples, view, max_len, fields):
        """A RecBole Interaction that any sequential model's ``predict``/``full_sort_predict`` reads.

        ``fields`` maps roles to field names: ``user``, ``item``, ``item_seq``, ``item_seq_len``
        (from the model: ``USER_ID``, ``ITEM_ID``, ``ITEM_SEQ``, ``ITEM_SEQ_LEN``).
        """
        seq, length = self.history(samples, view, max_len)
        return Interaction(
            {
                fields["user"]: torch.from_numpy(samples.user),
                fields["item"]: torch.from_numpy(self.targets(samples)),
                fields["item_seq"]: torch.from_numpy(seq),
                fields["item_seq_len"]: torch.from_numpy(length),
            }
        )

    def cloud_training_windows(self, max_len):
        """The LLM's training data as windows for next-item loss on every position.

        The cloud's sequence of a user is i_1..i_{n-2-g} (it holds every ``llm_train`` target).
        It is cut from the end into windows of at most ``max_len + 1`` items that overlap by
        one item, so each target i_t (t >= 2) is predicted exactly once, from the up to
        ``max_len`` items before it inside its window. Returns ``(items [W, max_len + 1],
        lengths [W])``, right-padded with 0; the first item of a window is context only.
        """
        items, lengths, _ = self.windows(np.maximum(self.lengths - 2 - self.cloud_lag, 0), max_len, max_len)
        return items, lengths

    def windows(self, ends, max_len, stride):
        """Each user's items ``0..ends[user] - 1`` cut from the end into windows of at most
        ``max_len + 1`` items that advance by ``stride``: every position >= 1 is a target of
        exactly one window, its newest ``stride`` (the first window of a user: all it has left).

        Returns ``(items [W, max_len + 1], lengths [W], first_target [W])``, right-padded with 0;
        window w's targets are its positions ``first_target[w]..lengths[w] - 1``.
        """
        span = max_len + 1
        rows, lengths, firsts = [], [], []
        for user in np.flatnonzero(ends >= 2):
            sequence = self.items[self.offsets[user] : self.offsets[user] + ends[user]]
            end = len(sequence)
            while end >= 2:
                start = max(end - span, 0)
                row = np.zeros(span, dtype=np.int64)
                row[: end - start] = sequence[start:end]
                rows.append(row)
                lengths.append(end - start)
                firsts.append(1 if start == 0 else max(end - stride - start, 1))
                if start == 0:
                    break
                end -= stride
        if not rows:
            return np.zeros((0, span), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.stack(rows), np.array(lengths, dtype=np.int64), np.array(firsts, dtype=np.int64)


def model_fields(model):
    """The field names a RecBole sequential model reads, for ``DeviceCloudProtocol.interaction``."""
    return {"user": model.USER_ID, "item": model.ITEM_ID, "item_seq": model.ITEM_SEQ, "item_seq_len": model.ITEM_SEQ_LEN}
