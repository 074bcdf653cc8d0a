"""The candidate lists each phase's users hold, asked of the cloud once per (phase, view).

A simulation of many devices: every user of a phase sends its history (``stale``: what the
cloud has seen; ``fresh``: after a request) and keeps the cloud's answer. Lists do not
depend on the device model, so every SRM state of a run re-ranks the same lists.
"""

import torch

from recbole_lsc.protocol import TRAINING_PHASES


class CloudLists:
    """Cached :class:`~recbole_lsc.channel.CandidateList` per (phase, view) from ``cloud``."""

    def __init__(self, cloud, protocol, config):
        self.cloud, self.protocol = cloud, protocol
        self.num = config["candidate_num"]
        self.training_batch_size = config["llm_batch_size"]
        self.passes = {}  # "phase/view" -> cloud passes (one per cache fill)
        self._cache = {}

    def get(self, phase, view):
        key = (phase, view)
        if key not in self._cache:
            samples = self.protocol.samples(phase)
            if phase in TRAINING_PHASES:
                lists = self.cloud.training_candidates(self.protocol, samples, view, self.num, self.training_batch_size)
            else:
                item_seq, item_len = self.protocol.history(samples, view, self.cloud.max_history)
                lists = self.cloud.candidates(torch.from_numpy(item_seq), torch.from_numpy(item_len), self.num)
            self._cache[key] = lists
            self.passes[f"{phase}/{view}"] = self.passes.get(f"{phase}/{view}", 0) + 1
        return self._cache[key]
