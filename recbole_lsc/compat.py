"""Keeps RecBole 1.2.1 importable, quiet and safe on today's numpy, torch and setuptools.

Imported by ``recbole_lsc/__init__.py`` before any recbole module. It adds aliases that
newer numpy removed and silences warnings RecBole triggers every epoch; it does not touch
``torch.load`` (checkpoints are handled safely in :mod:`recbole_lsc.checkpoint`).

It rebinds no RecBole function: ``recbole.data.create_dataset`` stays RecBole's, and the
plugin's paths call :mod:`recbole_lsc.data.loading` (which never unpickles RecBole's cached
datasets or dataloaders) explicitly.

It also switches autograd anomaly detection back off: RecBole's ``sine.py`` turns it on for
the whole process when ``recbole.model.sequential_recommender`` is imported, which halves
training speed without changing any result.
"""

import warnings

import numpy as np

# RecBole's Config.compatibility_settings() reads these names; numpy 2 removed them.
for _old, _new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_), ("bool8", np.bool_)):
    if not hasattr(np, _old):
        setattr(np, _old, _new)

warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\..*")

import recbole.model.sequential_recommender  # noqa: E402,F401  (runs sine.py's global switch once)
import torch  # noqa: E402

torch.autograd.set_detect_anomaly(False)
