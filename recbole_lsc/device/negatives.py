"""Negatives for the device stages of an SRM whose own loss reads them (docs/backbones.md).

An SRM with a pairwise loss (FPMC, TransRec, any model with ``loss_type: BPR``) scores each
target against sampled negatives (``neg_item_id``) that RecBole's training loader draws; the
fine-tuning stages feed it the protocol's samples, which carry none. :func:`negative_sampling`
draws them as RecBole's loader does: its ``RepeatableSampler`` (sequential data may repeat
items) with the SRM's ``train_neg_sample_args`` (distribution, sample_num, alpha, dynamic), and
its own pairwise or pointwise expansion of the batch.

RecBole's sampler draws from ``np.random``; here that generator is seeded from torch's, which
each stage and device seeds with a stream of its own (:mod:`recbole_lsc.random_streams`), so the
negatives are a function of the stage's seed and ``np.random`` is left as it was found.
"""

from recbole.data.dataloader import TrainDataLoader
from recbole.sampler import RepeatableSampler

from recbole_lsc.random_streams import numpy_stream_from_torch


def samples_negatives(srm_config):
    """Whether the SRM's RecBole loader draws training negatives (``train_neg_sample_args``)."""
    args = srm_config["train_neg_sample_args"] if "train_neg_sample_args" in srm_config else None
    return bool(args) and args.get("distribution", "none") != "none" and args.get("sample_num", "none") != "none"


def negative_sampling(srm_config, dataset):
    """``draw(interaction, model) -> interaction`` with negatives added as RecBole's training loader
    adds them, or None when the SRM's loss reads none."""
    if not samples_negatives(srm_config):
        return None
    args = srm_config["train_neg_sample_args"]
    sampler = RepeatableSampler(["train", "valid", "test"], dataset, args["distribution"], args["alpha"])
    loader = TrainDataLoader(srm_config, dataset, sampler.set_phase("train"), shuffle=False)

    def draw(interaction, model):
        loader.get_model(model)  # dynamic negatives are the hardest under the model being trained
        with numpy_stream_from_torch():
            return loader._neg_sampling(interaction)

    return draw
