"""Wall seconds of each step of a run, so the costs of a job are read from its results.json
(``runs[i].wall_seconds``; ``benchmarks/convergence.py`` tabulates them)."""

import contextlib
import time


class WallClock:
    """Accumulates wall seconds per named step (a step entered twice adds up)."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def step(self, name):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 1)
