"""Item titles from a RecBole dataset's ``.item`` file, as plain strings indexed by item id."""

import numpy as np
import torch
from recbole.utils import FeatureType

from recbole_lsc.errors import ConfigError


def item_titles(dataset, field):
    """``titles[item_id]`` for every item id ("" for padding and items without a title, or with
    an empty or whitespace-only one; runs of white space are folded).

    Works for ``token`` fields (one string per item, e.g. ML-1M) and ``token_seq`` fields
    (RecBole splits them into word ids, e.g. ml-100k; they are joined back with spaces).
    """
    if dataset.item_feat is None or field not in dataset.item_feat:
        raise ConfigError(
            f"item text field '{field}' is not loaded: add it to load_col (item: [item_id, {field}]) "
            f"and make sure {dataset.dataset_name}.item exists, or set llm_item_text_field: ~"
        )
    # Rows follow item ids (RecBole aligns item_feat to arange(item_num)); the feature is a
    # pandas column before dataset.build() and a tensor after it.
    column = dataset.item_feat[field]
    values = column.numpy() if torch.is_tensor(column) else column.values
    vocab = np.asarray(dataset.field2id_token[field], dtype=object)
    if dataset.field2type[field] == FeatureType.TOKEN_SEQ:
        titles = [" ".join(vocab[np.asarray(row)[np.asarray(row) > 0]]) for row in values]
    else:
        titles = [vocab[int(value)] if value > 0 else "" for value in values]
    titles = [" ".join(str(title).split()) for title in titles]  # whitespace-only counts as untitled
    titles[0] = ""
    return titles
