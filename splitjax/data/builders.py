"""TFDS builders for the official data sets, used without TensorFlow.

Each builder writes `array_record` files and is read back through
`as_data_source`, so neither step imports TensorFlow. Rows keep their file
order through a `row` feature (TFDS shuffles records on write).

Sources, in order of preference:
- a manual folder (`config.data.manual_dir`) with the official files as their
  distributions name them (plain, or gzip-compressed with a `.gz` suffix);
- the copies shipped inside the package (Adult and Bank Marketing);
- the official archive, through the TFDS download manager.

Every file's md5 is checked against the official one before anything is
written, unless `verify_checksums` is off, and local files are read (a bad
row named by file and line) before TFDS starts preparing them. The builder
config's name is a hash of the files' md5s, so a modified copy never reuses
the cache of another.
TFDS prepares into an `incomplete.*` folder and renames it only on success, so
a failed build leaves no half-written cache.
"""

from __future__ import annotations

import hashlib
import logging as std_logging
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from splitjax.data import official
from splitjax.data.schema import LABEL, RawTable
from splitjax.errors import DataError

_ROW = "row"


class OfficialBuilder(tfds.core.GeneratorBasedBuilder):
  """Builds one official data set from a folder of files or a download."""

  SOURCE: official.OfficialSource
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  def __init__(self, *, files: dict[str, str] | None, **kwargs):
    """Creates the builder.

    Args:
      files: official file name -> path of verified files, or None to
        download the official archive.
      **kwargs: passed to tfds.core.GeneratorBasedBuilder (`data_dir`).
    """
    self._files = files
    self._tables = None
    md5s = [self.SOURCE.md5[n] if files is None else official.file_md5(files[n])
            for n in sorted(self.SOURCE.md5)]
    digest = hashlib.sha256(" ".join(md5s).encode()).hexdigest()[:12]
    config = tfds.core.BuilderConfig(name="files_" + digest)
    super().__init__(config=config, file_format="array_record", **kwargs)

  def read_files(self) -> None:
    """Reads the local files now (a bad row raises its DataError here);
    preparing then uses what was read."""
    self._tables = self.SOURCE.read(self._files)

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.SOURCE.spec
    features = {_ROW: tfds.features.Scalar(np.int64)}
    for c in spec.columns:
      features[c.name] = (tfds.features.ClassLabel(names=list(c.vocab))
                          if c.is_categorical
                          else tfds.features.Scalar(np.float32))
    features[LABEL] = tfds.features.ClassLabel(names=list(spec.label_vocab))
    return tfds.core.DatasetInfo(
        builder=self, description=f"{spec.name}, official files.",
        features=tfds.features.FeaturesDict(features),
        homepage=next(iter(self.SOURCE.url.values())))

  def _split_generators(self, dl_manager):
    tables = self._tables
    if tables is None:
      files = self._files
      if files is None:
        files = _download(self.SOURCE, dl_manager)
      tables = self.SOURCE.read(files)
    return {split: self._generate_examples(table)
            for split, table in tables.items()}

  def _generate_examples(self, table: RawTable):
    names = list(table)
    n = table[LABEL].shape[0]
    for i in range(n):
      example = {name: table[name][i] for name in names}
      example[_ROW] = i
      yield i, example


class Adult(OfficialBuilder):
  SOURCE = official.ADULT_SOURCE


class BankMarketing(OfficialBuilder):
  SOURCE = official.BANK_SOURCE


class Movielens100k(OfficialBuilder):
  SOURCE = official.MOVIELENS_SOURCE


BUILDERS = {b.SOURCE.spec.name: b for b in (Adult, BankMarketing, Movielens100k)}


class _HushCustomConfig(std_logging.Filter):
  """Drops TFDS's warning that a builder config is custom: ours always are
  (named by the files' md5s), and the line opened every log."""

  def filter(self, record):
    return not str(record.msg).startswith("Using custom data configuration")


std_logging.getLogger("absl").addFilter(_HushCustomConfig())


def _download(source, dl_manager) -> dict[str, str]:
  """Downloads the official files and checks their md5 (always)."""
  if "archive" in source.url:
    folder = str(dl_manager.download_and_extract(source.url["archive"]))
    found = _walk(folder, dl_manager)
    missing = sorted(set(source.md5) - set(found))
    if missing:
      raise DataError(f"{source.url['archive']}: the archive lacks {missing}")
  else:  # One official URL per file.
    found = {k: str(v) for k, v in dl_manager.download(dict(source.url)).items()}
  for name in source.md5:
    got = official.file_md5(found[name])
    if got != source.md5[name]:
      raise DataError(f"{found[name]}: checksum mismatch (md5 {got}, official "
                      f"{source.md5[name]})")
  return {n: found[n] for n in source.md5}


def _walk(folder, dl_manager) -> dict[str, str]:
  """Every file under `folder`, by name, opening nested zip archives."""
  found = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      if name.endswith(".zip"):
        found.update(_walk(str(dl_manager.extract(path)), dl_manager))
      else:
        found.setdefault(name, path)
  return found


def load(name: str, *, tfds_dir: str, manual_dir: str,
         verify_checksums: bool) -> dict[str, RawTable]:
  """Prepares (once) and reads an official data set through TFDS.

  Args:
    name: one of BUILDERS.
    tfds_dir: the TFDS data_dir that caches prepared data sets.
    manual_dir: a folder with the official files, or "" to use the packaged
      copy, or to download when the package ships none.
    verify_checksums: check each file's md5 against the official one.

  Returns:
    split name -> RawTable, rows in file order.

  Raises:
    DataError: missing or corrupt files, or bad rows (naming file and line).
  """
  source = official.SOURCES[name]
  if manual_dir:
    if not os.path.isdir(manual_dir):
      raise DataError(f"{manual_dir}: data.manual_dir is not a folder")
    files = official.find_files(source, manual_dir, verify_checksums)
  elif source.packaged:
    files = official.find_files(source, official.packaged_dir(),
                                verify_checksums)
  else:
    files = None
  data_dir = os.path.expanduser(tfds_dir)
  probe = data_dir
  while probe and not os.path.lexists(probe):  # The part that exists must be folders.
    probe = os.path.dirname(probe)
  if probe and not os.path.isdir(probe):
    raise DataError(f"{probe}: data.tfds_dir ({tfds_dir}) is not a folder")
  builder = BUILDERS[name](files=files, data_dir=data_dir)
  if not os.path.isdir(builder.data_dir):
    if files is not None:  # A bad row fails here, as the only line, before TFDS prints.
      builder.read_files()
    logging.info("preparing %s once into %s", name, builder.data_dir)
  tfds.disable_progress_bar()
  try:
    builder.download_and_prepare()
  except PermissionError as e:
    raise DataError(f"data.tfds_dir: cannot prepare {name} in {data_dir}: "
                    f"{e.strerror}: {e.filename}") from None
  return {split: _read_split(builder, split, source.spec)
          for split in builder.info.splits}


def _read_split(builder, split, spec) -> RawTable:
  """Reads one prepared split into columns, in file order.

  TFDS's per-record NumPy decoder costs ~150 us a record in Python; parsing
  the same `tf.train.Example` protos with TFDS's own compiled proto class and
  reading the columns directly is ~20x faster.
  """
  source_ds = builder.as_data_source(split=split)
  raw = source_ds.data_source.__getitems__(list(range(len(source_ds))))
  feats = [tf_example_pb2.Example.FromString(r).features.feature for r in raw]
  n = len(feats)

  def column(key, categorical):
    if categorical:
      return np.fromiter((f[key].int64_list.value[0] for f in feats), np.int64, n)
    return np.fromiter((f[key].float_list.value[0] for f in feats), np.float32, n)

  order = np.argsort(column(_ROW, True))
  table = {c.name: column(c.name, c.is_categorical) for c in spec.columns}
  table[LABEL] = column(LABEL, True)
  return {k: (v.astype(np.int32) if v.dtype == np.int64 else v)[order]
          for k, v in table.items()}
