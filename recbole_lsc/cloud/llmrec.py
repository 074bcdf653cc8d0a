"""LLMRec: the cloud LLM of LSC4Rec, a transformers causal LM over item tokens.

Each item is one added token: a row of ``item_embedding`` that is both the token's input
embedding and its output embedding (tied), next to the backbone's own vocabulary. A history
is ``[prompt tokens] + [item tokens]``; the next-item distribution is a softmax over the item
tokens only, so the top-C candidates are exact, valid and scored in one forward pass (no
beam search over digit strings). With a pretrained backbone the item tokens start from the
mean embedding of their title's tokens and the backbone is tuned with peft LoRA.
"""

import contextlib
import copy
import json
import logging
import os

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM

from recbole_lsc.cloud.backbones import build_tiny, load_pretrained, wrap_lora
from recbole_lsc.cloud.precision import autocast_dtype
from recbole_lsc.data.item_text import item_titles
from recbole_lsc.errors import CheckpointError, ConfigError, first_line

# Keys that fix the architecture; saved with the model and restored by from_pretrained.
ARCHITECTURE_KEYS = (
    "llm_backbone", "llm_hidden_size", "llm_layers", "llm_heads", "llm_max_len", "llm_dropout",
    "llm_lora", "llm_lora_r", "llm_lora_alpha", "llm_lora_dropout", "llm_lora_targets",
    "llm_item_text_field", "llm_prompt",
)
# llm_autocast and llm_gradient_checkpointing change how it computes, not its architecture


class LLMRec(SequentialRecommender):
    r"""LLMRec, the cloud LLM of LSC4Rec: a next-item language model with one token per item
    (see the module docstring).

    Reference:
        Lv et al. "Collaboration of Large Language Models and Small Recommendation Models for
        Device-Cloud Recommendation." in KDD 2025.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset, backbone=None):
        super().__init__(config, dataset)
        self.max_history = config["llm_max_len"]
        self.mask_history = config["llm_mask_history"]
        self.item_tokens = list(dataset.field2id_token[self.ITEM_ID])
        is_tiny = config["llm_backbone"] == "tiny"
        text_field = None if is_tiny else config["llm_item_text_field"]
        if backbone is not None:
            self.backbone, self.tokenizer = backbone
        elif is_tiny:
            self.backbone, self.tokenizer = build_tiny(config), None
        else:
            self.backbone, self.tokenizer = load_pretrained(
                config["llm_backbone"], config["llm_cache_dir"],
                need_tokenizer=text_field is not None or bool(config["llm_prompt"]),
            )
        hidden = self.backbone.config.hidden_size
        self.item_embedding = nn.Embedding(self.n_items, hidden, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        if text_field is not None and backbone is None:
            self._init_items_from_titles(item_titles(dataset, text_field))
        self.register_buffer("prompt_ids", self._prompt_ids(config["llm_prompt"]), persistent=False)
        if config["llm_lora"] and not _is_peft(self.backbone):
            self.backbone = wrap_lora(self.backbone, config)
        self.input_dropout = nn.Dropout(config["llm_dropout"])
        self.autocast_dtype = autocast_dtype(config["llm_autocast"], config["device"])
        if config["llm_gradient_checkpointing"]:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.loss_fct = nn.CrossEntropyLoss()

    # ----------------------------------------------------------------- set-up
    def _prompt_ids(self, prompt):
        if self.tokenizer is None or not prompt:
            bos = self.backbone.config.bos_token_id
            return torch.tensor([1 if bos is None else bos], dtype=torch.long)
        return torch.tensor(self.tokenizer(prompt)["input_ids"], dtype=torch.long)

    @torch.no_grad()
    def _init_items_from_titles(self, titles):
        """Item token = mean input embedding of its title's tokens (random when untitled)."""
        table = self.backbone.get_input_embeddings().weight
        untitled = 0
        for item_id, title in enumerate(titles[1:], start=1):
            ids = self.tokenizer(title, add_special_tokens=False)["input_ids"] if title else []
            if ids:
                self.item_embedding.weight[item_id] = table[ids].mean(0)
            else:
                untitled += 1
        if untitled == len(titles) - 1:
            raise ConfigError("every item title is empty: the .item text field holds no titles")
        if untitled:
            logging.getLogger().warning(f"{untitled} items have no title; their tokens start at random")

    # ---------------------------------------------------------------- forward
    def _decoder(self):
        base = self.backbone.get_base_model() if _is_peft(self.backbone) else self.backbone
        return base.get_decoder()

    def sequence_hidden(self, item_seq, item_seq_len):
        """Hidden states ``[B, P + L, H]`` of ``[prompt] + items`` (right-padded histories)."""
        batch = item_seq.size(0)
        prompt = self.backbone.get_input_embeddings()(self.prompt_ids).unsqueeze(0).expand(batch, -1, -1)
        embeds = self.input_dropout(torch.cat([prompt, self.item_embedding(item_seq)], dim=1))
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        mask = torch.cat(
            [
                torch.ones(batch, len(self.prompt_ids), dtype=torch.long, device=item_seq.device),
                (positions.unsqueeze(0) < item_seq_len.unsqueeze(1)).long(),
            ],
            dim=1,
        )
        with self._autocast():
            hidden = self._decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return hidden.float()  # the catalogue softmax runs in float32

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.item_embedding.weight.device.type, dtype=self.autocast_dtype)

    def forward(self, item_seq, item_seq_len):
        """Hidden state after the last history item (after the prompt for an empty history)."""
        hidden = self.sequence_hidden(item_seq, item_seq_len)
        return self.gather_indexes(hidden, item_seq_len + len(self.prompt_ids) - 1)

    def item_logits(self, hidden):
        logits = hidden @ self.item_embedding.weight.T
        logits[..., 0] = -torch.inf
        return logits

    # ------------------------------------------------------------------ losses
    def window_loss(self, items, lengths, softmax_items=0):
        """Next-item cross-entropy on every position of windows from ``cloud_training_windows``.

        The softmax over the catalogue at every position dominates the cost of a large
        catalogue; with ``0 < softmax_items < n_items - 1`` it runs over ``loss_items`` instead
        (a sampled softmax; inference always ranks the whole catalogue).
        """
        hidden = self.sequence_hidden(items, lengths)
        start = len(self.prompt_ids)
        span = items.size(1) - 1
        valid = torch.arange(1, span + 1, device=items.device).unsqueeze(0) < lengths.unsqueeze(1)
        hidden, targets = hidden[:, start : start + span][valid], items[:, 1:][valid]
        if 0 < softmax_items < self.n_items - 1:
            ids = self.loss_items(targets, softmax_items)
            logits = hidden @ self.item_embedding.weight[ids].T
            return self.loss_fct(logits, torch.searchsorted(ids, targets))
        return self.loss_fct(self.item_logits(hidden), targets)

    def loss_items(self, targets, size):
        """Sorted item ids a sampled softmax scores: every distinct target of the batch, then
        uniformly drawn other items until there are ``size`` (no more when the targets alone reach it)."""
        ids = torch.unique(targets)
        missing = size - len(ids)
        if missing > 0:
            drawn = torch.randperm(self.n_items - 1, device=targets.device)[: missing + len(ids)] + 1
            others = drawn[~torch.isin(drawn, ids)][:missing]
            ids = torch.sort(torch.cat([ids, others])).values
        return ids

    # --------------------------------------------------------------- inference
    def log_probs(self, item_seq, item_seq_len):
        """Next-item log-probabilities ``[B, n_items]``; padding (and history if masked) at -inf."""
        log_probs = F.log_softmax(self.item_logits(self.forward(item_seq, item_seq_len)), dim=-1)
        if self.mask_history:
            log_probs = log_probs.scatter(1, item_seq, -torch.inf)
            log_probs[:, 0] = -torch.inf
        return log_probs

    def full_sort_predict(self, interaction):
        return self.log_probs(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    @torch.no_grad()
    def top_candidates(self, item_seq, item_seq_len, num):
        """Exact top-``num`` items of the next-item distribution: ``(item_ids, log_probs)``.

        Sorted by score, unique, never padding or (when masked) a history item.
        """
        log_probs = self.log_probs(item_seq, item_seq_len)
        available = int(torch.isfinite(log_probs).sum(1).min()) if len(log_probs) else self.n_items - 1
        if not 1 <= num <= available:
            raise ConfigError(
                f"candidate_num must be between 1 and {available} (items that can be recommended), got {num}"
            )
        scores, ids = torch.topk(log_probs, num, dim=1)
        return ids, scores

    @torch.no_grad()
    def as_causal_lm(self):
        """A plain Hugging Face causal LM whose vocabulary holds the item tokens.

        Returns ``(model, item_offset)``: item ``i`` is token ``item_offset + i`` (input and
        output embedding), so standard tooling (``generate``, beam search) runs on the same
        weights. LoRA adapters are merged into a copy; this model is left unchanged.
        """
        backbone = copy.deepcopy(self.backbone)
        if _is_peft(backbone):
            backbone = backbone.merge_and_unload()
        offset = backbone.get_input_embeddings().num_embeddings
        backbone.resize_token_embeddings(offset + self.n_items, mean_resizing=False)
        backbone.get_input_embeddings().weight[offset:] = self.item_embedding.weight
        output = backbone.get_output_embeddings()
        if output.weight.data_ptr() != backbone.get_input_embeddings().weight.data_ptr():
            output.weight[offset:] = self.item_embedding.weight
            if getattr(output, "bias", None) is not None:
                output.bias[offset:] = 0
        return backbone.eval(), offset

    # --------------------------------------------------------------- save/load
    def save_pretrained(self, folder, config):
        """Backbone (or only its LoRA adapter) via ``save_pretrained``, item tokens as safetensors."""
        os.makedirs(folder, exist_ok=True)
        self.backbone.save_pretrained(os.path.join(folder, "backbone"), safe_serialization=True)
        save_file({"weight": self.item_embedding.weight.detach().cpu().contiguous()},
                  os.path.join(folder, "item_embedding.safetensors"))
        meta = {"item_tokens": self.item_tokens, **{key: config[key] for key in ARCHITECTURE_KEYS}}
        with open(os.path.join(folder, "llmrec.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle)

    @classmethod
    def from_pretrained(cls, folder, config, dataset):
        """Load a saved LLMRec for ``dataset``; its item-token map must match the dataset's."""
        meta_file = os.path.join(folder, "llmrec.json")
        try:
            with open(meta_file, encoding="utf-8") as handle:
                meta = json.load(handle)
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"'{meta_file}' is missing or corrupt ({type(err).__name__}); save the model again")
        if meta["item_tokens"] != list(dataset.field2id_token[dataset.iid_field]):
            raise CheckpointError(f"LLMRec in '{folder}' was trained on another item catalogue than this dataset's")
        for key in ARCHITECTURE_KEYS:
            config[key] = meta[key]
        backbone_dir = os.path.join(folder, "backbone")
        backbone = _load_backbone(backbone_dir, config)
        model = cls(config, dataset, backbone=backbone)
        model.item_embedding.weight.data.copy_(load_file(os.path.join(folder, "item_embedding.safetensors"))["weight"])
        return model


def _is_peft(module):
    return hasattr(module, "peft_config")


def _load_backbone(backbone_dir, config):
    """The saved backbone: a whole model (tiny, or a pretrained one tuned without LoRA) or the
    pretrained base plus the saved LoRA adapter; safetensors only, from this folder only."""
    weights = "adapter_model.safetensors" if config["llm_lora"] else "model.safetensors"
    if not os.path.isfile(os.path.join(backbone_dir, weights)):
        raise CheckpointError(f"'{backbone_dir}' holds no {weights} (only safetensors weights are loaded); "
                              "save the model again with save_pretrained")
    tokenizer = None
    try:
        if config["llm_backbone"] != "tiny":
            base, tokenizer = load_pretrained(config["llm_backbone"], config["llm_cache_dir"],
                                              need_tokenizer=bool(config["llm_prompt"]))
            if config["llm_lora"]:
                from peft import PeftModel

                return PeftModel.from_pretrained(base, backbone_dir, is_trainable=True), tokenizer
        return AutoModelForCausalLM.from_pretrained(backbone_dir, local_files_only=True, use_safetensors=True), tokenizer
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"the backbone in '{backbone_dir}' could not be loaded ({first_line(err)}); "
                              "save the model again") from None
