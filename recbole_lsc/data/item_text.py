"""Item text (titles, and any other fields) from a RecBole dataset's ``.item`` file, as plain
strings indexed by item id: what a pretrained cloud reads about an item."""

import numpy as np
import torch
from recbole.utils import FeatureType

from recbole_lsc.errors import ConfigError


def item_titles(dataset, fields):
    """``texts[item_id]`` for every item id: the item's ``fields`` (one name, or a list such as
    ``[movie_title, release_year, class]``) joined with ", ", skipping empty ones ("" for padding
    and items with no text at all; runs of white space are folded).

    Works for ``token`` fields (one string per item, e.g. ML-1M's titles), ``token_seq`` fields
    (RecBole splits them into word ids, e.g. ml-100k's titles; they are joined back with
    spaces) and ``float`` fields (1995.0 reads "1995", 2.5 reads "2.5"; RecBole fills missing
    floats with the column mean before this sees them, non-finite values are empty).
    """
    names = [fields] if isinstance(fields, str) else list(fields)
    if not names:
        raise ConfigError("llm_item_text_field is an empty list; name at least one .item field, or set it to ~")
    columns = [_field_texts(dataset, name) for name in names]
    texts = [", ".join(part for part in parts if part) for parts in zip(*columns)]
    texts[0] = ""
    return texts


def _field_texts(dataset, field):
    """One field's text per item id (see :func:`item_titles`)."""
    if dataset.item_feat is None or field not in dataset.item_feat:
        raise ConfigError(
            f"item text field '{field}' is not loaded: add it to load_col (item: [item_id, {field}]) "
            f"and make sure {dataset.dataset_name}.item exists, or set llm_item_text_field: ~"
        )
    # Rows follow item ids (RecBole aligns item_feat to arange(item_num)); the feature is a
    # pandas column before dataset.build() and a tensor after it.
    column = dataset.item_feat[field]
    values = column.numpy() if torch.is_tensor(column) else column.values
    kind = dataset.field2type[field]
    if kind == FeatureType.FLOAT:
        return ["" if not np.isfinite(value) else (str(int(value)) if float(value).is_integer() else f"{value:.15g}")
                for value in values]
    vocab = np.asarray(dataset.field2id_token[field], dtype=object)
    if kind == FeatureType.TOKEN_SEQ:
        texts = [" ".join(vocab[np.asarray(row)[np.asarray(row) > 0]]) for row in values]
    elif kind == FeatureType.TOKEN:
        texts = [vocab[int(value)] if value > 0 else "" for value in values]
    else:
        raise ConfigError(f"item text field '{field}' is a {kind.value} field; use token, token_seq or float fields")
    return [" ".join(str(text).split()) for text in texts]  # whitespace-only counts as untitled
