"""A user's own CSV file, every column's role and type declared in the config.

`config.data.csv` names the file, its delimiter, the categorical and numeric
columns, the label column and the columns to ignore; the file's header row
must name every column. Categorical vocabularies are the sorted distinct values
in the file. The test split is a fixed random fraction of the rows. The file
is read as UTF-8 (a byte-order mark dropped), or as Latin-1 where it is not
valid UTF-8, and may be gzipped (`.gz`).
"""

from __future__ import annotations

import csv
import gzip
import io
import os

from splitjax.data import official
from splitjax.data.schema import Column, RawTable, TableSpec, parse_rows
from splitjax.errors import ConfigError, DataError


def _read_text(path: str) -> str:
  """The file's text: UTF-8 with any byte-order mark dropped (what spreadsheet
  programs write), else Latin-1, which decodes any bytes; `.gz` unpacked."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # Unreadable, or a damaged gzip file.
    raise DataError(f"{path}: cannot read it ({e})") from None
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError:
    return raw.decode("latin-1")


def declared_features(cfg) -> tuple[str, ...]:
  """The feature columns `config.data.csv` declares (categorical, then
  numeric), checked without reading the file.

  Raises:
    ConfigError: no file or no label column named.
  """
  if not cfg.path:
    raise ConfigError("data.csv.path: empty; name the CSV file to read")
  if not cfg.label:
    raise ConfigError("data.csv.label: empty; name the label column")
  return (*cfg.categorical, *cfg.numeric)


def load(cfg, private_features) -> tuple[TableSpec, dict[str, RawTable]]:
  """Reads and validates `config.data.csv` (after `declared_features`, which
  `data.check` calls).

  Raises:
    ConfigError: a declared column is not in the header, or a header column
      is not declared.
    DataError: the file is missing, or a cell is bad (file, line, column).
  """
  path = os.path.expanduser(cfg.path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found (data.csv.path)")
  rows = list(csv.reader(io.StringIO(_read_text(path), newline=""),
                         delimiter=cfg.delimiter))
  if not rows:
    raise DataError(f"{path}: empty file")
  header = [h.strip() for h in rows[0]]
  declared = list(cfg.categorical) + list(cfg.numeric) + [cfg.label]
  for field in ("categorical", "numeric", "label", "ignore"):
    names = getattr(cfg, field)
    for name in ([names] if isinstance(names, str) else names):
      if name not in header:
        raise ConfigError(f"data.csv.{field}: column {name!r} is not in the "
                          f"header of {path}: {header}")
  undeclared = [h for h in header if h not in declared and h not in cfg.ignore]
  if undeclared:
    raise ConfigError(f"data.csv: columns {undeclared} of {path} are not "
                      "declared in data.csv.categorical, .numeric or .ignore")
  width = len(header)
  body = []
  for line_no, cells in enumerate(rows[1:], 2):
    if not cells:
      continue
    if len(cells) != width:
      raise DataError(f"{path}, line {line_no}: expected {width} columns, "
                      f"found {len(cells)}")
    body.append((line_no, [cells[header.index(n)].strip() for n in declared]))

  def vocab(j):
    return tuple(sorted({cells[j] for _, cells in body if cells[j] != ""}))

  columns = tuple([Column(n, vocab(j)) for j, n in enumerate(cfg.categorical)]
                  + [Column(n) for n in cfg.numeric])
  label_vocab = vocab(len(declared) - 1)
  if len(label_vocab) < 2:
    raise DataError(f"{path}: label column {cfg.label!r} has fewer than two "
                    "values")
  spec = TableSpec("csv", columns, label_vocab, tuple(private_features))
  table = parse_rows(body, columns, label_vocab, path)
  return spec, official.random_split(table, cfg.split_seed, cfg.test_fraction)
