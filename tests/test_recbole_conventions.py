"""RecBole's conventions where its users look for them: the log file, get_trainer, recbole.data."""

import contextlib
import glob
import logging

from recbole.utils import ModelType

from recbole_lsc.cloud.trainer import LLMRecTrainer
from recbole_lsc.experiment.lsc4rec import LSC4RecTrainer
from recbole_lsc.quick_start import run_recbole_lsc
from recbole_lsc.safe_trainer import SafeCheckpointMixin
from recbole_lsc.utils import get_trainer
from tests.test_lsc4rec import TINY


@contextlib.contextmanager
def bare_root_logger():
    """A root logger without pytest's capture handlers inside the block (pytest adds them for
    each test phase, after fixtures): RecBole's ``init_logger`` only adds its file handler to a
    bare root logger (``logging.basicConfig``)."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    root.handlers = []
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved, level


def test_the_run_log_file_holds_the_result_tables(tiny_config):
    with bare_root_logger():
        out = run_recbole_lsc("LSC4Rec", "mltiny", config_dict={**tiny_config, **TINY, "state": "INFO"})
    (log_file,) = glob.glob("log/LSC4Rec/*.log")
    with open(log_file, encoding="utf-8") as handle:
        text = handle.read()
    first_row = out["rows"][0]
    assert "test result" in text and f"| {first_row['name']} | {first_row['role']} |" in text
    assert "request curves" in text and "| policy (" in text


def test_get_trainer_returns_the_plugin_trainers_for_its_models():
    assert get_trainer(ModelType.SEQUENTIAL, "LLMRec") is LLMRecTrainer
    assert get_trainer(ModelType.SEQUENTIAL, "LSC4Rec") is LSC4RecTrainer
    assert issubclass(get_trainer(ModelType.SEQUENTIAL, "SASRec"), SafeCheckpointMixin)


def test_importing_the_plugin_leaves_recbole_data_as_recbole_defined_it():
    import recbole.data
    import recbole.data.utils

    import recbole_lsc  # noqa: F401
    from recbole_lsc.data import loading

    assert recbole.data.create_dataset is recbole.data.utils.create_dataset
    assert recbole.data.create_dataset.__module__ == "recbole.data.utils"
    assert recbole.data.utils.load_split_dataloaders.__module__ == "recbole.data.utils"
    assert loading.create_dataset is not recbole.data.create_dataset
