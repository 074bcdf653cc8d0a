"""One-pass exact top-C candidates vs Hugging Face beam search on the same LLM.

Trains nothing: it builds the default tiny LLMRec on a dataset (random weights are enough
to time both paths and count invalid candidates), exports it as a plain causal LM with
the item tokens in its vocabulary, and asks ``generate`` for C beams of one new token
(an item is one token), against ``LLMRec.top_candidates``. Invalid = a returned token that
is not an item (a special or prompt token) or a duplicate within a user's list.

    python benchmarks/candidates_vs_beam_search.py --dataset=ml-100k --users=64 --candidate_num=50

Prints a JSON line and a markdown table.
"""

import argparse
import json
import sys
import time

import torch
from recbole.data import create_dataset

import recbole_lsc  # noqa: F401
from recbole_lsc.config import LSCConfig
from recbole_lsc.data import DeviceCloudProtocol, model_fields
from recbole_lsc.model.sequential_recommender.llmrec import LLMRec


def invalid_rate(token_lists, offset, n_items):
    bad = total = 0
    for row in token_lists:
        seen = set()
        for token in row:
            total += 1
            item = token - offset
            if not 1 <= item < n_items or item in seen:
                bad += 1
            seen.add(item)
    return bad / max(total, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--candidate_num", type=int, default=50)
    args, overrides = parser.parse_known_args(argv)
    config = LSCConfig("LLMRec", args.dataset, config_dict={"state": "ERROR"}, cmd_args=overrides)
    dataset = create_dataset(config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    torch.manual_seed(config["seed"])
    model = LLMRec(config, dataset).eval()
    samples = protocol.samples("test")
    batch = protocol.interaction(samples, "stale", config["llm_max_len"], model_fields(model))[: args.users]
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]

    start = time.perf_counter()
    ids, _ = model.top_candidates(seq, length, args.candidate_num)
    one_pass = (time.perf_counter() - start) / len(batch)
    one_pass_invalid = invalid_rate(ids.tolist(), 0, model.n_items)

    lm, offset = model.as_causal_lm()
    prompt = model.prompt_ids.tolist()
    start = time.perf_counter()
    beams = []
    with torch.no_grad():
        for row, n in zip(seq.tolist(), length.tolist()):  # one user at a time: no padding
            input_ids = torch.tensor([prompt + [offset + item for item in row[:n]]])
            out = lm.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), num_beams=args.candidate_num,
                num_return_sequences=args.candidate_num, max_new_tokens=1, do_sample=False,
                early_stopping=True, pad_token_id=0, eos_token_id=None,
            )
            beams.append(out[:, -1].tolist())
    beam = (time.perf_counter() - start) / len(batch)
    beam_invalid = invalid_rate(beams, offset, model.n_items)
    same = sum(set(b) == {offset + i for i in r} for b, r in zip(beams, ids.tolist())) / len(batch)

    figures = {
        "dataset": args.dataset, "users": len(batch), "candidate_num": args.candidate_num,
        "llm_parameters": sum(p.numel() for p in model.parameters()),
        "one_pass_seconds_per_user": one_pass, "beam_search_seconds_per_user": beam,
        "speedup": beam / one_pass, "one_pass_invalid_rate": one_pass_invalid,
        "beam_search_invalid_rate": beam_invalid, "same_candidate_set_share": same,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(figures))
    print("| method | s / user | invalid rate |\n|---|---|---|")
    print(f"| one-pass top-{args.candidate_num} | {one_pass:.5f} | {one_pass_invalid:.3f} |")
    print(f"| beam search ({args.candidate_num} beams) | {beam:.5f} | {beam_invalid:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
