"""Fine-tuning stages of the device SRM: cooperative training and adaptive re-training.

A stage fine-tunes a copy of the SRM it is given and keeps its best epoch on validation: the
``valid_metric`` of the SRM re-ranking the stale validation lists, the job the SRM does in
deployment, or, for re-training on a device that holds the item table, of the SRM ranking that
table (docs/method.md, "Training"). Where the starting SRM's score is a fair bar, the best epoch
must beat it, otherwise the stage returns the SRM it was given, unchanged, and says so. It is not
a fair bar where the starting SRM was itself early-stopped on that very score (the full-ranking
validation of RecBole's trainer): its score is then a maximum over its epochs on the same users,
biased upwards, and would undo a stage that helps.
"""

import copy
import logging
import time

import torch
from tqdm.auto import tqdm

from recbole_lsc.evaluation.metrics import metric_values
from recbole_lsc.evaluation.ranks import catalogue_ranks, list_ranks


class RerankValidation:
    """``valid_metric`` of an SRM re-ranking fixed candidate lists with fresh histories."""

    name = "re-rank"
    fair_bar = True  # not what the starting SRM was early-stopped on: a stage must beat its score

    def __init__(self, interaction, lists, targets, config):
        self.interaction, self.lists, self.targets = interaction, lists, targets
        self.config = config

    def __call__(self, srm):
        scores = srm.score_lists(self.interaction, self.lists.item_ids, self.config["eval_batch_size"],
                                 self.config["device"])
        return float(metric_values(list_ranks(self.lists.item_ids, scores, self.targets), self.config).mean())


class CatalogueValidation:
    """``valid_metric`` of an SRM ranking the whole item table with fresh histories: the list a
    device that holds the table shows at alpha = 0."""

    name = "full ranking"
    fair_bar = False  # RecBole's trainer early-stopped the starting SRM on this score: a biased bar

    def __init__(self, interaction, config):
        self.interaction, self.config = interaction, config

    def __call__(self, srm):
        srm.eval()
        with torch.no_grad():
            ranks = catalogue_ranks(lambda batch: srm.catalogue_scores(batch.to(self.config["device"])),
                                    self.interaction, self.config["eval_batch_size"], srm.fields["item"])
        return float(metric_values(ranks, self.config).mean())


def _train_epoch(srm, optimizer, interaction, loss_of, order, config, desc):
    srm.train()
    size = config["train_batch_size"]
    for start in tqdm(range(0, len(order), size), desc=desc, disable=not config["show_progress"], leave=False):
        index = order[start : start + size]
        optimizer.zero_grad()
        loss = loss_of(srm, interaction[index].to(config["device"]), index)
        loss.backward()
        optimizer.step()


def fine_tune(srm, stage, interaction, loss_of, validate, epochs, learning_rate, config, tensorboard=None,
              must_beat_start=True):
    """Fine-tune a copy of ``srm`` on ``interaction``; return ``(srm after the stage, log)``.

    ``loss_of(srm, batch, index)`` is the stage's loss on the samples ``index``; ``validate(srm)``
    the validation score (higher is better). With ``must_beat_start`` the best epoch is kept only
    if it beats ``srm``'s own score; without, the best epoch is kept (``srm``'s score is logged).
    Batches are shuffled by a generator seeded with ``config["seed"]``.
    """
    logger = logging.getLogger()
    tuned = copy.deepcopy(srm)
    start_score = validate(srm)
    best_score = start_score if must_beat_start else -float("inf")
    best_state, best_epoch = None, -1
    optimizer = torch.optim.Adam(tuned.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(config["seed"])
    started, what = time.time(), getattr(validate, "name", "score")
    for epoch in range(epochs):
        order = torch.randperm(len(interaction), generator=generator)
        _train_epoch(tuned, optimizer, interaction, loss_of, order, config, f"{stage} epoch {epoch}")
        score = validate(tuned)
        logger.info(f"{stage} epoch {epoch}: valid {what} {config['valid_metric']} {score:.4f}")
        if tensorboard is not None:
            tensorboard.add_scalar(f"{stage}/Valid/{what} {config['valid_metric']}", score, epoch)
        if score > best_score:
            best_score, best_epoch, best_state = score, epoch, copy.deepcopy(tuned.state_dict())
    kept = best_state is not None
    logger.info(f"{stage}: {'kept epoch %d' % best_epoch if kept else 'no gain on validation, undone'}")
    log = {"kept": kept, "must_beat_start": must_beat_start, "best_epoch": best_epoch, "valid_before": round(start_score, 6),
           "valid_after": round(best_score, 6), "seconds": round(time.time() - started, 1)}
    if not kept:
        return srm, log
    tuned.load_state_dict(best_state)
    return tuned, log


def cooperative_loss(candidates, config):
    """The cooperative stage's loss: the cloud's ``candidates`` of each sample are hard negatives."""
    def loss_of(srm, batch, index):
        lists = candidates.select(index).to(config["device"])
        return srm.cooperative_loss(batch, lists, config["coop_loss"], config["coop_weight"])

    return loss_of


def retraining_loss(srm, batch, index):
    """Adaptive re-training's loss on a device that holds the item table: the SRM's own
    RecBole loss on the fresh window."""
    return srm.loss(batch)


def held_items_retraining_loss(held):
    """Re-training's loss on a device that holds only its lists and history: each fresh-window
    target against every item the user holds (``DeviceSRM.held_items_loss``)."""
    def loss_of(srm, batch, index):
        return srm.held_items_loss(batch, held)

    return loss_of
