"""Random streams of their own: a row never depends on what else a run built before it.

Each model, stage and device draws its dropout and batch order from generators seeded with
:func:`derived_seed` of the run's seed and its own name (docs/method.md, "Training"), and leaves
the process's generators as it found them.
"""

import contextlib
import hashlib

import numpy as np
import torch


def derived_seed(seed, *names):
    """A seed of its own for one model, stage or device: a hash of the run's ``seed`` and
    ``names`` (strings or ints), the same on every machine and whatever else ran before."""
    text = "/".join(str(name) for name in (seed, *names))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


@contextlib.contextmanager
def random_stream(seed):
    """Inside the block torch's global generators (CPU and the current CUDA device, which
    RecBole models' dropout reads) are seeded with ``seed``; after it they are as before.
    Yields a CPU generator seeded with ``seed`` for batch orders."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def numpy_stream_from_torch():
    """Inside the block ``np.random`` (which RecBole's samplers draw from) is seeded with one draw
    of torch's global generator, so it follows the stream of the stage or device that seeded
    torch's; after the block ``np.random`` is as before."""
    state = np.random.get_state()
    np.random.seed(int(torch.randint(0, 2**32 - 1, (1,)).item()))
    try:
        yield
    finally:
        np.random.set_state(state)
