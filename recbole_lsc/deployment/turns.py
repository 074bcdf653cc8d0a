"""The test users of a run as a device sees them: the history the cloud has seen and the fresh
one. The replay drives its device clients over them and ``recommend`` answers for one of them;
neither needs the other's dependencies (the replay needs the serve extra)."""

from dataclasses import dataclass

import numpy as np


@dataclass
class UserTurn:
    """One test user as a device sees it: the history the cloud has seen, the fresh one, the target."""

    user: int
    stale: np.ndarray
    fresh: np.ndarray
    target: int


def replay_turns(protocol):
    """The test users in protocol order (the order of the simulation's per-user vectors)."""
    samples = protocol.samples("test")
    stale_end = protocol.history_end(samples, "stale")
    turns = []
    for user, position, end, target in zip(samples.user, samples.position, stale_end, protocol.targets(samples)):
        sequence = protocol.items[protocol.offsets[user] : protocol.offsets[user] + position]
        turns.append(UserTurn(int(user), sequence[:end], sequence, int(target)))
    return turns
