"""The items a device holds when it holds only what it was sent (``device_catalogue: candidates``).

At re-training a user's device holds the embeddings of its own history (every interaction
before its validation target) and of every item of the cloud lists it was sent. Re-training
there is a softmax over exactly those items (``DeviceSRM.held_items_loss``): a few hundred per
user on MovieLens, where a single list of C items as the only negatives overfits to it and
wrecks the SRM's ranking (docs/method.md, "Training").
"""

import numpy as np
import torch


def _positions_within_runs(counts):
    """Each element's position inside its run, for consecutive runs of ``counts`` elements."""
    counts = np.asarray(counts)
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


class HeldItems:
    """Each user's held item ids, stored compactly (one sorted run of ids per user).

    Args:
        users: ``[M]`` user ids and ``items``: ``[M]`` item ids, the pairs (user, item held);
            repeats and padding (item 0) are dropped.
    """

    def __init__(self, users, items):
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        keep = items > 0
        width = int(items.max(initial=0)) + 1
        pairs = np.unique(users[keep] * width + items[keep])  # sorted by user, then item
        self._items = torch.from_numpy(pairs % width)
        pair_users = pairs // width
        self._counts = torch.from_numpy(np.bincount(pair_users, minlength=int(users.max(initial=-1)) + 1))
        self._starts = torch.cumsum(self._counts, 0) - self._counts

    @classmethod
    def at_retraining(cls, protocol, list_users, lists):
        """What each user's device holds at re-training: its history before the validation target
        and the items of ``lists`` (row ``i`` was sent to user ``list_users[i]``)."""
        before_valid = np.maximum(protocol.lengths - 2, 0)
        history_users = np.repeat(np.arange(len(before_valid)), before_valid)
        history_items = protocol.items[np.repeat(protocol.offsets, before_valid) + _positions_within_runs(before_valid)]
        list_items = lists.item_ids.numpy()
        return cls(np.r_[history_users, np.repeat(np.asarray(list_users), list_items.shape[1])],
                   np.r_[history_items, list_items.ravel()])

    def items_of(self, user):
        """The sorted item ids user ``user`` holds."""
        start, count = int(self._starts[user]), int(self._counts[user])
        return self._items[start : start + count]

    def mask(self, users, width):
        """``[B, width]`` bool: which items each of ``users`` holds (ids >= ``width`` are left out)."""
        users = users.cpu()
        counts = self._counts[users]
        rows = torch.repeat_interleave(torch.arange(len(users)), counts)
        within = torch.from_numpy(_positions_within_runs(counts.numpy()))
        cols = self._items[torch.repeat_interleave(self._starts[users], counts) + within]
        inside = cols < width
        mask = torch.zeros(len(users), width, dtype=torch.bool)
        mask[rows[inside], cols[inside]] = True
        return mask
