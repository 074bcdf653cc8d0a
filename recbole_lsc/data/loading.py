"""RecBole's dataset loading without its pickle caches, and with what cleaning did, counted.

RecBole's ``create_dataset`` unpickles ``<checkpoint_dir>/<dataset>-<Class>.pth`` (or
``dataset_save_path``) when it exists, and ``data_preparation`` unpickles
``<dataset>-for-<model>-dataloader.pth`` (or ``dataloaders_save_path``): a file anyone who can
write to ``saved/`` can swap, and unpickling it runs arbitrary code. This module's
:func:`create_dataset` and :func:`data_preparation` always rebuild from the atomic files and
only warn that such a file is ignored; every plugin path calls them explicitly, and
``recbole.data`` keeps RecBole's own functions (importing the plugin rebinds nothing in
RecBole). ``LSCConfig`` refuses the options that would write them.

Every dataset class reads its atomic files through
:class:`~recbole_lsc.data.atomic.AtomicFileMixin` (quotes, line ends, byte-order marks, bad
bytes and missing columns) and keeps preloaded vectors as float32
(:class:`Float32PreloadMixin`). Sequential datasets are built as :class:`LSCSequentialDataset`,
RecBole's class plus one log line per cleaning step that changed the data: duplicate (user, item) rows kept or dropped,
rows out of time order (RecBole sorts them; ties keep file order) and users or interactions
removed by the filters.
"""

import importlib
import logging
import os

import numpy as np
from recbole.data.dataset import SequentialDataset
from recbole.data.utils import create_samplers, get_dataloader
from recbole.sampler import KGSampler
from recbole.utils import ModelType, set_color

from recbole_lsc.data.atomic import AtomicFileMixin
from recbole_lsc.errors import ConfigError

_TYPE_TO_CLASS = {
    ModelType.GENERAL: "Dataset",
    ModelType.SEQUENTIAL: "SequentialDataset",
    ModelType.CONTEXT: "Dataset",
    ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
    ModelType.TRADITIONAL: "Dataset",
    ModelType.DECISIONTREE: "Dataset",
}


def _inter_stats(frame, uid, iid, time):
    """Rows, users, repeated (user, item) rows, and same-user steps back in time or tied."""
    stats = {"rows": len(frame), "users": int(frame[uid].nunique()), "duplicates": int(frame.duplicated([uid, iid]).sum())}
    if time in frame:
        step = frame.groupby(uid, sort=False)[time].diff()
        stats["out_of_order"], stats["ties"] = int((step < 0).sum()), int((step == 0).sum())
    return stats


class Float32PreloadMixin:
    """Put before a RecBole Dataset class: preloaded vectors (``preload_weight``) are float32.

    RecBole keeps them as float64 numpy arrays; a model parameter copies them into float32
    anyway, but KSR multiplies its relation vectors, made a float64 tensor, with float32 states:
    a dtype error in RecBole 1.2.1. float32 is the dtype of every model's parameters.
    """

    def _preload_weight_matrix(self):
        super()._preload_weight_matrix()
        self._preloaded_weight = {field: matrix.astype(np.float32) for field, matrix in self._preloaded_weight.items()}


class LSCSequentialDataset(AtomicFileMixin, Float32PreloadMixin, SequentialDataset):
    """RecBole's SequentialDataset that logs, with counts, what its data filtering changed."""

    def _data_filtering(self):
        uid, iid, time = self.uid_field, self.iid_field, self.time_field
        before = _inter_stats(self.inter_feat, uid, iid, time)
        try:
            super()._data_filtering()
        except ValueError as err:  # RecBole: "Some feat is empty, please check the filtering settings."
            if "empty" not in str(err):
                raise
            raise ConfigError(
                f"dataset '{self.dataset_name}': filtering left no interactions of its {before['users']} users "
                f"({_filters(self.config)}); relax these filters or use a dataset with longer user histories"
            ) from None
        after = _inter_stats(self.inter_feat, uid, iid, time)
        _log_cleaning(self.config, self.dataset_name, before, after)


def _filters(config):
    keys = ("user_inter_num_interval", "item_inter_num_interval", "val_interval", "rm_dup_inter")
    return ", ".join(f"{key}: {config[key]}" for key in keys)


def _log_cleaning(config, name, before, after):
    logger = logging.getLogger()
    if before["duplicates"] and config["rm_dup_inter"] is None:
        logger.warning(
            f"{name}: {before['duplicates']} repeated (user, item) interactions are kept as separate steps of the "
            "sequences (rm_dup_inter: ~); set rm_dup_inter: first (or last) to drop them"
        )
    elif before["duplicates"]:
        logger.info(f"{name}: rm_dup_inter: {config['rm_dup_inter']} dropped repeated (user, item) interactions "
                    f"({before['duplicates']} in the file)")
    if before.get("out_of_order"):
        logger.info(
            f"{name}: {before['out_of_order']} interactions are listed before an earlier one of the same user; each "
            f"user's sequence is sorted by timestamp ({before['ties']} tied timestamps keep file order)"
        )
    dropped_users, dropped_rows = before["users"] - after["users"], before["rows"] - after["rows"]
    if dropped_users or dropped_rows:
        logger.warning(
            f"{name}: filtering dropped {dropped_users} of {before['users']} users and {dropped_rows} of "
            f"{before['rows']} interactions ({_filters(config)})"
        )


_READERS = {}


def dataset_class(config):
    """RecBole's choice of dataset class, reading its files through AtomicFileMixin
    (LSCSequentialDataset for plain sequential data)."""
    module = importlib.import_module("recbole.data.dataset")
    own = getattr(module, f"{config['model']}Dataset", None)
    cls = own or getattr(module, _TYPE_TO_CLASS[config["MODEL_TYPE"]])
    if cls is SequentialDataset:
        return LSCSequentialDataset
    if cls not in _READERS:
        _READERS[cls] = type(cls.__name__, (AtomicFileMixin, Float32PreloadMixin, cls), {"__module__": __name__})
    return _READERS[cls]


def _ignore_pickle(path, what):
    if path and os.path.exists(path):
        logging.getLogger().warning(
            f"ignoring '{path}': recbole-lsc never unpickles cached {what} (loading a pickle can run code); "
            "they are rebuilt from the atomic files"
        )


def create_dataset(config):
    """RecBole's ``create_dataset`` that never loads a pickled dataset: always built from the files."""
    cls = dataset_class(config)
    recbole_name = SequentialDataset.__name__ if cls is LSCSequentialDataset else cls.__name__
    _ignore_pickle(config["dataset_save_path"], "datasets")
    _ignore_pickle(os.path.join(config["checkpoint_dir"], f"{config['dataset']}-{recbole_name}.pth"), "datasets")
    return cls(config)


def ignore_pickled_dataloaders(config):
    """Warn about the pickled dataloaders RecBole's ``data_preparation`` would load: never loaded."""
    _ignore_pickle(config["dataloaders_save_path"], "dataloaders")
    default = os.path.join(config["checkpoint_dir"], f"{config['dataset']}-for-{config['model']}-dataloader.pth")
    _ignore_pickle(default, "dataloaders")


def data_preparation(config, dataset):
    """RecBole's ``data_preparation`` without its pickled-dataloader branch: ``(train, valid, test)``.

    Built from RecBole's own pieces (``dataset.build``, ``create_samplers``, ``get_dataloader``)
    in RecBole's order, so the loaders, and the random draws they make, are RecBole's.
    """
    ignore_pickled_dataloaders(config)
    built = dataset.build()
    samplers = create_samplers(config, dataset, built)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        args = config["train_neg_sample_args"]
        kg_sampler = KGSampler(dataset, args["distribution"], args["alpha"])
        train = get_dataloader(config, "train")(config, built[0], samplers[0], kg_sampler, shuffle=True)
    else:
        train = get_dataloader(config, "train")(config, built[0], samplers[0], shuffle=config["shuffle"])
    valid = get_dataloader(config, "valid")(config, built[1], samplers[1], shuffle=False)
    test = get_dataloader(config, "test")(config, built[2], samplers[2], shuffle=False)
    _log_loader_settings(config)
    return train, valid, test


def _log_loader_settings(config):
    """The two lines RecBole's ``data_preparation`` logs, so a plugin run's log reads like RecBole's."""
    logger = logging.getLogger()
    for stage, (size, args) in (("[Training]: ", ("train_batch_size", "train_neg_sample_args")),
                                ("[Evaluation]: ", ("eval_batch_size", "eval_args"))):
        logger.info(set_color(stage, "pink") + set_color(size, "cyan") + " = "
                    + set_color(f"[{config[size]}]", "yellow") + set_color(f" {args}", "cyan") + ": "
                    + set_color(f"[{config[args]}]", "yellow"))
