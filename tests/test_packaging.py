"""The built wheel: every module and the top-level properties/ yaml install, and a run from
the installed copy (not this checkout) finds them."""

import configparser
import glob
import json
import os
import subprocess
import sys
import zipfile

import pytest

import recbole_lsc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(recbole_lsc.__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    REPO], check=True, capture_output=True)
    (path,) = glob.glob(str(out / "recbole_lsc-*.whl"))
    return path


def test_setup_cfg_lists_every_package_of_the_tree():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    listed = set(parser["options"]["packages"].split())
    found = {os.path.relpath(root, REPO).replace(os.sep, ".") for root, _, names in os.walk(os.path.join(REPO, "recbole_lsc"))
             if "__init__.py" in names}
    assert found | {"recbole_lsc.properties"} == listed


def test_the_wheel_holds_every_module_and_the_yaml(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {os.path.relpath(path, REPO).replace(os.sep, "/")
               for path in glob.glob(os.path.join(REPO, "recbole_lsc", "**", "*.py"), recursive=True)}
    assert sources <= names
    yaml = {"recbole_lsc/properties/" + os.path.relpath(path, os.path.join(REPO, "properties")).replace(os.sep, "/")
            for path in glob.glob(os.path.join(REPO, "properties", "**", "*.yaml"), recursive=True)}
    assert {"recbole_lsc/properties/overall.yaml", "recbole_lsc/properties/model/LSC4Rec.yaml"} <= yaml <= names


def test_a_run_from_the_installed_wheel_reads_its_own_yaml(wheel, tmp_path, tiny_data):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel],
                   check=True, capture_output=True)
    tiny = {"llm_hidden_size": 8, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 6, "llm_epochs": 1, "epochs": 1,
            "coop_epochs": 1, "retrain_epochs": 1, "candidate_num": 20, "request_curve_ratios": [0.0, 1.0],
            "trained_llm_cache": None, "state": "ERROR", "show_progress": False, "use_gpu": False,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
    (tmp_path / "tiny.yaml").write_text(json.dumps(tiny), encoding="utf-8")
    script = ("import json, sys, recbole_lsc, recbole_lsc.config as c; from recbole_lsc.cli import main; "
              "code = main(sys.argv[1:]); print(json.dumps([recbole_lsc.__file__, c.PROPERTIES_DIR, code]))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", script, "--model=LSC4Rec", "--dataset=mltiny",
                           f"--data_path={tiny_data}", "--config_files=tiny.yaml", "--results_dir=R", "--run_name=w"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    module, properties, code = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0, done.stderr[-2000:]
    assert module.startswith(str(target)) and properties == os.path.join(str(target), "recbole_lsc", "properties")
    with open(tmp_path / "R" / "w" / "results.json", encoding="utf-8") as handle:
        config = json.load(handle)["config"]
    assert config["srm_train_window"] == "cloud" and config["topk"] == [5, 10, 20]  # the plugin yaml was read
