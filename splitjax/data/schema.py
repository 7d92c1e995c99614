"""Schemas: what each column is, which side of the cut it lives on, and its encoding.

A data set is described twice:
- `TableSpec` is the raw table as its files define it: each column's type (a
  categorical with its vocabulary, or a numeric) and the label. It is fixed per
  data set and never mentions server or private.
- `Schema` is the table as one experiment uses it: which features are private
  (config, not code), which are on the server, and the numeric normalisation,
  computed on the training split only.

`RawTable` holds integer codes for categoricals and float32 for numerics, one
array per column; `encode` turns it into the model's `Arrays`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from splitjax.errors import ConfigError, DataError

RawTable = dict[str, np.ndarray]
LABEL = "label"


@dataclasses.dataclass(frozen=True)
class Column:
  """One raw column.

  Attributes:
    name: the column's name, as features are named in configs.
    vocab: the allowed values of a categorical, in code order; None for a
      numeric column.
    fill_missing: numeric only. When True an empty cell is allowed and takes
      the training split's median; when False (the default) it is an error.
  """
  name: str
  vocab: tuple[str, ...] | None = None
  fill_missing: bool = False

  @property
  def is_categorical(self) -> bool:
    return self.vocab is not None


@dataclasses.dataclass(frozen=True)
class TableSpec:
  """A raw table: its feature columns and its label's vocabulary."""
  name: str
  columns: tuple[Column, ...]
  label_vocab: tuple[str, ...]
  default_private: tuple[str, ...]

  def column(self, name: str) -> Column:
    for c in self.columns:
      if c.name == name:
        return c
    raise KeyError(name)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(c.name for c in self.columns)


@dataclasses.dataclass(frozen=True)
class Feature:
  """One feature as the model sees it (numerics are standardised)."""
  name: str
  vocab: tuple[str, ...] | None = None
  mean: float = 0.0
  std: float = 1.0

  @property
  def is_categorical(self) -> bool:
    return self.vocab is not None

  @property
  def vocab_size(self) -> int:
    return len(self.vocab) if self.vocab is not None else 0


@dataclasses.dataclass(frozen=True)
class Schema:
  """Which features are on each side of the cut, and the label's classes."""
  dataset: str
  server: tuple[Feature, ...]
  private: tuple[Feature, ...]
  label_vocab: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.label_vocab)

  def _split(self, feats, categorical):
    return tuple(f for f in feats if f.is_categorical == categorical)

  @property
  def server_categorical(self) -> tuple[Feature, ...]:
    return self._split(self.server, True)

  @property
  def server_numeric(self) -> tuple[Feature, ...]:
    return self._split(self.server, False)

  @property
  def private_categorical(self) -> tuple[Feature, ...]:
    return self._split(self.private, True)

  @property
  def private_numeric(self) -> tuple[Feature, ...]:
    return self._split(self.private, False)

  def to_json(self) -> dict:
    def feats(fs):
      return [dataclasses.asdict(f) for f in fs]
    return {"dataset": self.dataset, "server": feats(self.server),
            "private": feats(self.private),
            "label_vocab": list(self.label_vocab)}

  @classmethod
  def from_json(cls, obj: dict) -> Schema:
    """The schema `to_json` wrote (a result folder's config.json)."""
    def feats(fs):
      return tuple(Feature(**dict(f, vocab=None if f["vocab"] is None else tuple(f["vocab"])))
                   for f in fs)
    return cls(dataset=obj["dataset"], server=feats(obj["server"]),
               private=feats(obj["private"]), label_vocab=tuple(obj["label_vocab"]))


class Arrays(NamedTuple):
  """One split, encoded: the pytree that lives on the accelerator.

  The record id of row i is i (its position in the split).
  """
  x_s_cat: np.ndarray  # int32 [N, server categoricals]
  x_s_num: np.ndarray  # float32 [N, server numerics]
  x_p_cat: np.ndarray  # int32 [N, private categoricals]
  x_p_num: np.ndarray  # float32 [N, private numerics]
  y: np.ndarray        # int32 [N]

  @property
  def num_examples(self) -> int:
    return self.y.shape[0]


def parse_rows(rows: Iterable[tuple[int, Sequence[str]]],
               columns: Sequence[Column], label_vocab: Sequence[str],
               path: str) -> RawTable:
  """Validates raw text cells and turns them into a RawTable.

  Args:
    rows: (line number, cells) pairs; the last cell of each row is the label.
    columns: the feature columns, in file order.
    label_vocab: the label's allowed values, in class order.
    path: the file's name, for error messages.

  Returns:
    A RawTable with one array per column, and the label under `LABEL`.

  Raises:
    DataError: naming the file, line and column of the first bad cell: a wrong
      number of cells, an empty cell, a value outside a vocabulary, or a
      numeric that does not parse or is not finite.
  """
  index = [{v: i for i, v in enumerate(c.vocab)} if c.is_categorical else None
           for c in columns]
  label_index = {v: i for i, v in enumerate(label_vocab)}
  values = [[] for _ in columns]
  labels = []
  num_cells = len(columns) + 1
  for line, cells in rows:
    if len(cells) != num_cells:
      raise DataError(f"{path}, line {line}: expected {num_cells} columns, "
                      f"found {len(cells)}")
    for j, (col, cell) in enumerate(zip(columns, cells)):
      values[j].append(_parse_cell(cell, col, index[j], path, line))
    label = cells[-1]
    if label not in label_index:
      raise DataError(f"{path}, line {line}, column 'label': {label!r} is not "
                      f"in the vocabulary {list(label_vocab)}")
    labels.append(label_index[label])
  if not labels:
    raise DataError(f"{path}: no data rows")
  table = {}
  for col, vals in zip(columns, values):
    dtype = np.int32 if col.is_categorical else np.float32
    table[col.name] = np.asarray(vals, dtype=dtype)
  table[LABEL] = np.asarray(labels, dtype=np.int32)
  return table


def _parse_cell(cell, col, index, path, line):
  where = f"{path}, line {line}, column {col.name!r}"
  if cell == "" or cell.lower() == "nan":
    if not col.is_categorical and col.fill_missing:
      return math.nan
    raise DataError(f"{where}: empty or NaN cell")
  if index is not None:
    try:
      return index[cell]
    except KeyError:
      raise DataError(f"{where}: {cell!r} is not in the vocabulary "
                      f"{list(col.vocab)}") from None
  try:
    x = float(cell)
  except ValueError:
    raise DataError(f"{where}: {cell!r} is not a number") from None
  if not math.isfinite(x):
    raise DataError(f"{where}: {cell!r} is not finite")
  return x


def check_features(table: str, names: Sequence[str], private_features: Sequence[str],
                   server_features: Sequence[str]) -> None:
  """Checks the config's feature names against the columns `names` of the
  data set `table`.

  Raises:
    ConfigError: an unknown feature name, a feature named twice or on both
      sides, or no feature at all on the server.
  """
  for field, chosen in (("data.private_features", private_features),
                        ("data.server_features", server_features)):
    for name in chosen:
      if name not in names:
        raise ConfigError(f"{field}: unknown feature {name!r} for data set "
                          f"{table!r}; known: {list(names)}")
    if len(set(chosen)) != len(chosen):
      raise ConfigError(f"{field}: a feature is named twice: {list(chosen)}")
  both = set(private_features) & set(server_features)
  if both:
    raise ConfigError(f"data.server_features: {sorted(both)} also in "
                      "data.private_features")
  if not server_features and set(names) <= set(private_features):
    raise ConfigError("data.private_features: leaves no server feature")


def make_schema(spec: TableSpec, train: RawTable,
                private_features: Sequence[str],
                server_features: Sequence[str]) -> Schema:
  """Assigns features to the two sides and fits normalisation on `train`.

  The names must have passed `check_features` (`data.check` does that
  before any file is read).

  Args:
    spec: the raw table's spec.
    train: the training split (statistics come from it alone).
    private_features: names of the device's private features.
    server_features: names of the server's features; empty means every column
      that is not private.

  Returns:
    The Schema.
  """
  names = spec.names
  if not server_features:
    server_features = [n for n in names if n not in private_features]

  def feature(name):
    col = spec.column(name)
    if col.is_categorical:
      return Feature(name, col.vocab)
    x = train[name].astype(np.float64)
    x = x[np.isfinite(x)]
    std = float(x.std()) if x.size else 1.0
    return Feature(name, None, float(x.mean()) if x.size else 0.0,
                   std if std > 0 else 1.0)

  # Keep file order on each side, so the schema does not depend on how the
  # config lists the names.
  server = tuple(feature(n) for n in names if n in server_features)
  private = tuple(feature(n) for n in names if n in private_features)
  return Schema(spec.name, server, private, spec.label_vocab)


def encode(table: RawTable, schema: Schema, medians: RawTable) -> Arrays:
  """Encodes a RawTable with a Schema.

  Args:
    table: the split to encode.
    schema: from `make_schema` on the training split.
    medians: per numeric column, the training median used for missing cells.

  Returns:
    The split's Arrays.
  """
  n = table[LABEL].shape[0]

  def cats(feats):
    cols = [table[f.name] for f in feats if f.is_categorical]
    return (np.stack(cols, 1) if cols else np.zeros((n, 0))).astype(np.int32)

  def nums(feats):
    cols = []
    for f in feats:
      if f.is_categorical:
        continue
      x = table[f.name].astype(np.float64)
      x = np.where(np.isfinite(x), x, medians[f.name])
      cols.append((x - f.mean) / f.std)
    return (np.stack(cols, 1) if cols else np.zeros((n, 0))).astype(np.float32)

  return Arrays(cats(schema.server), nums(schema.server),
                cats(schema.private), nums(schema.private),
                table[LABEL].astype(np.int32))


def medians_of(train: RawTable, spec: TableSpec) -> RawTable:
  """Training medians of the numeric columns that allow missing cells."""
  out = {}
  for c in spec.columns:
    if not c.is_categorical:
      x = train[c.name]
      x = x[np.isfinite(x)]
      out[c.name] = float(np.median(x)) if x.size else 0.0
  return out
