"""The three official data sets: their columns, files, checksums and readers.

Each reader takes the official files exactly as their distributions name them
(the form of ../shared/data and of a user's manual folder) and returns a
validated RawTable per split. Adult and Bank Marketing also ship inside the
package, gzip-compressed (see files/ATTRIBUTION.md); MovieLens never does.

Bank Marketing and MovieLens have no official test split. Theirs is a fixed
80/20 split of the rows by `numpy.random.default_rng(0)`, part of the builder's
version.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import importlib.resources
import io
import os
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from splitjax.data.schema import Column, RawTable, TableSpec, parse_rows
from splitjax.errors import DataError

TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class OfficialSource:
  """Where an official data set comes from and how to read it.

  Attributes:
    spec: its raw columns.
    md5: official file name -> md5 of its uncompressed bytes.
    url: the official archive or file(s), for the TFDS download manager.
    packaged: whether the package ships the files (gzip-compressed).
    read: official file name -> path, to RawTable per split.
  """
  spec: TableSpec
  md5: Mapping[str, str]
  url: Mapping[str, str]
  packaged: bool
  read: Callable[[Mapping[str, str]], dict[str, RawTable]]


def packaged_dir() -> str:
  return str(importlib.resources.files("splitjax.data") / "files")


def open_text(path: str) -> io.TextIOBase:
  """Opens an official file, or its packaged `.gz` copy, as text."""
  if path.endswith(".gz"):
    return io.TextIOWrapper(gzip.open(path, "rb"), encoding="latin-1",
                            newline="")
  return open(path, encoding="latin-1", newline="")


def file_md5(path: str) -> str:
  opener = gzip.open if path.endswith(".gz") else open
  h = hashlib.md5()
  with opener(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def find_files(source: OfficialSource, folder: str,
               verify_checksums: bool) -> dict[str, str]:
  """Finds each official file in `folder` (plain or `.gz`) and checks it.

  Raises:
    DataError: a file is missing, or its md5 differs from the official one.
  """
  paths = {}
  for name, md5 in source.md5.items():
    candidates = [os.path.join(folder, name), os.path.join(folder, name + ".gz")]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
      raise DataError(f"{candidates[0]}: file not found (data set "
                      f"{source.spec.name!r} needs {sorted(source.md5)})")
    if verify_checksums:
      got = file_md5(path)
      if got != md5:
        raise DataError(
            f"{path}: checksum mismatch (md5 {got}, official {md5}); pass "
            "--config.data.verify_checksums=False to read a modified copy")
    paths[name] = path
  return paths


def random_split(table: RawTable, seed: int = 0,
                 test_fraction: float = TEST_FRACTION) -> dict[str, RawTable]:
  """A fixed random train/test split of a table with no official one."""
  n = table["label"].shape[0]
  perm = np.random.default_rng(seed).permutation(n)
  num_test = int(round(n * test_fraction))
  parts = {"train": np.sort(perm[num_test:]), "test": np.sort(perm[:num_test])}
  return {s: {k: v[i] for k, v in table.items()} for s, i in parts.items()}


# ----------------------------------------------------------------- Adult -----

_ADULT_COLUMNS = (
    Column("age"),
    Column("workclass", ("Private", "Self-emp-not-inc", "Self-emp-inc",
                         "Federal-gov", "Local-gov", "State-gov",
                         "Without-pay", "Never-worked", "?")),
    Column("fnlwgt"),
    Column("education", ("Bachelors", "Some-college", "11th", "HS-grad",
                         "Prof-school", "Assoc-acdm", "Assoc-voc", "9th",
                         "7th-8th", "12th", "Masters", "1st-4th", "10th",
                         "Doctorate", "5th-6th", "Preschool")),
    Column("education-num"),
    Column("marital-status", ("Married-civ-spouse", "Divorced",
                              "Never-married", "Separated", "Widowed",
                              "Married-spouse-absent", "Married-AF-spouse")),
    Column("occupation", ("Tech-support", "Craft-repair", "Other-service",
                          "Sales", "Exec-managerial", "Prof-specialty",
                          "Handlers-cleaners", "Machine-op-inspct",
                          "Adm-clerical", "Farming-fishing",
                          "Transport-moving", "Priv-house-serv",
                          "Protective-serv", "Armed-Forces", "?")),
    Column("relationship", ("Wife", "Own-child", "Husband", "Not-in-family",
                            "Other-relative", "Unmarried")),
    Column("race", ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo",
                    "Other", "Black")),
    Column("sex", ("Female", "Male")),
    Column("capital-gain"),
    Column("capital-loss"),
    Column("hours-per-week"),
    Column("native-country", (
        "United-States", "Cambodia", "England", "Puerto-Rico", "Canada",
        "Germany", "Outlying-US(Guam-USVI-etc)", "India", "Japan", "Greece",
        "South", "China", "Cuba", "Iran", "Honduras", "Philippines", "Italy",
        "Poland", "Jamaica", "Vietnam", "Mexico", "Portugal", "Ireland",
        "France", "Dominican-Republic", "Laos", "Ecuador", "Taiwan", "Haiti",
        "Columbia", "Hungary", "Guatemala", "Nicaragua", "Scotland",
        "Thailand", "Yugoslavia", "El-Salvador", "Trinadad&Tobago", "Peru",
        "Hong", "Holand-Netherlands", "?")),
)
ADULT = TableSpec("adult", _ADULT_COLUMNS, ("<=50K", ">50K"),
                  ("marital-status", "relationship", "race", "sex"))


def _adult_rows(path: str) -> Iterator[tuple[int, list[str]]]:
  with open_text(path) as f:
    for line_no, line in enumerate(f, 1):
      line = line.strip()
      # Blank lines end both files; adult.test opens with "|1x3 Cross validator".
      if not line or line.startswith("|"):
        continue
      cells = [c.strip() for c in line.split(",")]
      cells[-1] = cells[-1].rstrip(".")  # adult.test writes ">50K."
      yield line_no, cells


def _read_adult(paths: Mapping[str, str]) -> dict[str, RawTable]:
  return {split: parse_rows(_adult_rows(paths[name]), ADULT.columns,
                            ADULT.label_vocab, paths[name])
          for split, name in (("train", "adult.data"), ("test", "adult.test"))}


ADULT_SOURCE = OfficialSource(
    spec=ADULT,
    md5={"adult.data": "5d7c39d7b8804f071cdd1f2a7c460872",
         "adult.test": "35238206dfdf7f1fe215bbb874adecdc"},
    url={"adult.data": "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.data",
         "adult.test": "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.test"},
    packaged=True,
    read=_read_adult)

# -------------------------------------------------------- Bank Marketing -----

_BANK_COLUMNS = (
    Column("age"),
    Column("job", ("admin.", "blue-collar", "entrepreneur", "housemaid",
                   "management", "retired", "self-employed", "services",
                   "student", "technician", "unemployed", "unknown")),
    Column("marital", ("divorced", "married", "single")),
    Column("education", ("primary", "secondary", "tertiary", "unknown")),
    Column("default", ("no", "yes")),
    Column("balance"),
    Column("housing", ("no", "yes")),
    Column("loan", ("no", "yes")),
    Column("contact", ("cellular", "telephone", "unknown")),
    Column("day"),
    Column("month", ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                     "sep", "oct", "nov", "dec")),
    Column("duration"),
    Column("campaign"),
    Column("pdays"),
    Column("previous"),
    Column("poutcome", ("failure", "other", "success", "unknown")),
)
BANK = TableSpec("bank_marketing", _BANK_COLUMNS, ("no", "yes"),
                 ("marital", "education", "default", "housing", "loan"))


def _read_bank(paths: Mapping[str, str]) -> dict[str, RawTable]:
  path = paths["bank-full.csv"]
  expected = list(BANK.names) + ["y"]

  def rows():
    with open_text(path) as f:
      reader = csv.reader(f, delimiter=";", quotechar='"')
      header = next(reader, None)
      if header != expected:
        raise DataError(f"{path}, line 1: header {header} is not the "
                        f"official {expected}")
      for cells in reader:
        if cells:
          yield reader.line_num, cells

  return random_split(parse_rows(rows(), BANK.columns, BANK.label_vocab, path))


BANK_SOURCE = OfficialSource(
    spec=BANK,
    md5={"bank-full.csv": "63fd1bbea62e77d93b182ee63c11a19a"},
    # The UCI archive holds bank.zip, which holds bank-full.csv.
    url={"archive": "https://archive.ics.uci.edu/static/public/222/bank+marketing.zip"},
    packaged=True,
    read=_read_bank)

# -------------------------------------------------------- MovieLens 100K -----

_ML_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's",
              "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
              "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
              "Sci-Fi", "Thriller", "War", "Western")
_ML_OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer",
    "entertainment", "executive", "healthcare", "homemaker", "lawyer",
    "librarian", "marketing", "none", "other", "programmer", "retired",
    "salesman", "scientist", "student", "technician", "writer")
# The seven age buckets of MovieLens 1M, applied to 100K's exact ages.
_ML_AGE_BUCKETS = ((18, "Under 18"), (25, "18-24"), (35, "25-34"),
                   (45, "35-44"), (50, "45-49"), (56, "50-55"), (999, "56+"))
_ML_NUM_USERS, _ML_NUM_MOVIES = 943, 1682

_ML_COLUMNS = (
    (Column("user_id", tuple(str(i) for i in range(1, _ML_NUM_USERS + 1))),
     Column("movie_id", tuple(str(i) for i in range(1, _ML_NUM_MOVIES + 1))),
     # One movie (id 267) has no release date in the official u.item.
     Column("release_year", fill_missing=True))
    + tuple(Column("genre_" + g) for g in _ML_GENRES)
    + (Column("gender", ("M", "F")),
       Column("age_bucket", tuple(b for _, b in _ML_AGE_BUCKETS)),
       Column("occupation", _ML_OCCUPATIONS)))
MOVIELENS = TableSpec(
    "movielens_100k", _ML_COLUMNS, ("below_4", "4_or_more"),
    ("gender", "age_bucket", "occupation"))


def _split_lines(path, sep, width):
  with open_text(path) as f:
    for line_no, line in enumerate(f, 1):
      line = line.rstrip("\r\n")
      if not line:
        continue
      cells = line.split(sep)
      if len(cells) != width:
        raise DataError(f"{path}, line {line_no}: expected {width} columns, "
                        f"found {len(cells)}")
      yield line_no, cells


def _age_bucket(path, line_no, age):
  try:
    a = int(age)
  except ValueError:
    raise DataError(f"{path}, line {line_no}, column 'age': {age!r} is not a "
                    "number") from None
  return next(b for upper, b in _ML_AGE_BUCKETS if a < upper)


def _read_movielens(paths: Mapping[str, str]) -> dict[str, RawTable]:
  users = {}
  for line_no, (uid, age, gender, occupation, _) in _split_lines(
      paths["u.user"], "|", 5):
    users[uid] = (gender, _age_bucket(paths["u.user"], line_no, age),
                  occupation)
  movies = {}
  for _, cells in _split_lines(paths["u.item"], "|", 5 + len(_ML_GENRES)):
    date = cells[2]
    movies[cells[0]] = ([date[-4:] if date else ""] + cells[5:])

  def rows():
    path = paths["u.data"]
    for line_no, (uid, mid, rating, _) in _split_lines(path, "\t", 4):
      if uid not in users:
        raise DataError(f"{path}, line {line_no}: user {uid!r} is not in u.user")
      if mid not in movies:
        raise DataError(f"{path}, line {line_no}: movie {mid!r} is not in u.item")
      if rating not in ("1", "2", "3", "4", "5"):
        raise DataError(f"{path}, line {line_no}, column 'rating': {rating!r} "
                        "is not 1-5")
      label = "4_or_more" if int(rating) >= 4 else "below_4"
      yield line_no, [uid, mid, *movies[mid], *users[uid], label]

  table = parse_rows(rows(), MOVIELENS.columns, MOVIELENS.label_vocab,
                     paths["u.data"])
  return random_split(table)


MOVIELENS_SOURCE = OfficialSource(
    spec=MOVIELENS,
    md5={"u.data": "6e47046882bad158b0efbb84cd5cb987",
         "u.user": "1b53539edc13caad0282c8500608a319",
         "u.item": "30415b71db825c6fa82adf300ea3b6a0"},
    url={"archive": "https://files.grouplens.org/datasets/movielens/ml-100k.zip"},
    packaged=False,
    read=_read_movielens)

SOURCES = {s.spec.name: s for s in (ADULT_SOURCE, BANK_SOURCE, MOVIELENS_SOURCE)}
