"""Leaderboard: aggregation, ranks, paired tests, plots from fixed results, resumable sweeps."""

import csv
import json
import os

import numpy as np
import pytest

import recbole_lsc.leaderboard.sweep as sweep
from recbole_lsc.cli import main
from recbole_lsc.leaderboard import plots
from recbole_lsc.leaderboard.table import aggregate, cost_rows, csv_rows, markdown
from tests.conftest import write_tiny_ml100k


def fake_results(srm, shift, users):
    """A results.json payload with known figures: LSC4Rec = SRM + shift."""
    def row(name, role, value):
        return {"name": name, "role": role, "valid": {"ndcg@10": value}, "test": {"ndcg@10": value, "hit@10": 2 * value}}
    base = 0.1 + shift
    results = [row(srm, "srm", base), row(f"{srm} re-rank", "srm_rerank", base - 0.02),
               row("LLMRec (stale)", "llm_stale", 0.05), row("LLMRec (fresh)", "llm_fresh", 0.07),
               {**row("LSC4Rec", "lsc4rec", base + 0.03), "device_catalogue": "full"}]
    curve = [{"device_catalogue": "full", "policy": p, "rho": r, "realized": r,
              "test": {"ndcg@10": base + r * 0.05 + (p == "oracle") * 0.02}}
             for p in ("random", "consistency", "learned", "oracle") for r in (0.0, 0.1, 0.5, 1.0)]
    per_user = {"metric": "ndcg@10", **{role: list(users[role]) for role in users}}
    return {"results": results, "request_curve": curve, "per_user_test": per_user}


def runs_for(srm, seeds_shift):
    rng = np.random.default_rng(0)
    runs = []
    for seed, shift in seeds_shift.items():
        srm_users = rng.uniform(0, 0.2, 50)
        users = {"srm": srm_users, "srm_rerank": srm_users - 0.01, "llm_stale": srm_users * 0.5,
                 "llm_fresh": srm_users, "lsc4rec/full": srm_users + 0.05}
        runs.append({"dataset": "d", "srm": srm, "seed": seed, "config_id": f"c-{srm}", "path": f"{srm}/{seed}",
                     "results": fake_results(srm, shift, users)})
    return runs


def test_aggregate_means_stds_ranks_and_dedupes_cloud_rows():
    runs = runs_for("SASRec", {1: 0.0, 2: 0.02}) + runs_for("GRU4Rec", {1: -0.04, 2: -0.04})
    rows = aggregate(runs, "ndcg@10")
    by = {(row["method"], row["backbone"]): row for row in rows}
    sas = by[("LSC4Rec", "SASRec")]
    # seeds 0.13 and 0.15: sample std (ddof = 1) 0.02 / sqrt(2) = 0.014142 (the population std would be 0.01)
    assert sas["test"]["ndcg@10"] == pytest.approx(0.14)
    assert sas["test_std"]["ndcg@10"] == pytest.approx(0.014142)
    assert sas["seeds"] == [1, 2]
    # cloud rows once per dataset, not once per backbone
    assert sorted(key for key in by if key[0].startswith("LLMRec")) == [("LLMRec (fresh)", "-"), ("LLMRec (stale)", "-")]
    assert len(by[("LLMRec (stale)", "-")]["seeds"]) == 2
    # ranks by mean test ndcg@10: SASRec LSC4Rec 0.14 > SASRec SRM 0.11 > GRU4Rec LSC4Rec 0.09 ...
    ranked = [(row["rank"], row["method"], row["backbone"]) for row in rows]
    assert ranked[:3] == [(1, "LSC4Rec", "SASRec"), (2, "SRM (full catalogue)", "SASRec"), (3, "LSC4Rec", "GRU4Rec")]
    assert [row["rank"] for row in rows] == sorted(row["rank"] for row in rows)


def test_equal_values_share_the_better_rank():
    runs = runs_for("SASRec", {1: 0.0})
    runs[0]["results"]["results"][1]["test"]["ndcg@10"] = 0.05  # re-rank ties with LLM stale
    rows = {row["method"]: row["rank"] for row in aggregate(runs, "ndcg@10")}
    assert rows["SRM re-rank"] == rows["LLMRec (stale)"] == 4 and rows["LLMRec (fresh)"] == 3


def test_a_nan_metric_ranks_last():
    runs = runs_for("SASRec", {1: 0.0})
    runs[0]["results"]["results"][0]["test"]["ndcg@10"] = float("nan")  # the SRM row
    rows = {row["method"]: row["rank"] for row in aggregate(runs, "ndcg@10")}
    assert rows["SRM (full catalogue)"] == 5 and rows["LSC4Rec"] == 1


def test_paired_tests_on_a_known_case():
    rows = aggregate(runs_for("SASRec", {1: 0.0, 2: 0.0}), "ndcg@10")
    tests = next(row for row in rows if row["role"] == "lsc4rec")["paired_tests"]
    # LSC4Rec is SRM + 0.05 for every user: a certain difference
    assert tests["srm"]["mean_diff"] == pytest.approx(0.05) and tests["srm"]["wilcoxon_p"] < 1e-6
    assert tests["llm_fresh"]["wilcoxon_p"] < 1e-6
    assert "paired_tests" not in next(row for row in rows if row["role"] == "srm")


def test_plots_are_written_from_fixed_results(tmp_path):
    runs = runs_for("SASRec", {1: 0.0, 2: 0.01})
    curve_png, bars_png = tmp_path / "curve.png", tmp_path / "bars.png"
    plots.request_curve_plot([run["results"] for run in runs], "ndcg@10", "test", str(curve_png))
    plots.bar_chart(aggregate(runs, "ndcg@10"), "ndcg@10", "test", str(bars_png))
    for png in (curve_png, bars_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(os.listdir(tmp_path)) == ["bars.png", "curve.png"]  # no temporary files left
    curves = plots.mean_curve([run["results"] for run in runs])
    rhos, tests = curves["learned"]
    assert rhos == [0.0, 0.1, 0.5, 1.0] and len(tests[0]) == 2


def _oracle_below_rho(payloads):
    """The oracle at rho 0.5 requested only 30% of the users (seeds: 0.25 and 0.35)."""
    for payload, realized in zip(payloads, (0.25, 0.35)):
        for point in payload["request_curve"]:
            if point["policy"] == "oracle" and point["rho"] == 0.5:
                point["realized"] = realized
    return payloads


def test_curve_points_are_drawn_at_the_realised_ratio(tmp_path):
    payloads = _oracle_below_rho([run["results"] for run in runs_for("SASRec", {1: 0.0, 2: 0.01})])
    points = plots.curve_points(payloads, "ndcg@10")
    oracle = points["oracle"]
    assert oracle["rho"] == [0.0, 0.1, 0.5, 1.0] and oracle["realized"] == pytest.approx([0.0, 0.1, 0.3, 1.0])
    assert points["learned"]["realized"] == pytest.approx([0.0, 0.1, 0.5, 1.0])
    # ndcg@10 at rho 0.5 for the two seeds: 0.125 and 0.135 -> mean 0.13, sample std 0.01 / sqrt(2)
    learned = points["learned"]
    assert learned["mean"][2] == pytest.approx(0.13) and learned["std"][2] == pytest.approx(0.0070711, abs=1e-7)
    assert learned["seeds"] == [2, 2, 2, 2]
    ax = plots.request_curve_plot(payloads, "ndcg@10", "test", str(tmp_path / "curve.png"))
    lines = {line.get_label(): line for line in ax.get_lines()}
    x, y = lines["oracle (ceiling)"].get_data()
    assert list(x) == pytest.approx([0.0, 0.1, 0.3, 1.0]) and y[2] == pytest.approx(0.15)
    assert list(lines["learned"].get_data()[0]) == pytest.approx([0.0, 0.1, 0.5, 1.0])
    assert "realised request ratio" in ax.get_xlabel() and "sample std over 2 seeds" in ax.get_ylabel()


def test_curve_points_without_realized_fall_back_to_rho():
    payloads = [run["results"] for run in runs_for("SASRec", {1: 0.0})]
    for point in payloads[0]["request_curve"]:
        del point["realized"]  # a results.json from before the realised ratio was stored
    points = plots.curve_points(payloads, "ndcg@10")
    assert points["oracle"]["realized"] == [0.0, 0.1, 0.5, 1.0] and points["oracle"]["std"] == [0.0] * 4


def test_markdown_headers_name_the_sample_std():
    rows = aggregate(runs_for("SASRec", {1: 0.0, 2: 0.02}), "ndcg@10")
    text = markdown(rows, ["ndcg@10"], {})
    assert "| ndcg@10 (mean ± sample std over 2 seeds) |" in text
    assert "0.1400 ± 0.0141" in text and "sample standard deviation (ddof = 1)" in text


def test_every_row_shows_the_validation_mean_its_choices_are_made_on():
    runs = runs_for("SASRec", {1: 0.0, 2: 0.02})
    for run, valid in zip(runs, (0.30, 0.40)):
        for row in run["results"]["results"]:
            row["valid"] = {"ndcg@10": valid + 0.1 * (row["role"] == "lsc4rec")}
    rows = aggregate(runs, "ndcg@10")
    lsc = next(row for row in rows if row["method"] == "LSC4Rec")
    assert lsc["valid"]["ndcg@10"] == pytest.approx(0.45) and lsc["test"]["ndcg@10"] == pytest.approx(0.14)
    text = markdown(rows, ["ndcg@10"], {}, valid_metric="ndcg@10")
    assert "| valid ndcg@10 (mean) |" in text
    assert "| 0.1400 ± 0.0141 | 0.4500 |" in next(line for line in text.splitlines() if "| LSC4Rec | SASRec |" in line)
    assert "valid ndcg@10" not in markdown(rows, ["ndcg@10"], {})
    flat = {row["method"]: row for row in csv_rows(rows, ["ndcg@10"], "ndcg@10")}
    assert flat["LSC4Rec"]["valid_ndcg@10"] == pytest.approx(0.45)
    runs[1]["results"]["results"][-1]["valid"] = {}  # one seed without validation figures
    lsc = next(row for row in aggregate(runs, "ndcg@10") if row["method"] == "LSC4Rec")
    assert lsc["valid"] == {} and "| 0.1400 ± 0.0141 | - |" in markdown([lsc], ["ndcg@10"], {}, valid_metric="ndcg@10")


def test_one_seed_rows_show_the_mean_without_a_spread():
    text = markdown(aggregate(runs_for("SASRec", {1: 0.0}), "ndcg@10"), ["ndcg@10"], {})
    srm_row = next(line for line in text.splitlines() if "| SRM (full catalogue) | SASRec |" in line)
    assert "| 0.1000 |" in srm_row and "±" not in srm_row


TINY = ["--llm_hidden_size=16", "--llm_layers=1", "--llm_heads=2", "--llm_max_len=8", "--llm_epochs=1",
        "--llm_batch_size=64", "--candidate_num=20", "--coop_epochs=1", "--retrain_epochs=1", "--epochs=1",
        "--request_curve_ratios=[0.0,0.1,1.0]", "--state=ERROR", "--show_progress=False", "--use_gpu=False",
        "--train_batch_size=256", "--eval_batch_size=256", "--hidden_size=8", "--inner_size=16",
        "--embedding_size=8"]


def test_sweep_writes_the_leaderboard_trains_the_cloud_once_and_resumes(tmp_path, monkeypatch):
    write_tiny_ml100k(str(tmp_path / "data"), n_users=30)
    argv = ["benchmark", "--srm", "SASRec", "GRU4Rec", "--dataset", "mltiny", "--seeds", "1",
            "--out", str(tmp_path / "lb"), f"--data_path={tmp_path / 'data'}", *TINY]
    import recbole_lsc.cloud.trainer as llm_trainer_module
    fits = []
    original_fit = llm_trainer_module.LLMRecTrainer.fit
    monkeypatch.setattr(llm_trainer_module.LLMRecTrainer, "fit", lambda self, **k: fits.append(1) or original_fit(self, **k))
    assert main(argv) == 0
    assert len(fits) == 1  # the GRU4Rec job loaded the cloud the SASRec job trained
    out = tmp_path / "lb"
    names = set(os.listdir(out))
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard.json", "bars_mltiny.png",
            *(f"curve_mltiny_{srm}_{mode}.png" for srm in ("SASRec", "GRU4Rec") for mode in ("candidates", "full"))} <= names
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["complete"] is True
    backbones = {(row["role"], row["backbone"]) for row in board["rows"]}
    assert {("lsc4rec", "SASRec"), ("lsc4rec", "GRU4Rec"), ("llm_fresh", "-")} <= backbones
    for row in board["rows"]:
        assert row["config_id"] and set(row["config_id"]) <= set(board["configs"])
    with open(out / "leaderboard.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(board["rows"])

    finished = sorted(str(p) for p in out.glob("runs/**/results.json"))
    stamps = [os.stat(p).st_mtime_ns for p in finished]
    calls = []
    monkeypatch.setattr(sweep, "run_job", lambda job: calls.append(job))
    assert main(argv) == 0  # resume: everything finished, nothing re-run or rewritten
    assert calls == [] and [os.stat(p).st_mtime_ns for p in finished] == stamps

    os.remove(finished[0])  # as if that job had been interrupted
    assert main(argv) == 1  # only that job is run again (here a stub that writes nothing: still missing)
    assert len(calls) == 1 and calls[0].results_path == finished[0]


def test_a_changed_config_gets_new_run_folders(tmp_path):
    write_tiny_ml100k(str(tmp_path / "data"), n_users=30)
    base = [f"--data_path={tmp_path / 'data'}", *TINY]
    jobs_a, _ = sweep.plan(["mltiny"], ["SASRec"], 2, None, base, str(tmp_path / "lb"))
    jobs_b, _ = sweep.plan(["mltiny"], ["SASRec"], 2, None, [*base, "--fusion_alpha=0.5"], str(tmp_path / "lb"))
    assert [job.seed for job in jobs_a] == [2020, 2021]
    assert {job.results_path for job in jobs_a}.isdisjoint(job.results_path for job in jobs_b)


def test_bad_benchmark_input_is_one_line(tmp_path, capsys):
    assert main(["benchmark", "--srm", "NoSuchModel", "--dataset", "ml-100k", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: srm 'NoSuchModel'") and "\n" not in err


def test_a_failing_job_does_not_lose_the_others_and_marks_the_board_incomplete(tmp_path, monkeypatch, capsys):
    write_tiny_ml100k(str(tmp_path / "data"), n_users=30)
    argv = ["benchmark", "--srm", "SASRec", "GRU4Rec", "--dataset", "mltiny", "--seeds", "1",
            "--out", str(tmp_path / "lb"), f"--data_path={tmp_path / 'data'}", *TINY]
    original = sweep.run_job

    def flaky(job):
        if job.srm == "SASRec":
            raise RuntimeError("out of memory")
        return original(job)

    monkeypatch.setattr(sweep, "run_job", flaky)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "SASRec" in err and "out of memory" in err and "incomplete" in err
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert board["complete"] is False
    assert {row["backbone"] for row in board["rows"]} == {"GRU4Rec", "-"}


def test_variants_are_swept_labelled_and_compared_in_one_board(tmp_path):
    runs = runs_for("SASRec", {1: 0.0, 2: 0.0})
    other = runs_for("SASRec", {1: 0.05, 2: 0.05})
    for run in other:
        run["variant"] = "big"
        run["results"]["results"][3]["test"]["ndcg@10"] = 0.2  # a stronger cloud: LLM fresh 0.2
        run["results"]["runs"] = [{"stages": {"llm": {"seconds": 30.0, "epochs_trained": 3, "best_epoch": 1},
                                              "srm": {"epochs_trained": 9, "best_epoch": 4}}}]
        run["results"]["cost"] = {"llm_parameters": 1000, "cloud_seconds_per_user": 0.5}
    rows = aggregate(runs + other, "ndcg@10")
    by = {(row["variant"], row["method"], row["backbone"]): row for row in rows}
    # the cloud rows of each variant are kept apart; ranks run across variants
    assert by[("", "LLMRec (fresh)", "-")]["test"]["ndcg@10"] == pytest.approx(0.07)
    assert by[("big", "LLMRec (fresh)", "-")]["rank"] == 1
    assert by[("big", "LSC4Rec", "SASRec")]["test"]["ndcg@10"] == pytest.approx(0.18)
    costs = {row["variant"]: row for row in cost_rows(runs + other)}
    assert costs["big"]["llm_seconds_per_epoch"] == pytest.approx(10.0) and costs["big"]["llm_parameters"] == 1000
    assert costs["-"]["llm_epochs"] is None  # no stage logs: unknown, not zero
    assert costs["big"]["llm_epochs_per_seed"] == "3 (best 1), 3 (best 1)"  # every seed's, not a mean
    assert costs["big"]["srm_epochs_per_seed"] == "9 (best 4), 9 (best 4)" and costs["-"]["srm_epochs_per_seed"] is None
    text = markdown(rows, ["ndcg@10"], {}, cost_rows(runs + other))
    assert "| rank | variant | method |" in text and "## costs" in text and "| d | big | SASRec | 2 | 1000 | - | 3 (best 1), 3 (best 1) |" in text


def test_variant_files_name_the_run_folders_and_bad_ones_are_one_line(tmp_path, capsys):
    write_tiny_ml100k(str(tmp_path / "data"), n_users=30)
    (tmp_path / "a").mkdir()
    small, large = tmp_path / "small.yaml", tmp_path / "a" / "large.yaml"
    small.write_text("fusion_alpha: 0.3\n")
    large.write_text("fusion_alpha: 0.6\n")
    base = [f"--data_path={tmp_path / 'data'}", *TINY]
    jobs, configs = sweep.plan(["mltiny"], ["SASRec"], 1, None, base, str(tmp_path / "lb"), [str(small), str(large)])
    assert [job.variant for job in jobs] == ["small", "large"]
    assert [configs[job.config_id]["config"]["fusion_alpha"] for job in jobs] == [0.3, 0.6]
    assert jobs[0].run_name.split(os.sep)[:2] == ["mltiny", "small"] and jobs[0].config_id != jobs[1].config_id
    twin = tmp_path / "a" / "small.yaml"
    twin.write_text("fusion_alpha: 0.9\n")
    for variants, message in (([str(small), str(twin)], "two variant files are named 'small'"),
                              ([str(tmp_path / "nope.yaml")], "variant file")):
        assert main(["benchmark", "--dataset", "mltiny", "--out", str(tmp_path / "lb"), "--variants", *variants,
                     *base]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "lb").exists()


def test_duplicate_names_and_yaml_paths_are_respected(tmp_path):
    write_tiny_ml100k(str(tmp_path / "data"), n_users=30)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("trained_llm_cache: ~\ncheckpoint_dir: /tmp/ckpts\n")
    jobs, configs = sweep.plan(["mltiny", "mltiny"], ["SASRec", "SASRec"], 1, [str(yaml_file)],
                               [f"--data_path={tmp_path / 'data'}", *TINY], str(tmp_path / "lb"))
    assert len(jobs) == 1
    assert not any(arg.startswith(("--trained_llm_cache", "--checkpoint_dir")) for arg in jobs[0].overrides)
    config = next(iter(configs.values()))["config"]
    assert config["trained_llm_cache"] is None and config["checkpoint_dir"] == "/tmp/ckpts"


def test_job_id_ignores_deployment_keys_but_not_experiment_keys():
    """A resumed sweep finds its finished seeds after a serving key is added or changed; a key that
    changes what the simulation measures gives a new job."""
    snapshot = {"fusion_alpha": 0.5, "llm_epochs": 3, "seed": 2020, "serve_max_queue": 64, "request_timeout": 2.0}
    same = sweep.snapshot_id(snapshot)
    assert sweep.snapshot_id({**snapshot, "serve_max_latency_ms": 40, "replay_clients": 8}) == same
    assert sweep.snapshot_id({**snapshot, "serve_max_queue": 8, "request_timeout": 0.5, "seed": 2021}) == same
    assert sweep.snapshot_id({**snapshot, "fusion_alpha": 0.6}) != same
    assert sweep.snapshot_id({**snapshot, "retrain_epochs": 2}) != same
