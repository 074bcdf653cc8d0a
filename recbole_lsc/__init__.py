"""recbole-lsc: LSC4Rec device-cloud collaboration of an LLM and a small sequential
recommender, as a RecBole plugin."""

from recbole_lsc import compat  # noqa: F401  (must run before any recbole import)

__version__ = "0.1.0"
