"""RecBole's hyper-parameter file, read without ``eval`` and checked before any training.

One parameter a line, as RecBole writes it::

    learning_rate choice [0.001, 0.01]
    hidden_size quniform 16,64,16
    fusion_alpha uniform 0.2,0.8
    weight_decay loguniform -9,-4

RecBole's own reader calls ``eval`` on choice values (a params file could run code) and
raises a bare ``ValueError`` deep inside the search; here every value is read with
``ast.literal_eval`` and a bad line (unknown type, non-literal value, wrong count) stops the
command in one line naming the file, the line and the fix. ``#`` comments and blank lines
are skipped. A ``quniform`` whose bounds and step are whole numbers yields integers (an int
config key such as ``hidden_size`` refuses ``32.0``). hyperopt is the optional ``tune`` extra:
without it this module imports, and :func:`require_hyperopt` says what to install.
"""

import ast
import itertools
import math
from dataclasses import dataclass

try:  # the optional `tune` extra
    from hyperopt import hp
    from hyperopt.pyll import scope
except ModuleNotFoundError:
    hp = scope = None

from recbole_lsc.errors import ConfigError

# type -> (numbers after it, how they are written)
RANGES = {"uniform": (2, "low,high"), "quniform": (3, "low,high,q"), "loguniform": (2, "log_low,log_high")}
TYPES = ("choice", *RANGES)


def require_hyperopt():
    """Refuse, in one line, to tune without the ``tune`` extra."""
    if hp is None:
        raise ConfigError("`recbole-lsc tune` needs the tune extra (hyperopt is not installed): "
                          "pip install 'recbole-lsc[tune]' (or -e '.[tune]' in a checkout)")


@dataclass(frozen=True)
class Param:
    """One line of a params file: ``name``, ``kind`` (a :data:`TYPES`), its ``values`` (the
    choices, or the range's numbers) and where it was written (``where``: 'FILE, line N')."""

    name: str
    kind: str
    values: tuple
    where: str

    def integral(self):
        """A ``quniform`` of whole numbers only: its samples are integers."""
        return self.kind == "quniform" and all(float(v).is_integer() for v in self.values)

    def extremes(self):
        """The values a config must accept before the search starts: every choice, or both ends
        of the range (``loguniform`` samples ``exp`` of its bounds, as hyperopt does)."""
        if self.kind == "choice":
            return list(self.values)
        low, high = self.values[:2]
        if self.kind == "loguniform":
            return [math.exp(low), math.exp(high)]
        return [int(low), int(high)] if self.integral() else [float(low), float(high)]

    def space(self):
        """This parameter's hyperopt expression."""
        if self.kind == "choice":
            return hp.choice(self.name, list(self.values))
        expression = getattr(hp, self.kind)(self.name, *map(float, self.values))
        return scope.int(expression) if self.integral() else expression


def _literal(text, where, fix):
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ConfigError(f"{where}: '{text}' is not a literal value; {fix}") from None


def _choices(text, where):
    fix = "write the choices as a list of literals, e.g. [0.001, 0.01] or ['SASRec', 'GRU4Rec']"
    values = _literal(text, where, fix)
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{where}: choice needs a non-empty list, got '{text}'; {fix}")
    return tuple(values)


def _range(kind, text, where):
    count, form = RANGES[kind]
    fix = f"write {kind} as {form} (numbers)"
    values = _literal(text, where, fix)
    values = values if isinstance(values, tuple) else (values,)
    if len(values) != count or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{where}: {kind} needs {count} numbers {form}, got '{text}'; {fix}")
    if values[0] >= values[1] or (kind == "quniform" and values[2] <= 0):
        raise ConfigError(f"{where}: {kind} needs low < high{' and q > 0' if kind == 'quniform' else ''}, "
                          f"got '{text}'; fix the bounds")
    return values


def parse_line(text, where):
    """The :class:`Param` of one line, or None for a blank or ``#`` comment line."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split(None, 2)
    if len(parts) < 3:
        raise ConfigError(f"{where}: '{text}' is not 'name type values'; "
                          "write e.g. 'learning_rate choice [0.001, 0.01]'")
    name, kind, rest = parts
    if kind not in TYPES:
        raise ConfigError(f"{where}: unknown type '{kind}' for '{name}'; use one of {', '.join(TYPES)}")
    values = _choices(rest, where) if kind == "choice" else _range(kind, rest, where)
    return Param(name, kind, values, where)


def read_params(path):
    """Every :class:`Param` of the file at ``path``; a missing or empty file, a bad line or a
    parameter written twice is refused in one line."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"params file '{path}' does not exist; check the path given to --params_file") from None
    params = {}
    for number, line in enumerate(lines, start=1):
        param = parse_line(line, f"{path}, line {number}")
        if param is not None and param.name in params:
            raise ConfigError(f"{param.where}: '{param.name}' is already tuned on {params[param.name].where}; "
                              "keep one line per parameter")
        if param is not None:
            params[param.name] = param
    if not params:
        raise ConfigError(f"params file '{path}' names no parameter; write one 'name type values' line per parameter")
    return list(params.values())


def search_space(params):
    """The hyperopt space of ``params``: ``{name: expression}``."""
    require_hyperopt()
    return {param.name: param.space() for param in params}


def grid(params):
    """Every combination of choice indexes, in file order (the exhaustive search's trials); a
    range line has no grid and is refused in one line."""
    for param in params:
        if param.kind != "choice":
            raise ConfigError(f"{param.where}: --algo exhaustive enumerates choice lines only, '{param.name}' is "
                              f"{param.kind}; write it as a choice or use --algo random or --algo bayes")
    return list(itertools.product(*(range(len(param.values)) for param in params)))
