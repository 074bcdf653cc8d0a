"""Trainers: RecBole's, made checkpoint-safe, and the plugin's own (``<Model>Trainer``)."""

from recbole_lsc.trainer.llmrec_trainer import LLMRecTrainer
from recbole_lsc.trainer.safe_checkpoint import SafeCheckpointMixin, SafeTrainer, safe_trainer_class

__all__ = ["LLMRecTrainer", "SafeCheckpointMixin", "SafeTrainer", "safe_trainer_class"]
