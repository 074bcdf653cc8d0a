"""Shared fixtures: a tiny slice of the bundled ml-100k and a fast config.

Every test runs in its own temporary working directory (RecBole writes ./log,
./log_tensorboard and ./saved into the cwd) with a clean ``sys.argv``.
"""

import importlib.util
import os
import sys

import numpy as np
import pytest

import recbole_lsc  # noqa: F401  (compat shim before recbole)

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
ML100K_DIR = os.path.join(os.path.dirname(__import__("recbole").__file__), "dataset_example", "ml-100k")


def write_tiny_ml100k(folder, name="mltiny", n_users=60):
    """The interactions of the first ``n_users`` users of ml-100k as RecBole atomic files."""
    target = os.path.join(folder, name)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(ML100K_DIR, "ml-100k.inter"), encoding="utf-8") as src:
        header, *lines = src.read().splitlines()
    keep = {str(u) for u in range(1, n_users + 1)}
    rows = [line for line in lines if line.split("\t", 1)[0] in keep]
    with open(os.path.join(target, f"{name}.inter"), "w", encoding="utf-8") as dst:
        dst.write("\n".join([header, *rows]) + "\n")
    with open(os.path.join(ML100K_DIR, "ml-100k.item"), encoding="utf-8") as src, open(
        os.path.join(target, f"{name}.item"), "w", encoding="utf-8"
    ) as dst:
        dst.write(src.read())
    return target


def write_tiny_knowledge_graph(target, name="mltiny", per_head=3):
    """ml-100k's ``.link`` rows of the items in ``target``'s ``.inter`` and, for each linked
    entity, its first ``per_head`` ``.kg`` triples; returns ``(entity tokens, relation tokens)``."""
    with open(os.path.join(target, f"{name}.inter"), encoding="utf-8") as handle:
        items = {line.split("\t")[1] for line in handle.read().splitlines()[1:]}
    with open(os.path.join(ML100K_DIR, "ml-100k.link"), encoding="utf-8") as src:
        link_header, *links = src.read().splitlines()
    links = [line for line in links if line.split("\t")[0] in items]
    linked = {line.split("\t")[1] for line in links}
    with open(os.path.join(ML100K_DIR, "ml-100k.kg"), encoding="utf-8") as src:
        kg_header, *triples = src.read().splitlines()
    kept, count = [], {}
    for line in triples:
        head = line.split("\t")[0]
        if head in linked and count.get(head, 0) < per_head:
            kept.append(line)
            count[head] = count.get(head, 0) + 1
    for suffix, header, rows in (("link", link_header, links), ("kg", kg_header, kept)):
        with open(os.path.join(target, f"{name}.{suffix}"), "w", encoding="utf-8") as dst:
            dst.write("\n".join([header, *rows]) + "\n")
    entities = sorted(linked | {line.split("\t")[2] for line in kept})
    return entities, sorted({line.split("\t")[1] for line in kept})


def write_vectors(target, name, suffix, tokens, width, seed=0):
    """``<name>.<suffix>``: a random vector of ``width`` numbers per token, as RecBole reads
    pretrained knowledge-graph embeddings (``<suffix>_id:token``, ``<suffix>_emb:float_seq``)."""
    vectors = np.random.default_rng(seed).normal(size=(len(tokens), width)).round(4)
    rows = [f"{token}\t{' '.join(map(str, vector))}" for token, vector in zip(tokens, vectors)]
    with open(os.path.join(target, f"{name}.{suffix}"), "w", encoding="utf-8") as dst:
        dst.write("\n".join([f"{suffix}_id:token\t{suffix}_emb:float_seq", *rows]) + "\n")


def write_tiny_ml100k_with_graph(folder, name="mltiny", n_users=30, width=16):
    """:func:`write_tiny_ml100k` plus a knowledge graph (``.kg``, ``.link``) and pretrained
    vectors of ``width`` numbers for its entities (``.ent``) and relations (``.rel``)."""
    target = write_tiny_ml100k(folder, name, n_users)
    entities, relations = write_tiny_knowledge_graph(target, name)
    write_vectors(target, name, "ent", entities, width)
    write_vectors(target, name, "rel", relations, width, seed=1)
    return target


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture
def tiny_data(tmp_path):
    write_tiny_ml100k(str(tmp_path / "data"))
    return str(tmp_path / "data")


@pytest.fixture
def tiny_config(tmp_path, tiny_data):
    """Config values for a run of a few seconds on the tiny dataset."""
    return {
        "data_path": tiny_data,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "epochs": 2,
        "train_batch_size": 256,
        "eval_batch_size": 256,
        "state": "ERROR",
        "show_progress": False,
        "use_gpu": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "results_dir": str(tmp_path / "results"),
        "seed": 7,
    }


def check_title_init_and_train_step(model, dataset, title_token_ids, span, count):
    """Assert Star Wars' item token is the mean of its title's token embeddings, run one
    next-item training step on ``count`` cloud windows of ``span`` items; return the protocol."""
    import torch

    from recbole_lsc.protocol import DeviceCloudProtocol

    table = model.backbone.get_base_model().get_input_embeddings().weight
    star_wars = dataset.token2id("item_id", "50")
    assert torch.allclose(model.item_embedding.weight[star_wars], table[title_token_ids].mean(0))
    protocol = DeviceCloudProtocol.from_dataset(dataset, 2)
    items, lengths = protocol.cloud_training_windows(span)
    loss = model.window_loss(torch.from_numpy(items[:count]), torch.from_numpy(lengths[:count]))
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    return protocol


def load_benchmark(monkeypatch, name):
    """The module of ``benchmarks/<name>.py`` (the scripts import ``_common`` from their folder)."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
