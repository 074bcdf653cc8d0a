"""The config keys ``LSCConfig`` checks, in one table: each key's type and allowed values.

What a key means is written once, in the ``# (type) meaning`` comment of its line in
``properties/**/*.yaml`` (read by :func:`yaml_documentation`); :data:`SCHEMA` holds only what
the checks need. ``LSCConfig`` refuses a value that breaks it, in one line, before RecBole
or the plugin uses it, and ``docs/configuration.md`` is generated from both
(``python -m recbole_lsc.config_schema``), so the page, the checks and the yaml cannot drift.
"""

import glob
import os
import re
import sys
from dataclasses import dataclass

from recbole_lsc import properties
from recbole_lsc.cloud.precision import AUTOCAST_MODES
from recbole_lsc.device.features import DEVICE_CATALOGUES
from recbole_lsc.device.fusion import FUSION_NORMS
from recbole_lsc.device.per_device import RETRAIN_SCOPES
from recbole_lsc.device.policies import REQUEST_POLICIES
from recbole_lsc.device.srm import COOP_LOSSES
from recbole_lsc.device.training import STAGE_SELECTIONS

PROPERTIES_DIR = os.path.dirname(os.path.abspath(properties.__file__))
PAGE = os.path.join(os.path.dirname(PROPERTIES_DIR), "docs", "configuration.md")

# kind -> (what a value of it is, in an error message; the Python types it accepts)
KINDS = {
    "int": ("an integer", (int,)),
    "float": ("a number", (int, float)),
    "str": ("a string", (str,)),
    "bool": ("true or false", (bool,)),
    "settings": ("a list", (str, list, tuple)),  # one setting, or a list of them
    "shares": ("a list", (list, tuple)),  # numbers in [0, 1]
}


@dataclass(frozen=True)
class KeyRule:
    """What one key accepts: its ``kind`` (a key of :data:`KINDS`), inclusive bounds
    ``low``/``high`` (numbers), ``choices`` (strings, settings) and ``words`` a number key also
    takes (``'auto'``, ``'all'``)."""

    kind: str
    low: float = None
    high: float = None
    choices: tuple = ()
    words: tuple = ()

    def bounds(self):
        """``in [low, high]``, ``>= low`` or '' (unbounded)."""
        if self.low is not None and self.high is not None:
            return f"in [{self.low:g}, {self.high:g}]"
        return f">= {self.low:g}" if self.low is not None else ""

    def rule(self):
        """The whole rule, as an error message or the docs page says it."""
        if self.kind == "settings":
            return f"one or more of {', '.join(self.choices)} (a list without repeats)"
        if self.kind == "shares":
            return "a list of numbers in [0, 1]"
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        noun = KINDS[self.kind][0]
        also = "".join(f" or '{word}'" for word in self.words)
        return " ".join(part for part in (noun, self.bounds()) if part) + also

    def value_rule(self):
        """The rule a value of the right type broke: an integer's bounds alone, else :meth:`rule`."""
        return self.bounds() if self.kind == "int" and not self.choices else self.rule()


def integer(low=None, high=None):
    return KeyRule("int", low, high)


def number(low=None, high=None, words=()):
    return KeyRule("float", low, high, words=words)


def text(choices=()):
    return KeyRule("str", choices=tuple(choices))


SWITCH = KeyRule("bool")
POSITIVE, NONNEGATIVE = integer(1), integer(0)
LEARNING_RATE, SHARE = number(1e-12, 10), number(0, 1)

SCHEMA = {
    # RecBole's keys the plugin relies on (RecBole would fail deep inside training)
    "epochs": POSITIVE, "train_batch_size": POSITIVE, "eval_batch_size": POSITIVE, "stopping_step": NONNEGATIVE,
    "eval_step": NONNEGATIVE, "seed": NONNEGATIVE, "worker": NONNEGATIVE, "MAX_ITEM_LIST_LENGTH": POSITIVE,
    "learning_rate": LEARNING_RATE, "weight_decay": number(0),
    "hidden_size": POSITIVE, "embedding_size": POSITIVE, "inner_size": POSITIVE, "n_layers": POSITIVE,
    "n_heads": POSITIVE, "num_layers": POSITIVE,
    "hidden_dropout_prob": SHARE, "attn_dropout_prob": SHARE, "dropout_prob": SHARE,
    "checkpoint_dir": text(), "data_path": text(),
    # output and protocol
    "results_dir": text(), "trained_llm_cache": text(), "trained_srm_cache": text(), "llm_cache_dir": text(),
    "cloud_lag": NONNEGATIVE, "seeds": POSITIVE,
    # the cloud LLM
    "llm_hidden_size": POSITIVE, "llm_layers": POSITIVE, "llm_heads": POSITIVE, "llm_dropout": SHARE,
    "llm_max_len": POSITIVE, "llm_lora": SWITCH, "llm_lora_r": POSITIVE, "llm_lora_alpha": POSITIVE,
    "llm_lora_dropout": SHARE, "llm_epochs": POSITIVE, "llm_batch_size": POSITIVE,
    "llm_autocast": text(AUTOCAST_MODES), "llm_gradient_checkpointing": SWITCH, "llm_softmax_items": NONNEGATIVE,
    "llm_learning_rate": LEARNING_RATE, "llm_weight_decay": number(0), "llm_stopping_step": NONNEGATIVE,
    "llm_select_on": text(("fresh", "stale")), "llm_mask_history": SWITCH, "candidate_num": POSITIVE,
    # the device SRM and its stages
    "device_catalogue": KeyRule("settings", choices=DEVICE_CATALOGUES),
    "srm_train_window": text(("cloud", "all")), "srm_trainer": text(("sequence", "recbole")),
    "srm_window_stride": POSITIVE,
    "coop_train": SWITCH, "coop_loss": text(COOP_LOSSES), "coop_weight": number(0, 100), "coop_epochs": NONNEGATIVE,
    "coop_learning_rate": LEARNING_RATE, "retrain": SWITCH, "retrain_scope": KeyRule("settings", choices=RETRAIN_SCOPES),
    "retrain_epochs": NONNEGATIVE, "retrain_learning_rate": LEARNING_RATE, "retrain_replay": number(0, words=("all",)),
    "stage_selection": text(STAGE_SELECTIONS),
    # collaborative inference and requests
    "fusion_alpha": number(0, 1, words=("auto",)), "fusion_norm": text(FUSION_NORMS),
    "request_policy": text(REQUEST_POLICIES), "request_ratio": SHARE, "request_curve_ratios": KeyRule("shares"),
    # deployment
    "serve_host": text(), "serve_port": NONNEGATIVE, "serve_token_file": text(), "serve_batch_window_ms": number(0),
    "serve_max_batch": POSITIVE, "serve_max_queue": POSITIVE, "serve_max_latency_ms": NONNEGATIVE, "serve_threads": NONNEGATIVE,
    "serve_max_body_bytes": POSITIVE, "serve_max_history": POSITIVE, "serve_max_k": POSITIVE,
    "replay_bundle": text(), "replay_clients": POSITIVE, "replay_cloud_url": text(), "replay_stop_cloud_after": SHARE,
    "request_timeout": number(0.001, 3600),
}


def _type_error(key, rule, value):
    return (f"config key '{key}' must be {rule.rule()}, got {value!r} ({type(value).__name__}); "
            f"fix it in the yaml or on the command line (--{key}=VALUE)")


def _is_of(value, accepted):
    """``isinstance`` where a bool is only a bool (Python counts True as the integer 1)."""
    return isinstance(value, accepted) and (isinstance(value, bool) == (bool in accepted))


def _in_bounds(value, rule):
    return (rule.low is None or value >= rule.low) and (rule.high is None or value <= rule.high)


def _is_share(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


def refusal(key, value):
    """Why ``value`` is not a valid ``key`` (one line, saying what to write), or None.

    None (``~``) is always accepted: it is RecBole's "not set"."""
    rule = SCHEMA[key]
    if value is None or value in rule.words:
        return None
    if not _is_of(value, KINDS[rule.kind][1]):
        return _type_error(key, rule, value)
    if rule.kind == "settings":
        settings = [value] if isinstance(value, str) else list(value)
        valid = settings and all(s in rule.choices for s in settings) and len(set(settings)) == len(settings)
    elif rule.kind == "shares":
        valid = all(_is_share(share) for share in value)
    elif rule.choices:
        valid = value in rule.choices
    else:
        valid = rule.kind not in ("int", "float") or _in_bounds(value, rule)
    return None if valid else f"config key '{key}' must be {rule.value_rule()}, got {value!r}"


# ---------------------------------------------------------------- the yaml comments and the page
_KEY_LINE = re.compile(r"^(?P<key>[A-Za-z_][\w]*):(?P<value>[^#]*)#\s*\((?P<type>[^)]*)\)\s*(?P<meaning>.*)$")
_MORE_LINE = re.compile(r"^\s+#\s*(?P<more>.*)$")


@dataclass(frozen=True)
class KeyDoc:
    """One key's line in a yaml file: its default as written, ``(type)`` and meaning."""

    file: str
    key: str
    default: str
    type: str
    meaning: str


# the order of the page: the files loaded first come first
_FILE_ORDER = ("overall.yaml", "model", "cloud", "dataset")


def _yaml_files(folder):
    paths = glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True)
    return sorted(paths, key=lambda path: (_FILE_ORDER.index(os.path.relpath(path, folder).split(os.sep)[0]), path))


def yaml_documentation(folder=PROPERTIES_DIR):
    """Every top-level key of ``folder/**/*.yaml`` in load order, with its ``# (type) meaning``
    comment (continued on the following indented ``#`` lines; other indented lines continue its
    default, a yaml block); a key without one is an error."""
    docs = []
    for path in _yaml_files(folder):
        name = os.path.relpath(path, os.path.dirname(folder)).replace(os.sep, "/")
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        for number, line in enumerate(lines):
            if not line or line.startswith((" ", "#")):
                continue
            match = _KEY_LINE.match(line)
            if match is None:
                raise ValueError(f"{name}, line {number + 1}: '{line}' has no '# (type) meaning' comment")
            default, meaning = [match["value"].strip()], [match["meaning"].strip()]
            for more in lines[number + 1:]:
                if not more.startswith(" "):
                    break
                continued = _MORE_LINE.match(more)
                (meaning if continued else default).append(continued["more"].strip() if continued else more.strip())
            docs.append(KeyDoc(name, match["key"], " ".join(part for part in default if part), match["type"].strip(),
                               " ".join(meaning)))
    return docs


def _cell(text):
    """``text`` inside a markdown table cell: a '|' would end the cell."""
    return text.replace("|", "\\|")


def _prose(text):
    """``text`` as plain table prose: '<name>' placeholders would read as HTML tags."""
    return _cell(text).replace("<", "&lt;").replace(">", "&gt;")


def configuration_page(folder=PROPERTIES_DIR):
    """``docs/configuration.md``: one table per yaml file (key, default, type, what is checked,
    meaning), then the checked keys no plugin yaml sets (RecBole's)."""
    docs = yaml_documentation(folder)
    lines = ["# Configuration", "",
             "Generated by `python -m recbole_lsc.config_schema` from `recbole_lsc/config_schema.py` (the checks) "
             "and the `# (type) meaning` comments of `properties/**/*.yaml`; do not edit by hand.", "",
             "A value that breaks the *checked* column is refused in one line before any data is read; "
             "`~` (not set) is always accepted.", ""]
    for file in dict.fromkeys(doc.file for doc in docs):
        lines += [f"## `{file}`", "", "| key | default | type | checked | meaning |", "|---|---|---|---|---|"]
        for doc in (doc for doc in docs if doc.file == file):
            checked = SCHEMA[doc.key].rule() if doc.key in SCHEMA else ""
            lines.append(f"| `{doc.key}` | `{_cell(doc.default)}` | {_prose(doc.type)} | {_prose(checked)} | "
                         f"{_prose(doc.meaning)} |")
        lines.append("")
    documented = {doc.key for doc in docs}
    lines += ["## RecBole's keys the plugin checks", "",
              "Documented by RecBole; checked here because RecBole would only fail deep inside training.", "",
              "| key | checked |", "|---|---|"]
    lines += [f"| `{key}` | {_prose(rule.rule())} |" for key, rule in SCHEMA.items() if key not in documented]
    return "\n".join(lines) + "\n"


def write_configuration_page(path=PAGE):
    """Write :func:`configuration_page` to ``path`` (the committed ``docs/configuration.md``)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(configuration_page())
    return path


if __name__ == "__main__":
    sys.stdout.write(f"wrote {write_configuration_page()}\n")
