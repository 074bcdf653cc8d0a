"""Every RecBole sequential model as LSC4Rec's device SRM, end to end (slow: about 4 seconds a
model on 2 CPU cores; ``python -m pytest -q -m slow tests/test_every_srm.py``, which the README's
test command and so ``.ci/run`` run).

The list comes from RecBole itself (every class ``recbole.model.sequential_recommender``
exports), so a model a new RecBole adds is covered without editing this file: on a tiny atomic
dataset with ``.item``, ``.kg``, ``.link``, ``.ent`` and ``.rel`` files each model either runs
every stage, one epoch each (independent, cooperative, each device re-training with both
``device_catalogue`` settings) and yields every row, or is refused before any training with one
line (docs/backbones.md says which and why). With ``-s`` each model prints one
``every-srm | model | runs or refused | seconds |`` line.
"""

import os
import time

import pytest
import recbole.model.sequential_recommender as recbole_sequential

from recbole_lsc.device.srm import CANDIDATE_EMBEDDINGS, CATALOGUE_GATHER
from recbole_lsc.errors import ConfigError
from recbole_lsc.quick_start import build_config, run_recbole_lsc
from tests.conftest import write_tiny_ml100k_with_graph
from tests.test_lsc4rec import TINY

pytestmark = pytest.mark.slow

MODELS = sorted(name for name, obj in vars(recbole_sequential).items() if isinstance(obj, type))
# one epoch per stage, small widths every model reads (n_layers 2: FEARec needs two)
QUICK = {**TINY, "epochs": 1, "coop_epochs": 1, "retrain_epochs": 1, "request_curve_ratios": [0.0, 1.0],
         "stage_selection": "always", "hidden_size": 16, "embedding_size": 16, "kg_embedding_size": 16,
         "inner_size": 32, "n_layers": 2, "num_layers": 1, "trained_llm_cache": None, "state": "ERROR",
         "show_progress": False, "use_gpu": False, "seed": 7}
STAGES = {"cooperative", "retrain (candidates, device)", "retrain (full, device)"}


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("every_srm")
    write_tiny_ml100k_with_graph(str(folder), n_users=20, width=QUICK["embedding_size"])
    return str(folder)


@pytest.mark.parametrize("srm", MODELS)
def test_every_recbole_sequential_model_runs_every_stage_or_is_refused_in_one_line(data_path, srm):
    values = {**QUICK, "data_path": data_path, "srm": srm, "results_dir": "R"}
    started = time.time()
    try:
        build_config("LSC4Rec", "mltiny", config_dict=values)
    except ConfigError as refusal:
        assert "\n" not in str(refusal) and srm in str(refusal)
        print(f"\nevery-srm | {srm} | refused: {refusal} | {time.time() - started:.1f} |")  # the table with -s
        return
    out = run_recbole_lsc("LSC4Rec", "mltiny", config_dict=values)
    print(f"\nevery-srm | {srm} | runs ({out['cost']['srm_candidate_scoring']}) | {time.time() - started:.1f} |")
    stages = out["runs"][0]["stages"]
    # each stage trained (one epoch) and was kept (stage_selection: always), so the rows read the tuned copies
    assert STAGES <= set(stages) and all(stages[name]["epochs"] == 1 and stages[name]["kept"] for name in STAGES)
    roles = [row["role"] for row in out["rows"]]
    assert roles[:4] == ["srm", "llm_stale", "llm_fresh", "srm_rerank"] and roles.count("lsc4rec") == 2
    assert all(0 <= row["test"]["ndcg@10"] <= row["test"]["hit@10"] <= 1 for row in out["rows"])
    assert out["cost"]["srm_candidate_scoring"] in (CANDIDATE_EMBEDDINGS, CATALOGUE_GATHER)
    assert os.path.isfile(out["path"])
