"""Fine-tuning stages of the device SRM: cooperative training and adaptive re-training.

A stage fine-tunes a copy of the SRM it is given and keeps its best epoch on validation: the
``valid_metric`` of the SRM re-ranking the stale validation lists, the job the SRM does in
deployment, or, for re-training on a device that holds the item table, of the SRM ranking that
table (docs/method.md, "Training"). With ``stage_selection: validated`` and a fair bar, the
best epoch must beat the starting SRM in a one-sided paired test over validation users at
:data:`STAGE_ALPHA`, otherwise the stage returns the SRM it was given, unchanged, and says so;
``always`` keeps the best epoch whatever the test says (the p is logged either way). The
starting SRM's score is not a fair bar where it was itself early-stopped on that very score
(the full-ranking validation of RecBole's trainer): it is then a maximum over its epochs on the
same users, biased upwards, and would undo a stage that helps.

Every stage draws its dropout and its batch order from its own seeded generator (the caller
derives the seed from the run's seed and the stage's name), so a stage computes the same thing
whatever ran before it.
"""

import copy
import logging
import time

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from recbole_lsc.evaluation.metrics import metric_values
from recbole_lsc.evaluation.ranks import catalogue_ranks, list_ranks
from recbole_lsc.random_streams import random_stream

STAGE_ALPHA = 0.05  # level of the paired test that keeps a stage (``stage_selection: validated``)
STAGE_SELECTIONS = ("validated", "always")


class RerankValidation:
    """``valid_metric`` of an SRM re-ranking fixed candidate lists with fresh histories."""

    name = "re-rank"
    fair_bar = True  # not what the starting SRM was early-stopped on: a stage must beat its score

    def __init__(self, interaction, lists, targets, config):
        self.interaction, self.lists, self.targets = interaction, lists, targets
        self.config = config

    def __call__(self, srm, rows=None):
        """Per-user ``valid_metric`` values (numpy) of the validation users ``rows`` (all: None)."""
        interaction, ids, targets = self.interaction, self.lists.item_ids, self.targets
        if rows is not None:
            interaction, ids, targets = interaction[rows], ids[rows], targets[rows]
        scores = srm.score_lists(interaction, ids, self.config["eval_batch_size"], self.config["device"])
        return metric_values(list_ranks(ids, scores, targets), self.config)


class CatalogueValidation:
    """``valid_metric`` of an SRM ranking the whole item table with fresh histories: the list a
    device that holds the table shows at alpha = 0."""

    name = "full ranking"
    fair_bar = False  # RecBole's trainer early-stopped the starting SRM on this score: a biased bar

    def __init__(self, interaction, config):
        self.interaction, self.config = interaction, config

    def __call__(self, srm, rows=None):
        """Per-user ``valid_metric`` values (numpy) of the validation users ``rows`` (all: None)."""
        interaction = self.interaction if rows is None else self.interaction[rows]
        srm.eval()
        with torch.no_grad():
            ranks = catalogue_ranks(lambda batch: srm.catalogue_scores(batch.to(self.config["device"])),
                                    interaction, self.config["eval_batch_size"], srm.fields["item"])
        return metric_values(ranks, self.config)


def one_sided_paired_p(after, before):
    """p of a one-sided Wilcoxon signed-rank test that ``after`` beats ``before`` (paired per
    user; users with equal values dropped; 1.0 when no user differs)."""
    diff = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    diff = diff[diff != 0]  # dropped here, so small samples get scipy's exact distribution
    if not len(diff):
        return 1.0
    return float(stats.wilcoxon(diff, alternative="greater").pvalue)


def stage_decision(before, after, must_beat_start, selection):
    """Keep a stage whose best epoch scored ``after`` per validation user, against ``before``?

    Returns ``(kept, p, rule)``, ``p`` the one-sided paired p that the stage gains: ``always``
    keeps it; with a fair bar (``must_beat_start``) it must beat the start in that test at
    :data:`STAGE_ALPHA` (and on average). Without one, the start's score is biased upwards, so
    the stage need not beat it, but it is undone when it is worse beyond doubt: the one-sided
    paired test that it loses is below :data:`STAGE_ALPHA`.
    """
    p = one_sided_paired_p(after, before)
    if selection == "always":
        return True, p, "always"
    if not must_beat_start:
        loses = one_sided_paired_p(before, after)
        return bool(loses >= STAGE_ALPHA), p, f"biased bar: undone if it loses at {STAGE_ALPHA} (p {loses:.3g})"
    return bool(np.mean(after) > np.mean(before) and p < STAGE_ALPHA), p, f"paired test at {STAGE_ALPHA}"


def train_epoch(srm, optimizer, interaction, loss_of, order, config, desc=None):
    """One epoch over ``interaction`` in ``order``, ``train_batch_size`` samples a step;
    ``loss_of(srm, batch, index)`` gets the rows ``index`` of ``interaction``. A progress bar
    only with a ``desc`` (and ``show_progress``).

    A batch whose loss is not a number takes no step: a device's few samples can leave an SRM's
    own loss without a term (BERT4Rec's masking may mask none of them, and its mean over no
    masked position is 0/0), and one such step would turn every weight into NaN.
    """
    srm.train()
    size = config["train_batch_size"]
    batches = range(0, len(order), size)
    for start in tqdm(batches, desc=desc, disable=desc is None or not config["show_progress"], leave=False):
        index = order[start : start + size]
        optimizer.zero_grad()
        loss = loss_of(srm, interaction[index].to(config["device"]), index)
        if not torch.isfinite(loss):
            continue
        loss.backward()
        optimizer.step()


def fine_tune(srm, stage, interaction, loss_of, validate, epochs, learning_rate, config, seed, tensorboard=None,
              must_beat_start=True):
    """Fine-tune a copy of ``srm`` on ``interaction``; return ``(srm after the stage, log)``.

    ``loss_of(srm, batch, index)`` is the stage's loss on the samples ``index``; ``validate(srm)``
    the per-user validation values (higher is better). The best epoch on their mean is kept as
    :func:`stage_decision` says (``config["stage_selection"]``; ``must_beat_start``: the start's
    score is a fair bar). Dropout and batch order come from generators seeded with ``seed``;
    the caller's random state is left as it was.
    """
    logger = logging.getLogger()
    tuned = copy.deepcopy(srm)
    start_values = validate(srm)
    best_score, best_values, best_state, best_epoch = -float("inf"), start_values, None, -1
    optimizer = torch.optim.Adam(tuned.parameters(), lr=learning_rate)
    started, what = time.time(), getattr(validate, "name", "score")
    with random_stream(seed) as generator:
        for epoch in range(epochs):
            order = torch.randperm(len(interaction), generator=generator)
            train_epoch(tuned, optimizer, interaction, loss_of, order, config, f"{stage} epoch {epoch}")
            values = validate(tuned)
            score = float(values.mean())
            logger.info(f"{stage} epoch {epoch}: valid {what} {config['valid_metric']} {score:.4f}")
            if tensorboard is not None:
                tensorboard.add_scalar(f"{stage}/Valid/{what} {config['valid_metric']}", score, epoch)
            if score > best_score:
                best_score, best_values, best_epoch = score, values, epoch
                best_state = copy.deepcopy(tuned.state_dict())
    kept, p, rule = stage_decision(start_values, best_values, must_beat_start, config["stage_selection"])
    kept = kept and best_state is not None
    logger.info(f"{stage}: {'kept epoch %d' % best_epoch if kept else 'undone'} (one-sided paired p {p:.3g}, {rule})")
    log = {"kept": kept, "must_beat_start": must_beat_start, "rule": rule, "p": round(p, 6), "best_epoch": best_epoch,
           "epochs": epochs, "valid_before": round(float(start_values.mean()), 6),
           "valid_after": round(best_score, 6) if best_state is not None else None,
           "seconds": round(time.time() - started, 1)}
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
