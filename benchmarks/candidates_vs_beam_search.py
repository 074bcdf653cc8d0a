"""One-pass exact top-C candidates vs Hugging Face beam search on the same LLM.

Trains nothing: it builds the default tiny LLMRec on a dataset (random weights are enough
to time both paths and count invalid candidates), exports it as a plain causal LM with
the item tokens in its vocabulary, and asks ``generate`` for C beams of one new token
(an item is one token), against ``LLMRec.top_candidates``. Invalid = a returned token that
is not an item (a special or prompt token) or a duplicate within a user's list.

    python benchmarks/candidates_vs_beam_search.py --dataset=ml-100k --users=64 --candidate_num=50

Prints a markdown table, then the figures as one JSON line (the last line of stdout; --out
also writes them to a file). ``--users`` takes the first N test users; the catalogue is whole.
"""

import sys
import time

import torch

from _common import base_config_dict, emit, environment, markdown, parse, parser, run, sync
from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.config import LSCConfig
from recbole_lsc.data.loading import create_dataset
from recbole_lsc.experiment.cost import parameter_count
from recbole_lsc.protocol import DeviceCloudProtocol, model_fields


def invalid_rate(token_lists, offset, n_items):
    """Share of returned tokens that are not an item (``token - offset``) or repeat one in their row."""
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


@torch.no_grad()
def beam_search_tokens(lm, offset, prompt, seq, length, num):
    """Hugging Face beam search, one user at a time (no padding): the ``num`` beams' one new token each."""
    beams = []
    for row, n in zip(seq.tolist(), length.tolist()):
        input_ids = torch.tensor([prompt + [offset + item for item in row[:n]]], device=seq.device)
        out = lm.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), num_beams=num,
            num_return_sequences=num, max_new_tokens=1, do_sample=False,
            early_stopping=True, pad_token_id=0, eos_token_id=None,
        )
        beams.append(out[:, -1].tolist())
    return beams


def main(argv=None):
    """Time both paths on the first ``--users`` test users (stale histories); print and emit the figures."""
    p = parser(__doc__, users=64)
    p.add_argument("--candidate_num", type=int, default=50)
    args, overrides = parse(p, argv)
    config = LSCConfig("LLMRec", args.dataset, config_dict=base_config_dict(args, overrides), cmd_args=overrides)
    device = config["device"]
    dataset = create_dataset(config)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    torch.manual_seed(config["seed"])
    model = LLMRec(config, dataset).to(device).eval()
    samples = protocol.samples("test")
    batch = protocol.interaction(samples, "stale", config["llm_max_len"], model_fields(model))
    batch = batch[: args.users or len(batch)].to(device)
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]

    start = time.perf_counter()
    ids, _ = model.top_candidates(seq, length, args.candidate_num)
    sync(device)
    one_pass = (time.perf_counter() - start) / len(batch)
    one_pass_invalid = invalid_rate(ids.tolist(), 0, model.n_items)

    lm, offset = model.as_causal_lm()
    start = time.perf_counter()
    beams = beam_search_tokens(lm, offset, model.prompt_ids.tolist(), seq, length, args.candidate_num)
    sync(device)
    beam = (time.perf_counter() - start) / len(batch)
    beam_invalid = invalid_rate(beams, offset, model.n_items)
    same = sum(set(b) == {offset + i for i in r} for b, r in zip(beams, ids.tolist())) / len(batch)

    figures = {
        "benchmark": "candidates_vs_beam_search",
        "dataset": args.dataset, "users": len(batch), "candidate_num": args.candidate_num,
        "llm_parameters": parameter_count(model),
        "one_pass_seconds_per_user": one_pass, "beam_search_seconds_per_user": beam,
        "speedup": beam / one_pass, "one_pass_invalid_rate": one_pass_invalid,
        "beam_search_invalid_rate": beam_invalid, "same_candidate_set_share": same,
        "torch_threads": torch.get_num_threads(), "environment": environment(device),
    }
    emit(figures, markdown(["method", "s / user", "invalid rate"], [
        (f"one-pass top-{args.candidate_num}", one_pass, one_pass_invalid),
        (f"beam search ({args.candidate_num} beams)", beam, beam_invalid),
    ]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
