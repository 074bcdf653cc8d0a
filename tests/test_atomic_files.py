"""Atomic files as users bring them: each problem (and combinations) either loads with the
right counts or stops with one ``error:`` line, no traceback, nothing in results_dir."""

import glob
import json
import os

import pytest

from recbole_lsc.cli import main
from recbole_lsc.config import LSCConfig
from recbole_lsc.data.item_text import item_titles
from recbole_lsc.data.loading import create_dataset

USERS, PER_USER, ITEMS = 12, 8, 15
TITLE_OF = {item: f"Movie {item} (1990)" for item in range(1, ITEMS + 1)}


def inter_rows(extra_columns=False):
    rows = []
    for user in range(1, USERS + 1):
        for step in range(PER_USER):
            item = (user * 3 + step * 5) % ITEMS + 1
            row = [str(user), str(item), str(1000 * user + step)]
            rows.append(row + ["4", f"s{user}"] if extra_columns else row)
    return rows


def write(folder, name, header, rows, newline="\n", bom=False, encoding="utf-8"):
    text = newline.join(["\t".join(header), *("\t".join(row) for row in rows)]) + newline
    with open(os.path.join(folder, name), "wb") as handle:
        handle.write((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))


def dataset_files(root, inter_header=("user_id:token", "item_id:token", "timestamp:float"), inter=None,
                  titles=None, item_header=("item_id:token", "movie_title:token_seq"), **style):
    """``root/syn/syn.inter`` and ``syn.item`` (``titles``: item -> title; None: no .item file)."""
    folder = os.path.join(root, "syn")
    os.makedirs(folder, exist_ok=True)
    write(folder, "syn.inter", inter_header, inter if inter is not None else inter_rows(), **style)
    if titles is not None:
        write(folder, "syn.item", item_header, [[str(item), title] for item, title in titles.items()], **style)
    return root


def load(root, **config):
    values = {"data_path": root, "load_col": {"inter": ["user_id", "item_id", "timestamp"],
                                              "item": ["item_id", "movie_title"]},
              "state": "ERROR", "use_gpu": False, **config}
    return create_dataset(LSCConfig("SASRec", "syn", config_dict=values))


def counts(dataset):
    return dataset.inter_num, dataset.user_num - 1, dataset.item_num - 1


CLEAN = (USERS * PER_USER, USERS, ITEMS)


def error_of_run(root, capsys, *args):
    """Run the main job's command line; return its only stderr line (it must fail with exit 2)."""
    code = main(["--model=SASRec", "--dataset=syn", f"--data_path={root}", "--results_dir=R", "--epochs=1",
                 "--state=ERROR", "--use_gpu=False", "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
                 *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not glob.glob("R/**/*", recursive=True)
    return err[0]


@pytest.mark.parametrize("style", [{}, {"newline": "\r\n"}, {"bom": True}, {"newline": "\r"},
                                   {"newline": "\r\n", "bom": True}], ids=["clean", "crlf", "bom", "cr", "crlf+bom"])
def test_line_ends_and_byte_order_marks_load_like_a_clean_file(tmp_path, style):
    dataset = load(dataset_files(str(tmp_path), titles=TITLE_OF, **style))
    assert counts(dataset) == CLEAN
    titles = item_titles(dataset, "movie_title")
    assert titles[dataset.token2id("item_id", "3")] == "Movie 3 (1990)"  # no stray \r in the last column


def test_quotes_are_ordinary_characters(tmp_path):
    titles = {**TITLE_OF, 2: '"Quoted" start', 5: 'a "half', 7: 'He said "hi"'}
    dataset = load(dataset_files(str(tmp_path), titles=titles, newline="\r\n", bom=True))
    assert counts(dataset) == CLEAN
    read = item_titles(dataset, "movie_title")
    assert [read[dataset.token2id("item_id", str(item))] for item in (2, 5, 7)] == ['"Quoted" start', 'a "half',
                                                                                    'He said "hi"']


def test_extra_columns_are_ignored_unless_load_col_asks(tmp_path):
    header = ("user_id:token", "item_id:token", "timestamp:float", "rating:float", "session:token")
    root = dataset_files(str(tmp_path), inter_header=header, inter=inter_rows(extra_columns=True))
    dataset = load(root)
    assert counts(dataset) == CLEAN and "rating" not in dataset.inter_feat
    assert "rating" in load(root, load_col={"inter": ["user_id", "item_id", "timestamp", "rating"]}).inter_feat


def test_empty_titles_count_as_untitled_and_ids_on_one_side_follow_recboles_rule(tmp_path):
    titles = {**{item: TITLE_OF[item] for item in range(1, 13)}, 4: "", 6: "   ", 99: "Only in the item file"}
    root = dataset_files(str(tmp_path), titles=titles)  # items 13..15 have no .item row
    without_row = sum(int(row[1]) > 12 for row in inter_rows())
    # RecBole's default (filter_inter_by_user_or_item: True) drops interactions of items the .item file lacks
    dataset = load(root)
    assert dataset.inter_num == USERS * PER_USER - without_row > 0
    kept = load(root, filter_inter_by_user_or_item=False)
    assert kept.inter_num == USERS * PER_USER and kept.user_num - 1 == USERS
    assert kept.item_num - 1 == ITEMS + 1  # the .item-only id gets an id of its own
    read = item_titles(kept, "movie_title")
    untitled = [item for item in range(1, ITEMS + 1) if not read[kept.token2id("item_id", str(item))]]
    assert untitled == [4, 6, 13, 14, 15]


def test_undecodable_bytes_name_the_file_the_line_and_the_encoding_key(tmp_path, capsys):
    titles = {**TITLE_OF, 9: "Amélie"}
    root = dataset_files(str(tmp_path), titles=titles, encoding="latin-1")
    message = error_of_run(root, capsys, "--load_col={'inter': ['user_id', 'item_id', 'timestamp'], "
                                         "'item': ['item_id', 'movie_title']}")
    assert "syn.item' line 10" in message and "'encoding'" in message and "latin-1" in message
    dataset = load(root, encoding="latin-1")  # the fix the message names
    assert item_titles(dataset, "movie_title")[dataset.token2id("item_id", "9")] == "Amélie"


@pytest.mark.parametrize("header, missing", [
    (("user_id:token", "item_id:token", "rating:float"), "timestamp"),
    (("user_id:token", "movie:token", "timestamp:float"), "item_id"),
])
def test_a_missing_required_column_is_named_with_the_columns_found(tmp_path, capsys, header, missing):
    root = dataset_files(str(tmp_path), inter_header=header)
    message = error_of_run(root, capsys)
    assert f"no column '{missing}'" in message and f"columns found: {', '.join(header)}" in message


def test_a_load_col_without_the_interactions_names_their_missing_columns(tmp_path, capsys):
    root = dataset_files(str(tmp_path), titles=TITLE_OF)  # load_col below names the .item file only
    message = error_of_run(root, capsys, "--load_col={'item': ['item_id', 'movie_title']}")
    assert "syn.inter' has no column 'user_id' loaded" in message and "load_col" in message


@pytest.mark.parametrize("header, rows, expected", [
    (("user_id", "item_id:token", "timestamp:float"), None, "header field 'user_id' is not name:type"),
    (("user_id:token", "item_id:tokens", "timestamp:float"), None, "header field 'item_id:tokens'"),
    (("user_id:token", "item_id:token", "timestamp:float"), inter_rows()[:5] + [["1", "2", "3", "4"]] + inter_rows(),
     "line 7: 4 fields, the header has 3"),
    (("user_id:token", "item_id:token", "timestamp:float"), inter_rows()[:2] + [["1", "2"]] + inter_rows(),
     "line 4: 2 fields, the header has 3"),
    (("user_id:token", "item_id:token", "timestamp:float"), [["1", "2", "yesterday"]] + inter_rows(),
     "is not a valid RecBole atomic file"),
], ids=["no-type", "unknown-type", "extra-field-in-a-row", "missing-field-in-a-row", "text-in-a-float-column"])
def test_malformed_files_stop_with_one_line(tmp_path, capsys, header, rows, expected):
    root = dataset_files(str(tmp_path), inter_header=header, inter=rows, newline="\r\n", bom=True)
    assert expected in error_of_run(root, capsys)


def test_the_main_job_runs_on_a_file_with_every_fixable_problem(tmp_path, capsys):
    header = ("user_id:token", "item_id:token", "timestamp:float", "rating:float", "session:token")
    titles = {**TITLE_OF, 2: '"Quoted" start', 4: " ", 99: "Only in the item file"}
    root = dataset_files(str(tmp_path), inter_header=header, inter=inter_rows(extra_columns=True), titles=titles,
                         newline="\r\n", bom=True)
    tiny = {"llm_hidden_size": 8, "llm_layers": 1, "llm_heads": 2, "llm_max_len": 6, "llm_epochs": 1,
            "candidate_num": 10, "topk": [5, 10], "coop_epochs": 1, "retrain_epochs": 1, "epochs": 1,
            "request_curve_ratios": [0.0, 0.5, 1.0], "trained_llm_cache": None, "device_catalogue": ["candidates"],
            "state": "ERROR", "show_progress": False, "use_gpu": False}
    with open("tiny.yaml", "w", encoding="utf-8") as handle:
        json.dump(tiny, handle)
    assert main(["--model=LSC4Rec", "--dataset=syn", f"--data_path={root}", "--config_files=tiny.yaml",
                 "--results_dir=R", "--run_name=messy"]) == 0
    with open(os.path.join("R", "messy", "results.json"), encoding="utf-8") as handle:
        payload = json.load(handle)
    assert len(payload["per_user_test"]["srm"]) == USERS
