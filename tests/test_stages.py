"""Training stages: fine-tuning keeps or undoes, the cooperative losses by hand, ablation
states, the LLM's early stopping, seed aggregation, the cost figures, the cloud's windows."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats

import recbole_lsc.cloud.trainer as cloud_trainer
import recbole_lsc.experiment.stages as stages_module
from recbole_lsc.channel import CandidateList
from recbole_lsc.device.held import HeldItems
from recbole_lsc.device.srm import DeviceSRM
from recbole_lsc.device.training import CatalogueValidation, fine_tune
from recbole_lsc.experiment.seeds import aggregate_curve, aggregate_rows, policy_tests, with_seed
from recbole_lsc.protocol import DeviceCloudProtocol


class FixedScores(torch.nn.Module):
    """A stand-in RecBole model: one learnable score per item, whatever the history."""

    USER_ID, ITEM_ID, ITEM_SEQ, ITEM_SEQ_LEN = "user_id", "item_id", "item_id_list", "item_length"

    def __init__(self, n_items):
        super().__init__()
        self.scores = torch.nn.Parameter(torch.zeros(n_items))

    def full_sort_predict(self, interaction):
        return self.scores.expand(len(interaction[self.ITEM_SEQ]), -1)

    def calculate_loss(self, interaction):
        return F.cross_entropy(self.full_sort_predict(interaction), interaction[self.ITEM_ID])


def device_srm(n_items=6):
    return DeviceSRM(FixedScores(n_items), {"MAX_ITEM_LIST_LENGTH": 3, "transform": None}, dataset=None)


def batch_of(targets):
    from recbole.data.interaction import Interaction

    targets = torch.as_tensor(targets)
    return Interaction({"user_id": torch.zeros_like(targets), "item_id": targets,
                        "item_id_list": torch.ones(len(targets), 3, dtype=torch.long),
                        "item_length": torch.full_like(targets, 3)})


CONFIG = {"train_batch_size": 2, "device": "cpu", "show_progress": False, "seed": 1, "valid_metric": "NDCG@10",
          "stage_selection": "validated"}


def per_user(value, users=8):
    """Validation values of ``users`` users that all move with ``value`` (a paired test sees every user gain)."""
    return value + np.linspace(0.0, 0.01, users)


def test_cooperative_losses_by_hand():
    srm = device_srm()
    with torch.no_grad():
        srm.model.scores.copy_(torch.tensor([0.0, 1.0, 2.0, 0.5, -1.0, 0.3]))
    batch = batch_of([2])
    lists = CandidateList(torch.tensor([[3, 2, 5]]), torch.tensor([[-0.5, -1.0, -2.0]]), "t", torch.tensor([3]))
    full = srm.model.scores
    ce = -torch.log_softmax(full, 0)[2]
    # mixed: CE of the target against the candidates other than itself
    mixed = -torch.log_softmax(torch.stack([full[2], full[3], full[5]]), 0)[0]
    assert srm.cooperative_loss(batch, lists, "mixed", 0.5).item() == pytest.approx((ce + 0.5 * mixed).item(), rel=1e-6)
    # distill: KL(teacher || student) over the list, teacher = softmax of the LLM's scores
    teacher = torch.softmax(lists.scores[0], 0)
    student = torch.log_softmax(full[lists.item_ids[0]], 0)
    kl = (teacher * (teacher.log() - student)).sum()
    assert srm.cooperative_loss(batch, lists, "distill", 2.0).item() == pytest.approx((ce + 2.0 * kl).item(), rel=1e-6)
    with pytest.raises(Exception, match="coop_loss must be one of"):
        srm.cooperative_loss(batch, lists, "average", 1.0)


def test_held_items_loss_by_hand_and_blind_to_items_the_device_does_not_hold():
    srm = device_srm(8)
    with torch.no_grad():
        srm.model.scores.copy_(torch.tensor([0.0, 1.0, 2.0, 0.5, -1.0, 0.3, 0.7, -0.2]))
    full = srm.model.scores
    batch = batch_of([2, 4])
    batch["user_id"] = torch.tensor([0, 1])
    # user 0 holds 3, 5 and its target 2; user 1 holds 6 and 1 (a repeat and padding are dropped)
    held = HeldItems([0, 0, 0, 1, 1, 1, 1], [3, 5, 2, 6, 1, 6, 0])
    assert held.items_of(0).tolist() == [2, 3, 5] and held.items_of(1).tolist() == [1, 6]
    first = -torch.log_softmax(full[[2, 3, 5]], 0)[0]
    second = -torch.log_softmax(full[[4, 6, 1]], 0)[0]  # the target 4 counts: the device saw it
    loss = srm.held_items_loss(batch, held)
    assert loss.item() == pytest.approx(((first + second) / 2).item(), rel=1e-6)
    loss.backward()
    grad = srm.model.scores.grad
    assert torch.all(grad[[0, 7]] == 0) and torch.all(grad[[1, 2, 3, 4, 5, 6]] != 0)  # 0 and 7: held by nobody


def test_fine_tuning_keeps_the_best_improving_epoch_and_leaves_its_input_unchanged():
    srm = device_srm()
    before = srm.model.scores.detach().clone()
    interaction = batch_of([2, 2, 2, 2])
    validate = lambda model: per_user(float(model.model.scores.detach()[2]))  # noqa: E731  (improves as 2 is learnt)
    tuned, log = fine_tune(srm, "retrain", interaction, lambda m, b, i: m.loss(b), validate, 3, 0.1, CONFIG, seed=3)
    assert tuned is not srm and torch.equal(srm.model.scores.detach(), before)
    assert log["kept"] and log["best_epoch"] == 2 and log["valid_after"] > log["valid_before"]
    assert log["p"] == pytest.approx(1 / 2 ** 8, abs=1e-6)  # all 8 users gain: the exact one-sided Wilcoxon p
    assert float(tuned.model.scores.detach()[2]) + 0.005 == pytest.approx(log["valid_after"], abs=1e-6)


def test_full_ranking_validation_by_hand():
    srm = device_srm()
    with torch.no_grad():
        srm.model.scores.copy_(torch.tensor([5.0, 1.0, 2.0, 0.5, -1.0, 0.3]))  # item 0 is padding: never ranked
    config = {**CONFIG, "eval_batch_size": 2}
    # target 2 is first (NDCG 1), target 3 third behind items 2 and 1 (1 / log2(4) = 0.5), target 4 last (1 / log2(6))
    validate = CatalogueValidation(batch_of([2, 3, 4]), config)
    assert validate(srm) == pytest.approx([1.0, 0.5, 1 / math.log2(6)])
    assert validate(srm, torch.tensor([2])) == pytest.approx([1 / math.log2(6)])
    assert validate.name == "full ranking"


def test_fine_tuning_that_never_beats_the_start_is_undone():
    srm = device_srm()
    interaction = batch_of([2, 2, 2, 2])
    validate = lambda model: per_user(-float(model.model.scores.detach()[2]))  # noqa: E731  (worse as 2 is learnt)
    tuned, log = fine_tune(srm, "retrain", interaction, lambda m, b, i: m.loss(b), validate, 2, 0.1, CONFIG, seed=3)
    assert tuned is srm and not log["kept"] and log["best_epoch"] == 0
    assert log["valid_after"] < log["valid_before"] and log["p"] == 1.0
    # where the start's score is no fair bar (it was early-stopped on it), the best epoch is kept,
    # unless it loses beyond doubt (here all 8 users lose: p 1/2**8)
    tuned, log = fine_tune(srm, "retrain", interaction, lambda m, b, i: m.loss(b), validate, 2, 0.1, CONFIG, seed=3,
                           must_beat_start=False)
    assert tuned is srm and not log["kept"] and log["rule"].startswith("biased bar")
    tie = lambda model: np.r_[-float(model.model.scores.detach()[2]), np.ones(7)]  # noqa: E731  (one user loses)
    tuned, log = fine_tune(srm, "retrain", interaction, lambda m, b, i: m.loss(b), tie, 2, 0.1, CONFIG, seed=3,
                           must_beat_start=False)
    assert tuned is not srm and log["kept"] and log["best_epoch"] == 0 and log["valid_after"] < log["valid_before"]


def test_a_stage_whose_mean_gain_comes_from_one_user_is_undone_unless_stages_always_apply():
    from recbole_lsc.device.training import stage_decision

    before = np.zeros(20)
    after = before.copy()
    after[0] = 1.0  # one lucky user lifts the mean: one-sided Wilcoxon p = 0.5
    assert stage_decision(before, after, True, "validated") == (False, pytest.approx(0.5), "paired test at 0.05")
    assert stage_decision(before, after, True, "always")[0]
    assert stage_decision(before, after, False, "validated")[0]  # no fair bar: the best epoch stands ...
    assert not stage_decision(np.ones(20), np.zeros(20), False, "validated")[0]  # ... unless it loses beyond doubt
    assert stage_decision(after[:4] * 0, -after[:4], False, "validated")[0]  # one user lost: p 0.5, no doubt
    after[:6] = 1.0  # six users gain, none loses: p = 1 / 2**6 < 0.05
    assert stage_decision(before, after, True, "validated") == (True, pytest.approx(1 / 64), "paired test at 0.05")
    after[6] = -1.0  # ... and one loses: the mean still gains, the test is no longer convinced at 0.05
    kept, p, _ = stage_decision(before, after, True, "validated")
    assert after.mean() > 0 and not kept
    assert p == pytest.approx(scipy_stats.wilcoxon(after[:7], alternative="greater").pvalue) and p > 0.05


def test_fine_tuning_draws_from_its_own_seed_and_leaves_the_callers_random_state():
    class Dropped(FixedScores):
        def full_sort_predict(self, interaction):
            return torch.nn.functional.dropout(super().full_sort_predict(interaction), 0.5, self.training)

    def tuned_scores(seed):
        srm = DeviceSRM(Dropped(6), {"MAX_ITEM_LIST_LENGTH": 3, "transform": None}, dataset=None)
        validate = lambda model: per_user(float(model.model.scores.detach()[2]))  # noqa: E731
        config = {**CONFIG, "stage_selection": "always"}
        tuned, _ = fine_tune(srm, "retrain", batch_of([2, 3, 2, 4]), lambda m, b, i: m.loss(b), validate, 2, 0.1,
                             config, seed=seed)
        return tuned.model.scores.detach()

    torch.manual_seed(0)
    first = tuned_scores(7)
    state = torch.get_rng_state()
    torch.rand(100)  # whatever the caller drew before does not matter ...
    assert torch.equal(tuned_scores(7), first) and not torch.equal(tuned_scores(8), first)
    torch.set_rng_state(state)
    tuned_scores(7)  # ... and the stage does not move the caller's generator
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("coop, retrain", [(True, True), (True, False), (False, True), (False, False)])
def test_ablation_states_come_from_the_states_that_skipped_a_stage(monkeypatch, coop, retrain):
    calls = []

    class Stages:
        def __init__(self, *args):
            pass

        def cooperative(self, srm):
            calls.append(("cooperative", srm))
            return f"coop({srm})", {"kept": True}

        def retraining(self, srm, mode, scope):
            calls.append(("retrain", srm, mode))
            return f"retrain-{mode}({srm})", {"kept": True}

        def close(self):
            pass

    monkeypatch.setattr(stages_module, "FineTuningStages", Stages)
    modes = ["candidates", "full"]
    config = {"coop_train": coop, "retrain": retrain, "device_catalogue": modes, "retrain_scope": ["device"]}
    states = stages_module.device_stages(config, "srm", None, None)
    assert states.independent == "srm"
    assert states.cooperative == ("coop(srm)" if coop else "srm")
    for mode in modes:  # re-training happens on the device, once per what it holds
        assert states.final[(mode, "device")] == (f"retrain-{mode}({states.cooperative})" if retrain
                                                  else states.cooperative)
    assert states.retrained_only == ({(mode, "device"): f"retrain-{mode}(srm)" for mode in modes}
                                     if coop and retrain else {})
    expected = [("cooperative", "srm")] if coop else []
    if retrain:
        expected += [("retrain", states.cooperative, mode) for mode in modes]
        expected += [("retrain", "srm", mode) for mode in modes] if coop else []
    assert calls == expected


def test_llm_early_stopping_restores_the_best_epoch(monkeypatch, tiny_config):
    from recbole_lsc.data.loading import create_dataset

    from recbole_lsc.cloud.llmrec import LLMRec
    from recbole_lsc.config import LSCConfig

    config = LSCConfig("LLMRec", "mltiny", config_dict={
        **tiny_config, "llm_hidden_size": 8, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 5, "llm_epochs": 10,
        "llm_stopping_step": 2, "llm_batch_size": 256})
    dataset = create_dataset(config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    model = LLMRec(config, dataset)
    trainer = cloud_trainer.LLMRecTrainer(config, model, protocol)
    scores, states = iter([0.1, 0.3, 0.2, 0.3, 0.25, 0.1, 0.05]), []

    def scripted(phase, view):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"ndcg@10": next(scores)}

    monkeypatch.setattr(trainer, "evaluate", scripted)
    assert trainer.fit() == {"ndcg@10": 0.3}
    # epoch 3 ties the best (RecBole's rule: a tie is an improvement); 4, 5 and 6 do not improve:
    # RecBole's trainer stops after stopping_step + 1 of them, and so does the LLM's
    assert trainer.best_epoch == 3 and trainer.epochs_trained == 7
    assert all(torch.equal(value, states[3][key]) for key, value in model.state_dict().items())


def test_each_cloud_training_target_is_predicted_exactly_once():
    sequences = [np.zeros(0, np.int64), np.arange(1, 13), np.arange(20, 26), np.arange(30, 33)]
    protocol = DeviceCloudProtocol(sequences, cloud_lag=2)
    items, lengths = protocol.cloud_training_windows(max_len=4)
    predicted = [int(items[w, t]) for w in range(len(items)) for t in range(1, lengths[w])]
    llm_train = protocol.samples("llm_train")
    assert sorted(predicted) == sorted(protocol.targets(llm_train).tolist())  # i_2 .. i_{n-2-g} of each user
    assert len(predicted) == len(set(predicted))


def _run(value, curve_value, per_user):
    return {"rows": [{"name": "a", "role": "lsc4rec", "valid": {"ndcg@10": value}, "test": {"ndcg@10": value},
                      "realized": value}],
            "curve": [{"device_catalogue": "full", "policy": "random", "rho": 0.5, "realized": 0.5,
                       "test": {"ndcg@10": curve_value}}],
            "curve_per_user": {("full", policy, rho): np.array(per_user) + (0.1 if policy == "learned" else 0.0)
                               for policy in ("random", "consistency", "top1_missing", "regret", "learned", "oracle")
                               for rho in (0.0, 0.5, 1.0)}}


def test_seed_aggregation_by_hand():
    runs = [_run(0.1, 0.2, [0.0, 1.0, 0.5]), _run(0.3, 0.4, [1.0, 0.0, 0.5])]
    row = aggregate_rows(runs)[0]
    assert row["test"] == {"ndcg@10": 0.2} and row["test_std"] == {"ndcg@10": 0.141421} and row["realized"] == 0.2
    point = aggregate_curve(runs)[0]
    assert point["test"] == {"ndcg@10": 0.3} and point["test_std"] == {"ndcg@10": 0.141421}
    assert point["device_catalogue"] == "full" and point["policy"] == "random"
    assert aggregate_rows(runs[:1]) is runs[0]["rows"]
    tests = policy_tests(runs, [0.0, 0.5, 1.0])  # only ratios strictly inside (0, 1)
    assert [(t["device_catalogue"], t["rho"], t["versus"]) for t in tests] == [
        ("full", 0.5, v) for v in ("random", "consistency", "top1_missing", "regret")]
    assert all(t["mean_diff"] == pytest.approx(0.1) for t in tests)


def test_with_seed_copies_the_config(tiny_config):
    from recbole_lsc.config import LSCConfig

    config = LSCConfig("SASRec", "mltiny", config_dict=tiny_config)
    seeded = with_seed(config, 99)
    assert seeded["seed"] == 99 and config["seed"] == tiny_config["seed"]


def test_cost_figures(tiny_config):
    from recbole_lsc.data.loading import create_dataset

    from recbole_lsc.cloud.source import InProcessCloud
    from recbole_lsc.config import LSCConfig, srm_config_of
    from recbole_lsc.experiment.cost import measure_cost, parameter_count
    from recbole_lsc.lsc4rec import LSC4Rec
    from recbole_lsc.utils import get_model

    config = LSCConfig("LSC4Rec", "mltiny", config_dict={**tiny_config, "llm_hidden_size": 8, "llm_layers": 1,
                                                         "llm_heads": 2, "llm_max_len": 6, "candidate_num": 20})
    srm_config = srm_config_of(config)
    dataset = create_dataset(srm_config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    model = LSC4Rec(config, dataset, get_model("SASRec"), srm_config)
    cloud = InProcessCloud(model.llm, 64, "cpu")
    stale_ids = torch.randint(1, dataset.item_num, (len(protocol.samples("test")), 20))
    cost = measure_cost(config, cloud, model.srm, protocol, stale_ids)
    history = np.minimum(protocol.samples("test").position, 6)  # the fresh history, cut to llm_max_len
    assert cost["bytes_per_request"] == int(4 * history.mean() + 8 * 20)
    assert cost["llm_parameters"] == parameter_count(model.llm) == sum(p.numel() for p in model.llm.parameters())
    assert cost["srm_parameters"] == sum(p.numel() for p in model.srm.model.parameters())
    assert cost["cloud_seconds_per_user"] > 0 and cost["device_seconds_per_user"] > 0
    assert math.isclose(cost["cloud_over_device"], cost["cloud_seconds_per_user"] / cost["device_seconds_per_user"])
    assert cost["srm_candidate_scoring"] == "candidate embeddings only"  # SASRec: C dot products, no catalogue
