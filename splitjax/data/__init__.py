"""Data: official files and TFDS builders, synthetic and CSV tables, encoding.

`load(config.data)` is the one entry point: it returns a `Dataset` whose
`train` and `test` splits are `Arrays` (host NumPy), ready to be put on the
accelerator as one pytree.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from splitjax.data import official, synthetic, user_csv
from splitjax.data.schema import (LABEL, Arrays, Schema, check_features, encode,
                                  make_schema, medians_of)
from splitjax.errors import ConfigError, DataError

DATASETS = ("adult", "bank_marketing", "movielens_100k", "synthetic", "csv")


@dataclasses.dataclass(frozen=True)
class Dataset:
  schema: Schema
  train: Arrays
  test: Arrays


def check(cfg) -> None:
  """Checks `config.data` without reading a file or starting a backend: the
  name, the split sizes and the feature names against the columns (fixed in
  code for the official and synthetic tables, declared in `data.csv` for a
  CSV, whose header is checked against them when it is read).

  Raises:
    ConfigError: naming the first bad field.
  """
  if cfg.name not in DATASETS:
    raise ConfigError(f"data.name: unknown data set {cfg.name!r}; known: "
                      f"{list(DATASETS)}")
  for field in ("max_train_examples", "max_test_examples"):
    if getattr(cfg, field) < 0:
      raise ConfigError(f"data.{field}: must be >= 0 (0 keeps all)")
  if cfg.name in official.SOURCES:
    names = official.SOURCES[cfg.name].spec.names
  elif cfg.name == "synthetic":
    names = synthetic.spec_of(cfg.synthetic).names
  else:
    names = user_csv.declared_features(cfg.csv)
  check_features(cfg.name, names, cfg.private_features, cfg.server_features)


def _balanced(name: str, split: str, table: dict, label_vocab) -> dict:
  """Keeps the first n records of each class, n the rarest class's count."""
  labels = table[LABEL]
  counts = np.bincount(labels, minlength=len(label_vocab))
  if counts.min() == 0:
    missing = label_vocab[int(np.argmin(counts))]
    raise DataError(f"data set {name!r}: data.balance_classes: class "
                    f"{missing!r} has no records in the {split} split")
  rank = np.empty_like(labels)  # each record's place among its class's
  for c in range(len(label_vocab)):
    rank[labels == c] = np.arange(counts[c])
  keep = rank < counts.min()
  return {k: v[keep] for k, v in table.items()}


def load(cfg) -> Dataset:
  """Loads, validates and encodes the data set that `config.data` names.

  Raises:
    ConfigError: unknown data set or feature name, bad split sizes.
    DataError: missing, corrupt or malformed files (naming file and line).
  """
  check(cfg)
  if cfg.name in official.SOURCES:
    from splitjax.data import builders  # TFDS is imported only when needed.
    tables = builders.load(cfg.name, tfds_dir=cfg.tfds_dir,
                           manual_dir=cfg.manual_dir,
                           verify_checksums=cfg.verify_checksums)
    spec = official.SOURCES[cfg.name].spec
  elif cfg.name == "synthetic":
    spec, tables = synthetic.spec_of(cfg.synthetic), synthetic.generate(cfg.synthetic)
  else:
    spec, tables = user_csv.load(cfg.csv, cfg.private_features)
  train, test = tables["train"], tables["test"]
  if cfg.max_train_examples:
    train = {k: v[:cfg.max_train_examples] for k, v in train.items()}
  if cfg.max_test_examples:
    test = {k: v[:cfg.max_test_examples] for k, v in test.items()}
  if cfg.balance_classes:
    train, test = (_balanced(cfg.name, split, table, spec.label_vocab)
                   for split, table in (("train", train), ("test", test)))
  schema = make_schema(spec, train, cfg.private_features, cfg.server_features)
  medians = medians_of(train, spec)
  train_arrays, test_arrays = encode(train, schema, medians), encode(test, schema, medians)
  for split, arrays in (("train", train_arrays), ("test", test_arrays)):
    if arrays.num_examples == 0:
      raise DataError(f"data set {cfg.name!r}: the {split} split is empty")
    for name, x in arrays._asdict().items():
      if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DataError(f"data set {cfg.name!r}: non-finite values in "
                        f"{split} {name} after encoding")
  return Dataset(schema, train_arrays, test_arrays)
