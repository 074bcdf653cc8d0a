"""RecBole sequential models as the device SRM (docs/backbones.md): what each reads is loaded or
its absence refused in one line, pairwise losses get RecBole's negatives in the device stages,
candidate-only scoring is recognised on the model, a plain run reads the ``srm`` row's columns.
The sweep over every model is ``tests/test_every_srm.py`` (slow)."""

import os
import re

import numpy as np
import pytest
import recbole.model.sequential_recommender as recbole_sequential
import torch

from recbole_lsc.cli import main
from recbole_lsc.config import LSCConfig, srm_config_of
from recbole_lsc.data.loading import create_dataset, data_preparation
from recbole_lsc.device.srm import CANDIDATE_EMBEDDINGS, CATALOGUE_GATHER, DeviceSRM
from recbole_lsc.device.srm_inputs import device_refusal
from recbole_lsc.errors import ConfigError
from recbole_lsc.protocol import DeviceCloudProtocol
from recbole_lsc.random_streams import random_stream
from recbole_lsc.utils import get_model
from tests.conftest import write_tiny_ml100k, write_tiny_ml100k_with_graph

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "backbones.md")
BASE = {"state": "ERROR", "show_progress": False, "use_gpu": False, "hidden_size": 16, "embedding_size": 16,
        "kg_embedding_size": 16}


def recbole_sequential_models():
    """Every model class RecBole's ``sequential_recommender`` package exports."""
    return sorted(name for name, obj in vars(recbole_sequential).items() if isinstance(obj, type))


@pytest.fixture
def graph_data(tmp_path):
    return write_tiny_ml100k_with_graph(str(tmp_path / "data"), n_users=20)


def config_of(model, folder, **values):
    return LSCConfig(model, "mltiny", config_dict={**BASE, "data_path": os.path.dirname(folder), **values})


def built(config):
    """``(dataset, model)``: the config's dataset and its model, built on the training split as a run builds it."""
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    return dataset, get_model(config["model"])(config, train_data._dataset)


def test_few_models_are_refused_each_in_one_line_and_documented():
    models = recbole_sequential_models()
    refused = {name: device_refusal(get_model(name)) for name in models}
    refused = {name: reason for name, reason in refused.items() if reason}
    assert len(models) - len(refused) >= 28  # DIN and DIEN rank no catalogue; S3Rec needs a pickled pre-training
    with open(DOCS, encoding="utf-8") as handle:
        documented = handle.read()
    for name, reason in refused.items():
        assert "\n" not in reason and f"'{name}'" in reason
        assert re.search(rf"\| {name} \| refused", documented), name  # the page lists why


def test_a_click_through_rate_model_is_refused_before_any_training(tmp_path, capsys):
    folder = write_tiny_ml100k(str(tmp_path / "data"), n_users=20)
    code = main(["--model=LSC4Rec", "--dataset=mltiny", f"--data_path={os.path.dirname(folder)}", "--srm=DIN",
                 "--results_dir=R", "--state=ERROR", "--use_gpu=False"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: srm 'DIN' is a click-through-rate model")
    assert not os.path.exists("R") and not os.path.exists("saved")


@pytest.mark.parametrize("model", ["S3Rec", "LSC4Rec"])
def test_s3rec_is_refused_alone_and_as_the_device_srm(tmp_path, model):
    folder = write_tiny_ml100k(str(tmp_path / "data"), n_users=20)
    with pytest.raises(ConfigError, match="model 'S3Rec' needs its self-supervised pre-training stage"):
        config_of(model, folder, srm="S3Rec")


def test_item_features_a_model_reads_are_loaded_and_their_absence_named(tmp_path):
    folder = write_tiny_ml100k(str(tmp_path / "data"), n_users=20)
    config = config_of("GRU4RecF", folder)
    assert config["load_col"]["item"] == ["item_id", "movie_title", "class"]  # selected_features: [class]
    built(config)  # RecBole 1.2.1 without the column: KeyError: 'class'
    inter_only = {"inter": ["user_id", "item_id", "timestamp"]}  # a load_col of the user's: the features are added
    assert srm_config_of(config_of("LSC4Rec", folder, srm="FDSA", load_col=inter_only))["load_col"] == {
        **inter_only, "item": ["item_id", "class"]}
    item = os.path.join(folder, "mltiny.item")
    with open(item, encoding="utf-8") as handle:
        rows = [line.split("\t")[:3] for line in handle.read().splitlines()]
    with open(item, "w", encoding="utf-8") as handle:
        handle.write("\n".join("\t".join(row) for row in rows) + "\n")
    with pytest.raises(ConfigError, match=r"mltiny.item' has no column 'class' \(columns found: item_id:token, "
                                          r"movie_title:token_seq, release_year:token\), and 'SASRecF' reads the "
                                          r"item features \['class'\] \(selected_features\)"):
        config_of("LSC4Rec", folder, srm="SASRecF")
    os.remove(item)
    with pytest.raises(ConfigError, match=r"mltiny.item', which does not exist"):
        config_of("GRU4RecF", folder)


@pytest.mark.parametrize("suffix", ["kg", "link", "ent", "rel"])
def test_each_knowledge_graph_file_is_checked_up_front(graph_data, suffix):
    os.remove(os.path.join(graph_data, f"mltiny.{suffix}"))
    with pytest.raises(ConfigError, match=rf"'KSR' reads .* from '[^']*mltiny\.{suffix}', which does not exist"):
        config_of("LSC4Rec", graph_data, srm="KSR")
    if suffix == "rel":  # GRU4RecKG reads no relation vectors
        assert config_of("GRU4RecKG", graph_data)["additional_feat_suffix"] == ["ent"]


def test_pretrained_vectors_of_the_wrong_width_are_refused(graph_data):
    with pytest.raises(ConfigError, match=r"mltiny.ent': the ent_emb vectors have 16 numbers but 'GRU4RecKG' needs "
                                          r"embedding_size = 32"):
        config_of("GRU4RecKG", graph_data, embedding_size=32)


def test_pretrained_entity_vectors_land_on_their_items_under_the_sequential_protocol(graph_data):
    config = config_of("GRU4RecKG", graph_data)
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"
    dataset, model = built(config)
    with open(os.path.join(graph_data, "mltiny.link"), encoding="utf-8") as handle:
        item, entity = handle.read().splitlines()[1].split("\t")
    with open(os.path.join(graph_data, "mltiny.ent"), encoding="utf-8") as handle:
        vectors = dict(line.split("\t") for line in handle.read().splitlines()[1:])
    expected = torch.tensor([float(x) for x in vectors[entity].split()])
    assert torch.allclose(model.entity_embedding.weight[dataset.token2id("item_id", item)], expected)


def test_fearec_with_one_layer_is_refused(tmp_path):
    folder = write_tiny_ml100k(str(tmp_path / "data"), n_users=20)
    with pytest.raises(ConfigError, match=r"'FEARec' needs n_layers >= 2"):
        config_of("LSC4Rec", folder, srm="FEARec", n_layers=1)


def device_srm(name, folder, **values):
    """``(DeviceSRM, protocol)`` of model ``name`` as LSC4Rec's device SRM on ``folder``'s data."""
    srm_config = srm_config_of(config_of("LSC4Rec", folder, srm=name, **values))
    dataset, model = built(srm_config)
    return DeviceSRM(model, srm_config, dataset), DeviceCloudProtocol.from_dataset(dataset, 2)


def test_a_pairwise_loss_retrains_on_negatives_drawn_as_recboles_sampler_draws_them(tmp_path, monkeypatch):
    folder = write_tiny_ml100k(str(tmp_path / "data"), n_users=20)
    srm, protocol = device_srm("FPMC", folder)
    batch = protocol.interaction(protocol.samples("retrain"), "fresh", srm.max_len, srm.fields)
    seen, stock = [], srm.model.calculate_loss
    monkeypatch.setattr(srm.model, "calculate_loss", lambda inter: seen.append(inter) or stock(inter))
    numpy_state = np.random.get_state()[1].copy()
    losses = []
    for seed in (5, 5, 6):
        with random_stream(seed):
            losses.append(srm.loss(batch))
    losses[0].backward()  # a loss the stage can step on
    negatives = [inter["neg_item_id"] for inter in seen]
    assert torch.equal(negatives[0], negatives[1]) and not torch.equal(negatives[0], negatives[2])
    assert bool((negatives[0] != batch[srm.fields["item"]]).all()) and int(negatives[0].min()) >= 1
    assert losses[0].item() == losses[1].item() != losses[2].item()
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # the caller's numpy stream is untouched
    ce, _ = device_srm("SASRec", folder)
    assert ce._negatives is None  # a CE loss reads no negatives: the batch goes through as before


@pytest.mark.parametrize("name, candidate_only", [
    ("SASRec", True), ("GRU4Rec", True), ("NARM", True), ("STAMP", True), ("SRGNN", True), ("SASRecF", True),
    ("BERT4Rec", False), ("CORE", False), ("RepeatNet", False), ("FPMC", False),
    ("SHAN", False),  # its full ranking is a dot product, but its forward reads the user as well
])
def test_candidate_only_scoring_is_recognised_on_the_model(tmp_path, name, candidate_only):
    folder = write_tiny_ml100k(str(tmp_path / "data"), n_users=20)
    srm, protocol = device_srm(name, folder)
    srm.eval()
    samples = protocol.samples("test")
    batch = protocol.interaction(samples, "fresh", srm.max_len, srm.fields)
    candidates = torch.randint(1, srm.model.n_items, (len(samples), 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gathered = srm.catalogue_scores(batch).gather(1, candidates)
        only = srm.candidate_scores(batch, candidates)
    assert srm.candidate_scoring == (CANDIDATE_EMBEDDINGS if candidate_only else CATALOGUE_GATHER)
    # to float precision relative to the scores' scale (initial scores are small: a fixed atol would hide a wrong form)
    assert torch.allclose(only, gathered, rtol=1e-4, atol=1e-5 * float(gathered.abs().max()))


def test_a_plain_srm_run_reads_the_srm_rows_columns(tmp_path, capsys):
    folder = write_tiny_ml100k(str(tmp_path / "data"), name="mydata", n_users=20)
    root = os.path.dirname(folder)
    for name in ("SASRec", "GRU4RecF"):
        plain = LSCConfig(name, "mydata", config_dict={**BASE, "data_path": root})
        srm = srm_config_of(LSCConfig("LSC4Rec", "mydata", config_dict={**BASE, "data_path": root, "srm": name}))
        assert plain["load_col"] == srm["load_col"] and "timestamp" in plain["load_col"]["inter"]
        alone, inside = create_dataset(plain), create_dataset(srm)
        assert (alone.inter_num, alone.item_num) == (inside.inter_num, inside.item_num)
    # the command: a plain run on an atomic dataset whose .inter has a timestamp
    assert main(["--model=SASRec", "--dataset=mydata", f"--data_path={root}", "--epochs=1", "--state=ERROR",
                 "--use_gpu=False", "--results_dir=R", "--show_progress=False"]) == 0, capsys.readouterr().err


def test_a_batch_whose_loss_is_not_a_number_takes_no_step():
    # BERT4Rec on a device's two samples: its masking may mask none, and its mean over no position is 0/0
    from recbole.data.interaction import Interaction

    from recbole_lsc.device.training import train_epoch

    model, calls = torch.nn.Linear(2, 1), []
    before = model.weight.detach().clone()

    def loss_of(srm, rows, index):
        calls.append(index.tolist())
        loss = srm(rows["x"]).sum()
        return loss * float("nan") if len(calls) == 1 else loss

    train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), Interaction({"x": torch.ones(4, 2)}), loss_of,
                torch.arange(4), {"train_batch_size": 2, "device": "cpu", "show_progress": False})
    assert calls == [[0, 1], [2, 3]]  # both batches were scored, the second one stepped
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, before)
