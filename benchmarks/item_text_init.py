"""What a pretrained cloud reads about an item: validation NDCG@10 per item-text option.

For each option of ``--texts`` (``none``: item tokens start at random; otherwise the
comma-separated ``.item`` fields whose text initialises each item token, joined as
``llm_item_text_field`` joins them) the cloud LLM (default SmolLM2-135M-Instruct + LoRA, as in
``properties/cloud/smollm2-135m.yaml``) is built from the same seed and scored on the validation
users with fresh and stale histories, before any training (what the text alone tells it) and,
with ``--epochs N``, after N training epochs (no early stopping). Reports seconds per option.

    python benchmarks/item_text_init.py --texts none movie_title movie_title,release_year,class
"""

import sys
import time

from recbole.utils import init_seed

import _common
from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.cloud.trainer import LLMRecTrainer
from recbole_lsc.config import LSCConfig
from recbole_lsc.data.loading import create_dataset
from recbole_lsc.protocol import DeviceCloudProtocol

PRETRAINED = {"llm_backbone": "smollm2-135m", "llm_lora": True, "llm_batch_size": 16}


def option_config(args, overrides, fields):
    """The LLMRec config of one text option (``fields``: a list of .item fields, or None)."""
    values = {**_common.base_config_dict(args, overrides), **PRETRAINED, "llm_item_text_field": fields,
              "llm_epochs": max(args.epochs, 1), "llm_stopping_step": args.epochs + 1, "trained_llm_cache": None}
    if fields:
        values["load_col"] = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", *fields]}
    return LSCConfig("LLMRec", args.dataset, config_dict=values, cmd_args=overrides)


def measure(args, overrides, option):
    fields = None if option == "none" else option.split(",")
    config = option_config(args, overrides, fields)
    dataset = create_dataset(config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    init_seed(config["seed"], config["reproducibility"])
    started = time.perf_counter()
    model = LLMRec(config, dataset).to(config["device"])
    trainer = LLMRecTrainer(config, model, protocol)
    metric = config["valid_metric"].lower()
    result = {"texts": option, "built_seconds": round(time.perf_counter() - started, 1)}
    for view in ("fresh", "stale"):
        result[f"untrained_valid_{view}"] = round(trainer.evaluate("valid", view)[metric], 6)
    if args.epochs:
        started = time.perf_counter()
        trainer.fit(show_progress=False)
        result["train_seconds"] = round(time.perf_counter() - started, 1)
        for view in ("fresh", "stale"):
            result[f"trained_valid_{view}"] = round(trainer.evaluate("valid", view)[metric], 6)
    return result


def main(argv=None):
    p = _common.parser(__doc__, users=None)
    p.add_argument("--texts", nargs="+", default=["none", "movie_title", "movie_title,release_year,class"],
                   help="text options: 'none' or comma-separated .item fields (default %(default)s)")
    p.add_argument("--epochs", type=int, default=0, help="training epochs after the untrained score (default 0)")
    args, overrides = _common.parse(p, argv)
    with _common.scratch_cwd():
        rows = [measure(args, overrides, option) for option in args.texts]
    columns = list(rows[0])
    figures = {"benchmark": "item_text_init", "dataset": args.dataset, "epochs": args.epochs, "rows": rows,
               "environment": _common.environment(args.device)}
    _common.emit(figures, _common.markdown(columns, [[row.get(key) for key in columns] for row in rows]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(main))
