"""LLMRec: item tokens, exact candidates, save/load, LoRA on a local backbone, bad paths."""

import os

import numpy as np
import pytest
import torch

from recbole_lsc.config import LSCConfig
from recbole_lsc.data.loading import create_dataset
from recbole_lsc.protocol import DeviceCloudProtocol, model_fields
from recbole_lsc.data.item_text import item_titles
from recbole_lsc.errors import CheckpointError, ConfigError
from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.quick_start import run_recbole_lsc
from tests.conftest import check_title_init_and_train_step

TINY_LLM = {
    "llm_hidden_size": 16,
    "llm_layers": 1,
    "llm_heads": 2,
    "llm_max_len": 8,
    "llm_epochs": 2,
    "llm_batch_size": 64,
    "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "movie_title"]},
}


def make_config(tiny_config, **extra):
    return LSCConfig("LLMRec", "mltiny", config_dict={**tiny_config, **TINY_LLM, **extra})


@pytest.fixture
def setup(tiny_config):
    config = make_config(tiny_config)
    dataset = create_dataset(config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    torch.manual_seed(0)
    model = LLMRec(config, dataset).eval()
    return config, dataset, protocol, model


def test_titles_map_to_the_right_items(tiny_config):
    config = make_config(tiny_config)
    dataset = create_dataset(config)
    titles = item_titles(dataset, "movie_title")
    assert len(titles) == dataset.item_num and titles[0] == ""
    # ml-100k: item 242 is "Kolya" and item 50 is "Star Wars"
    assert titles[dataset.token2id("item_id", "242")] == "Kolya"
    assert titles[dataset.token2id("item_id", "50")] == "Star Wars"


def test_item_token_map_round_trip(setup):
    _, dataset, _, model = setup
    assert model.item_tokens[0] == "[PAD]"
    assert model.item_embedding.num_embeddings == dataset.item_num
    for token in ("242", "50", "1"):
        item_id = dataset.token2id("item_id", token)
        assert model.item_tokens[item_id] == token
        assert dataset.id2token("item_id", [item_id])[0] == token


def test_candidates_valid_unique_sorted_and_equal_to_full_sort_top(setup):
    _, _, protocol, model = setup
    batch = protocol.interaction(protocol.samples("test"), "stale", 8, model_fields(model))
    ids, scores = model.top_candidates(batch["item_id_list"], batch["item_length"], 20)
    assert ids.shape == scores.shape == (len(batch), 20)
    assert (ids > 0).all() and (ids < model.n_items).all()
    assert all(len(set(row.tolist())) == 20 for row in ids)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    full = model.full_sort_predict(batch)
    assert torch.isinf(full[:, 0]).all()
    top_scores, top_ids = torch.topk(full, 20, dim=1)
    assert torch.equal(top_ids, ids) and torch.allclose(top_scores, scores)
    # log-probabilities over the catalogue
    assert torch.allclose(full.exp().sum(1), torch.ones(len(batch)), atol=1e-4)


def test_masked_history_never_recommended(tiny_config):
    config = make_config(tiny_config, llm_mask_history=True)
    dataset = create_dataset(config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, 2)
    model = LLMRec(config, dataset).eval()
    batch = protocol.interaction(protocol.samples("test"), "fresh", 8, model_fields(model))
    ids, _ = model.top_candidates(batch["item_id_list"], batch["item_length"], 30)
    for row, history in zip(ids.tolist(), batch["item_id_list"].tolist()):
        assert not set(row) & (set(history) - {0})


def test_candidate_num_out_of_range(setup):
    _, dataset, protocol, model = setup
    batch = protocol.interaction(protocol.samples("test"), "stale", 8, model_fields(model))
    for bad in (0, dataset.item_num):
        with pytest.raises(ConfigError, match="candidate_num must be between 1 and"):
            model.top_candidates(batch["item_id_list"], batch["item_length"], bad)


def test_save_load_reproduces_candidates(setup, tmp_path):
    config, dataset, protocol, model = setup
    folder = str(tmp_path / "llm")
    model.save_pretrained(folder, config)
    assert os.path.isfile(os.path.join(folder, "backbone", "model.safetensors"))
    loaded = LLMRec.from_pretrained(folder, config, dataset).eval()
    batch = protocol.interaction(protocol.samples("test"), "stale", 8, model_fields(model))
    ids_a, scores_a = model.top_candidates(batch["item_id_list"], batch["item_length"], 10)
    ids_b, scores_b = loaded.top_candidates(batch["item_id_list"], batch["item_length"], 10)
    assert torch.equal(ids_a, ids_b) and torch.equal(scores_a, scores_b)


def test_load_refuses_other_catalogue(setup, tmp_path):
    config, dataset, _, model = setup
    folder = str(tmp_path / "llm")
    model.save_pretrained(folder, config)
    model.item_tokens[5] = "something else"
    model.save_pretrained(folder, config)
    with pytest.raises(CheckpointError, match="another item catalogue"):
        LLMRec.from_pretrained(folder, config, dataset)


def _save_local_llama(folder, words, with_tokenizer=True):
    """A tiny random Llama + word-level tokenizer, saved like any Hugging Face model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "<s>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    if with_tokenizer:
        core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        core.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>").save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return vocab


def test_lora_on_local_backbone_and_title_init(tiny_config, tmp_path):
    folder = str(tmp_path / "local-llama")
    probe = create_dataset(make_config(tiny_config))
    titles = item_titles(probe, "movie_title")
    vocab = _save_local_llama(folder, " ".join(titles).split())
    config = make_config(tiny_config, llm_backbone=folder, llm_lora=True, llm_lora_r=4, llm_prompt="history :")
    dataset = create_dataset(config)
    model = LLMRec(config, dataset)
    # only LoRA adapters and item tokens train; the backbone's own weights are frozen
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "item_embedding.weight" in trainable
    assert any("lora_A" in name for name in trainable)
    assert not any("lora" not in name and name.startswith("backbone") for name in trainable)
    # item token of "Star Wars" = mean of the embeddings of "Star" and "Wars"; one LoRA step runs;
    # then save/load (adapter only) reproduces the scores
    protocol = check_title_init_and_train_step(model, dataset, [vocab["Star"], vocab["Wars"]], 8, 16)
    out = str(tmp_path / "saved-lora")
    model.save_pretrained(out, config)
    assert os.path.isfile(os.path.join(out, "backbone", "adapter_model.safetensors"))
    loaded = LLMRec.from_pretrained(out, config, dataset).eval()
    batch = protocol.interaction(protocol.samples("valid"), "fresh", 8, model_fields(model))
    assert torch.allclose(model.full_sort_predict(batch), loaded.full_sort_predict(batch))


@pytest.mark.parametrize(
    "backbone, message",
    [("/no/such/model/dir", "neither 'tiny'"), ("EMPTY", "no config.json")],
)
def test_bad_backbone_path(tiny_config, tmp_path, backbone, message):
    if backbone == "EMPTY":
        backbone = str(tmp_path / "empty")
        os.makedirs(backbone)
    config = make_config(tiny_config, llm_backbone=backbone)
    dataset = create_dataset(config)
    with pytest.raises(ConfigError, match=message):
        LLMRec(config, dataset)


@pytest.mark.parametrize("text_field, prompt", [("movie_title", ""), (None, "history :")])
def test_backbone_without_tokenizer_when_titles_or_a_prompt_are_read(tiny_config, tmp_path, text_field, prompt):
    folder = str(tmp_path / "no-tokenizer")
    _save_local_llama(folder, ["a"], with_tokenizer=False)
    config = make_config(tiny_config, llm_backbone=folder, llm_item_text_field=text_field, llm_prompt=prompt)
    with pytest.raises(ConfigError, match="has no usable tokenizer .*llm_prompt"):
        LLMRec(config, create_dataset(config))
    # neither read: the history starts at the backbone's BOS token
    config = make_config(tiny_config, llm_backbone=folder, llm_item_text_field=None, llm_prompt="")
    assert LLMRec(config, create_dataset(config)).prompt_ids.tolist() == [2]


def test_load_needs_the_saved_safetensors_weights(setup, tmp_path):
    config, dataset, _, model = setup
    folder = str(tmp_path / "llm")
    model.save_pretrained(folder, config)
    os.remove(os.path.join(folder, "backbone", "model.safetensors"))
    with open(os.path.join(folder, "backbone", "pytorch_model.bin"), "wb") as handle:
        handle.write(b"a pickle is never read")
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        LLMRec.from_pretrained(folder, config, dataset)


def test_llmrec_run_writes_stale_and_fresh_rows(tiny_config):
    out = run_recbole_lsc("LLMRec", "mltiny", config_dict={**tiny_config, **TINY_LLM, "run_name": "llm"})
    roles = [row["role"] for row in out["rows"]]
    assert roles == ["llm_stale", "llm_fresh"]
    for row in out["rows"]:
        assert 0 <= row["test"]["ndcg@10"] <= row["test"]["hit@10"] <= 1
    recall = out["llm"]["stale_test"]
    assert 0 <= recall["candidate_recall@50"] <= recall["candidate_recall@100"] <= 1
    assert out["llm"]["llm_training"]["epochs_trained"] >= 1
    training = out["llm"]["llm_training"]
    assert training["train_seconds_per_epoch"] > 0 and training["valid_seconds_per_pass"] > 0


def test_windowed_training_candidates_equal_exact_ones_when_the_window_holds_the_history(setup):
    from recbole_lsc.cloud.source import InProcessCloud

    config, _, protocol, model = setup
    samples = protocol.samples("train")
    cloud = InProcessCloud(model, 64, "cpu")
    windowed = cloud.training_candidates(protocol, samples, "stale", 10, batch_size=16)
    item_seq, item_len = protocol.history(samples, "stale", model.max_history)
    exact = cloud.candidates(torch.from_numpy(item_seq), torch.from_numpy(item_len), 10)
    windowed_ids, windowed_scores, exact_ids, exact_scores = windowed.item_ids, windowed.scores, exact.item_ids, exact.scores
    assert torch.equal(windowed.history_len, exact.history_len)
    ends = protocol.history_end(samples, "stale")
    short = torch.from_numpy(ends <= config["llm_max_len"])  # one window from the start holds it all
    assert short.sum() > 20 and (~short).sum() > 20
    assert torch.equal(windowed_ids[short], exact_ids[short])
    assert torch.allclose(windowed_scores[short], exact_scores[short], atol=1e-5)
    # longer histories read a window with at least max_len // 2 items of context: still valid lists
    long_ids = windowed_ids[~short]
    assert (long_ids > 0).all() and all(len(set(row.tolist())) == 10 for row in long_ids)


def test_sampled_softmax_items_hold_every_target_and_fill_up_to_the_size(setup):
    _, _, _, model = setup
    targets = torch.tensor([5, 9, 5, 300, 9])
    torch.manual_seed(1)
    ids = model.loss_items(targets, 50)
    assert len(ids) == 50 and len(set(ids.tolist())) == 50 and {5, 9, 300} <= set(ids.tolist())
    assert torch.equal(ids, torch.sort(ids).values) and ids.min() >= 1 and ids.max() < model.n_items
    assert model.loss_items(targets, 2).tolist() == [5, 9, 300]  # the targets alone exceed the size


def test_sampled_softmax_loss_is_the_cross_entropy_over_its_items(setup):
    _, _, protocol, model = setup
    items, lengths = (torch.from_numpy(array[:16]) for array in protocol.cloud_training_windows(8))
    model.eval()  # no dropout: both computations see the same hidden states
    full = model.window_loss(items, lengths)
    assert model.window_loss(items, lengths, softmax_items=model.n_items) == full  # not smaller: full softmax
    torch.manual_seed(2)
    sampled = model.window_loss(items, lengths, softmax_items=100)
    torch.manual_seed(2)
    valid = torch.arange(1, items.size(1)).unsqueeze(0) < lengths.unsqueeze(1)
    targets = items[:, 1:][valid]
    ids = model.loss_items(targets, 100)
    start = len(model.prompt_ids)
    hidden = model.sequence_hidden(items, lengths)[:, start : start + items.size(1) - 1][valid]
    by_hand = torch.nn.functional.cross_entropy(hidden @ model.item_embedding.weight[ids].T,
                                                torch.searchsorted(ids, targets))
    assert torch.allclose(sampled, by_hand) and sampled < full  # fewer competitors, a smaller loss


def test_item_text_joins_the_configured_fields(tiny_config):
    columns = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "movie_title", "release_year", "class"]}
    dataset = create_dataset(make_config(tiny_config, load_col=columns))
    texts = item_titles(dataset, ["movie_title", "release_year", "class"])
    assert texts[dataset.token2id("item_id", "50")] == "Star Wars, 1977, Action Adventure Romance Sci-Fi War"
    assert texts[0] == "" and item_titles(dataset, "movie_title") == item_titles(dataset, ["movie_title"])
    with pytest.raises(ConfigError, match="empty list"):
        item_titles(dataset, [])
    with pytest.raises(ConfigError, match="'genre' is not loaded"):
        item_titles(dataset, ["movie_title", "genre"])


def test_prompt_and_item_text_fields_reach_a_pretrained_backbone(tiny_config, tmp_path):
    from transformers import AutoTokenizer

    folder = str(tmp_path / "local-llama")
    columns = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "movie_title", "release_year"]}
    probe = create_dataset(make_config(tiny_config, load_col=columns))
    texts = item_titles(probe, ["movie_title", "release_year"])
    _save_local_llama(folder, " ".join(texts).replace(",", " , ").split() + ["movies", ":"])
    config = make_config(tiny_config, load_col=columns, llm_backbone=folder, llm_prompt="movies :",
                         llm_item_text_field=["movie_title", "release_year"])
    dataset = create_dataset(config)
    model = LLMRec(config, dataset)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.prompt_ids.tolist() == tokenizer("movies :")["input_ids"]
    star_wars = dataset.token2id("item_id", "50")
    ids = tokenizer("Star Wars, 1977", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4  # Star, Wars, ",", 1977: the year is read too
    table = model.backbone.get_input_embeddings().weight
    assert torch.allclose(model.item_embedding.weight[star_wars], table[ids].mean(0))


def test_bf16_autocast_keeps_candidates_valid_unique_and_sorted(tiny_config):
    config = make_config(tiny_config, llm_autocast="bf16")
    dataset = create_dataset(config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    torch.manual_seed(0)
    model = LLMRec(config, dataset).eval()
    assert model.autocast_dtype == torch.bfloat16
    batch = protocol.interaction(protocol.samples("test"), "fresh", 8, model_fields(model))
    with torch.no_grad():
        ids, scores = model.top_candidates(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], 20)
        model.autocast_dtype = None
        exact_ids, _ = model.top_candidates(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], 20)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert ((ids >= 1) & (ids < dataset.item_num)).all()
    assert all(len(set(row.tolist())) == 20 for row in ids)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 20 for a, b in zip(ids, exact_ids)])
    assert overlap > 0.8  # bf16 moves near-ties only


def test_autocast_auto_is_float32_on_the_cpu_and_bad_modes_are_refused(tiny_config):
    from recbole_lsc.cloud.precision import autocast_dtype

    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("off", "cpu") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="llm_autocast' must be one of auto, bf16, off"):
        LSCConfig("LLMRec", "mltiny", config_dict={**tiny_config, **TINY_LLM, "llm_autocast": "fp8"})


def test_lora_training_reduces_the_loss_and_checkpointing_gives_the_same_gradients(tiny_config, tmp_path):
    from recbole_lsc.cloud.trainer import LLMRecTrainer

    folder = str(tmp_path / "local-llama")
    probe = create_dataset(make_config(tiny_config))
    _save_local_llama(folder, " ".join(item_titles(probe, "movie_title")).split())
    losses = {}
    for checkpointing in (False, True):
        config = make_config(tiny_config, llm_backbone=folder, llm_lora=True, llm_lora_r=4, llm_learning_rate=0.01,
                             llm_gradient_checkpointing=checkpointing, llm_dropout=0.0, llm_lora_dropout=0.0)
        dataset = create_dataset(config)
        protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
        torch.manual_seed(0)
        model = LLMRec(config, dataset)
        items, lengths = (torch.from_numpy(a[:32]) for a in protocol.cloud_training_windows(8))
        model.train()
        loss = model.window_loss(items, lengths)
        loss.backward()
        losses[checkpointing] = (loss.item(), model.item_embedding.weight.grad.clone())
        trainer = LLMRecTrainer(config, model, protocol)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config["llm_learning_rate"])
        epochs = [trainer._train_epoch(trainer._loader(), optimizer, params, epoch, False) for epoch in range(4)]
        assert epochs[-1] < epochs[0] - 0.05  # the toy task is learnt
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)
    assert torch.allclose(losses[True][1], losses[False][1], atol=1e-6)
