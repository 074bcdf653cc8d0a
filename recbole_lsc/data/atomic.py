"""RecBole atomic files as they come from the real world, read by RecBole's own reader.

RecBole's ``Dataset._load_feat`` works on clean files; :class:`AtomicFileMixin` puts one
check and two fixes around it, for every ``.inter``, ``.item`` and ``.user`` file:

* quotes are ordinary characters (the atomic format has no quoting; pandas' reader would
  otherwise join lines at a title that starts with ``"``);
* a byte-order mark and Windows (``\\r\\n``) or old Mac (``\\r``) line ends are accepted: such a
  file is normalised into a temporary copy that RecBole then reads;
* bytes the configured ``encoding`` cannot decode, a header field without ``:type`` or of an
  unknown type, a row with more or fewer fields than the header, a value that does not parse, and a missing user, item or (for sequential models)
  timestamp column stop the run with one :class:`~recbole_lsc.errors.DatasetFormatError` line
  that names the file, the line and what to change.

Extra columns are RecBole's business: ignored unless ``load_col`` asks for them.
"""

import codecs
import csv
import locale
import os
import tempfile

import pandas as pd
import recbole.data.dataset.dataset as recbole_dataset_module
from recbole.utils import FeatureSource, FeatureType, ModelType

from recbole_lsc.errors import DatasetFormatError, first_line

_TYPES = {member.value for member in FeatureType}


def _decoded(path, encoding):
    """The file's text; undecodable bytes raise a one-line error with the line number."""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        return codecs.decode(raw, encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DatasetFormatError(
            f"'{path}' line {line}: bytes that are not {encoding} ({raw[err.start:err.end]!r}); set the config key "
            "'encoding' to the file's encoding (e.g. --encoding=latin-1) or re-save the file as UTF-8"
        ) from None
    except LookupError:
        raise DatasetFormatError(f"config key 'encoding' names no known encoding: {encoding!r}") from None


def _check_header(path, header, separator):
    for field_type in header.split(separator):
        field, colon, ftype = field_type.partition(":")
        if not colon or ftype not in _TYPES:
            raise DatasetFormatError(
                f"'{path}' line 1: header field {field_type!r} is not name:type with type one of "
                f"{', '.join(sorted(_TYPES))} (e.g. user_id:token); fix the header"
            )


def _check_rows(path, lines, separator):
    """Every row holds one value per header field (pandas would shift or pad it silently)."""
    expected = lines[0].count(separator)
    for number, line in enumerate(lines[1:], start=2):
        if line and line.count(separator) != expected:
            raise DatasetFormatError(
                f"'{path}' line {number}: {line.count(separator) + 1} fields, the header has {expected + 1}; "
                "a value holds the field_separator, or a field is missing: fix the row"
            )


def normalised_copy(path, encoding, separator, folder):
    """``path`` itself when it is clean, else a copy without byte-order mark and with ``\\n`` line ends."""
    text = _decoded(path, encoding)
    clean = text.lstrip("\ufeff")
    if "\r" in clean:
        clean = clean.replace("\r\n", "\n").replace("\r", "\n")
    lines = clean.split("\n")
    _check_header(path, lines[0], separator)
    _check_rows(path, lines, separator)
    if clean == text:
        return path
    copy = os.path.join(folder, os.path.basename(path))
    with open(copy, "w", encoding=encoding, newline="") as handle:
        handle.write(clean)
    return copy


class _QuotesAsText:
    """While active, pandas' ``read_csv`` (as RecBole calls it) treats quotes as characters."""

    def __enter__(self):
        self.original = recbole_dataset_module.pd.read_csv
        recbole_dataset_module.pd.read_csv = lambda *args, **kwargs: self.original(
            *args, **{**kwargs, "quoting": csv.QUOTE_NONE})
        return self

    def __exit__(self, *exc):
        recbole_dataset_module.pd.read_csv = self.original
        return False


class AtomicFileMixin:
    """Put before a RecBole Dataset class: its atomic files are checked and normalised first."""

    def _load_feat(self, filepath, source):
        with tempfile.TemporaryDirectory(prefix="lsc-atomic-") as folder:
            encoding = self.config["encoding"] or locale.getpreferredencoding(False)  # as RecBole's open() reads it
            readable = normalised_copy(filepath, encoding, self.config["field_separator"], folder)
            try:
                with _QuotesAsText():
                    frame = super()._load_feat(readable, source)
            except (pd.errors.ParserError, ValueError) as err:
                detail = first_line(err)
                raise DatasetFormatError(
                    f"'{filepath}' is not a valid RecBole atomic file ({detail}); every row needs one value per "
                    "header field, separated by the field_separator, and numbers in float columns"
                ) from None
        if source == FeatureSource.INTERACTION:
            self._check_required_columns(filepath, frame)
        return frame

    def _check_required_columns(self, path, frame):
        required = [self.uid_field, self.iid_field]
        if self.config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
            required.append(self.time_field)  # a sequence needs its order
        with open(path, encoding=self.config["encoding"], errors="replace") as handle:
            header = handle.readline().strip().lstrip("\ufeff").split(self.config["field_separator"])
        loaded = () if frame is None else frame.columns  # None: load_col names no .inter column
        for field in required:
            if field is not None and field not in loaded:
                raise DatasetFormatError(
                    f"'{path}' has no column '{field}' loaded (columns found: {', '.join(header)}); add it "
                    f"to the file, or to load_col, or point USER_ID_FIELD / ITEM_ID_FIELD / TIME_FIELD at the "
                    "file's own column"
                )
