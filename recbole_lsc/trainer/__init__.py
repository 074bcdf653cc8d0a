"""Trainers: RecBole's, made checkpoint-safe, and the plugin's own (``<Model>Trainer``)."""

from recbole_lsc.trainer.llmrec_trainer import LLMRecTrainer
from recbole_lsc.trainer.lsc4rec_trainer import LSC4RecTrainer
from recbole_lsc.trainer.safe_checkpoint import SafeCheckpointMixin, SafeTrainer, safe_trainer_class

__all__ = ["LLMRecTrainer", "LSC4RecTrainer", "SafeCheckpointMixin", "SafeTrainer", "safe_trainer_class"]
