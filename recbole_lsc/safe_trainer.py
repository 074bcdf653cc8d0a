"""RecBole trainers with safe checkpoints.

Every RecBole trainer the plugin hands out is wrapped so that checkpoints are safetensors
files (see :mod:`recbole_lsc.checkpoint`): torch >= 2.6 refuses RecBole's pickled
checkpoints, and unpickling a file a user could swap runs arbitrary code.
"""

import os
import uuid

from recbole_lsc.checkpoint import load_checkpoint, save_checkpoint


class SafeCheckpointMixin:
    """Replaces RecBole's ``torch.save``/``torch.load`` of a pickled dict by safetensors."""

    def __init__(self, config, model):
        super().__init__(config, model)
        # RecBole names the file <model>-<time to the second>: two runs started in the same
        # second would overwrite, and then reload, each other's best model. Add a unique tag.
        stem = os.path.splitext(self.saved_model_file)[0]
        self.saved_model_file = f"{stem}-{uuid.uuid4().hex[:8]}.safetensors"

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        meta = {"epoch": epoch, "cur_step": self.cur_step, "best_valid_score": float(self.best_valid_score)}
        save_checkpoint(path, self.model, meta, optimizer=self.optimizer)
        if verbose:
            self.logger.info(f"Saving current: {path}")

    def resume_checkpoint(self, resume_file):
        meta = load_checkpoint(str(resume_file), self.model, self.device, optimizer=self.optimizer)
        self.saved_model_file = str(resume_file)
        self.start_epoch = meta["epoch"] + 1
        self.cur_step = meta["cur_step"]
        self.best_valid_score = meta["best_valid_score"]
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model:
            path = model_file or self.saved_model_file
            load_checkpoint(path, self.model, self.device)
            self.logger.info(f"Loading model parameters from {path}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


_SAFE_CLASSES = {}


def safe_trainer_class(base):
    """``base`` (a RecBole trainer class) with safetensors checkpoints; one class per base."""
    if issubclass(base, SafeCheckpointMixin):
        return base
    if base not in _SAFE_CLASSES:
        _SAFE_CLASSES[base] = type(base.__name__, (SafeCheckpointMixin, base), {"__module__": __name__})
    return _SAFE_CLASSES[base]

