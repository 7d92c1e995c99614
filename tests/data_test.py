"""Data: official readers through TFDS, synthetic, CSV, schema and encoding."""

import dataclasses
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from splitjax import configlib, data
from splitjax.data import builders, official, synthetic
from splitjax.data.schema import LABEL, Schema
from splitjax.errors import DataError
from conftest import config_file, small_config


@pytest.fixture(scope="module")
def adult_tables(tfds_dir):
  return builders.load("adult", tfds_dir=tfds_dir, manual_dir="",
                       verify_checksums=True)


def test_adult_packaged_rows_match_official_files(adult_tables):
  train, test = adult_tables["train"], adult_tables["test"]
  assert train[LABEL].shape == (32561,) and test[LABEL].shape == (16281,)
  # First lines of adult.data and adult.test, decoded by hand.
  spec = official.ADULT
  assert train["age"][0] == 39 and train["fnlwgt"][0] == 77516
  assert spec.column("workclass").vocab[train["workclass"][0]] == "State-gov"
  assert spec.column("sex").vocab[train["sex"][0]] == "Male"
  assert train[LABEL][0] == 0
  assert test["age"][0] == 25 and test[LABEL][0] == 0  # "<=50K." in the file
  # Known class balance of Adult: 7,841 of 32,561 training rows are >50K.
  assert int(train[LABEL].sum()) == 7841



def test_a_prepared_copy_is_not_read_again(adult_tables, tfds_dir, monkeypatch):
  # `load` reads the files before TFDS only where the prepared folder is
  # missing; once prepared, the cache alone is read.
  files = official.find_files(official.ADULT_SOURCE, official.packaged_dir(), True)
  builder = builders.Adult(files=files, data_dir=tfds_dir)
  assert os.path.isdir(builder.data_dir)

  def no_read(_):
    raise AssertionError("the files were read again")

  monkeypatch.setattr(builders.Adult, "SOURCE",
                      dataclasses.replace(builders.Adult.SOURCE, read=no_read))
  again = builders.load("adult", tfds_dir=tfds_dir, manual_dir="", verify_checksums=True)
  np.testing.assert_array_equal(again["train"][LABEL], adult_tables["train"][LABEL])

def test_fast_decoder_matches_tfds_decoder(adult_tables, tfds_dir):
  files = official.find_files(official.ADULT_SOURCE, official.packaged_dir(), True)
  source = builders.Adult(files=files, data_dir=tfds_dir).as_data_source("test")
  for i in (0, 7, 4000):
    ex = source[i]
    row = int(ex["row"])
    for c in official.ADULT.columns:
      np.testing.assert_equal(adult_tables["test"][c.name][row], ex[c.name])
    assert adult_tables["test"][LABEL][row] == ex["label"]


def test_bank_split_is_fixed_and_disjoint(tfds_dir):
  tables = builders.load("bank_marketing", tfds_dir=tfds_dir, manual_dir="",
                         verify_checksums=True)
  # The official bank-full.csv (md5 63fd1b...) holds 45,212 data rows, 5,290
  # of them "yes" (UCI's page says 45,211 instances).
  assert tables["train"][LABEL].shape[0] + tables["test"][LABEL].shape[0] == 45212
  assert tables["test"][LABEL].shape[0] == 9042
  assert int(tables["train"][LABEL].sum() + tables["test"][LABEL].sum()) == 5290


def test_movielens_through_manual_folder(tfds_dir, movielens_dir):
  tables = builders.load("movielens_100k", tfds_dir=tfds_dir,
                         manual_dir=movielens_dir, verify_checksums=True)
  assert tables["train"][LABEL].shape[0] == 80000
  assert tables["test"][LABEL].shape[0] == 20000
  # u.data line 1: user 196 rated movie 242 a 3 (below 4).
  both = {k: np.concatenate([tables["train"][k], tables["test"][k]])
          for k in tables["train"]}
  spec = official.MOVIELENS
  users = np.asarray(spec.column("user_id").vocab)[both["user_id"]]
  movies = np.asarray(spec.column("movie_id").vocab)[both["movie_id"]]
  hit = np.flatnonzero((users == "196") & (movies == "242"))
  assert hit.size == 1 and both[LABEL][hit[0]] == 0
  # Movie 267 alone has no release date: kept as missing, filled at encoding.
  missing = np.isnan(both["release_year"])
  assert missing.any() and set(movies[missing]) == {"267"}


def test_no_tensorflow_or_torch_imported(adult_tables, tfds_dir):
  # In a fresh process: in this one, collecting torch_reference_test.py
  # imports torch wherever it is installed.
  script = ("import sys\n"
            "from splitjax.data import builders\n"
            f"builders.load('adult', tfds_dir={tfds_dir!r}, manual_dir='', "
            "verify_checksums=True)\n"
            "print(sorted({'tensorflow', 'torch'} & set(sys.modules)))\n")
  r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


def test_failed_build_leaves_no_cache(tmp_path):
  folder = tmp_path / "adult"
  folder.mkdir()
  with gzip.open(os.path.join(official.packaged_dir(), "adult.data.gz"), "rt",
                 encoding="latin-1") as f:
    lines = f.readlines()
  lines[5] = lines[5].replace("Private", "Pirate")
  (folder / "adult.data").write_text("".join(lines), encoding="latin-1")
  (folder / "adult.test.gz").write_bytes(
      open(os.path.join(official.packaged_dir(), "adult.test.gz"), "rb").read())
  cache = tmp_path / "tfds"
  with pytest.raises(data.DataError, match=r"adult.data, line 6, column 'workclass'"):
    builders.load("adult", tfds_dir=str(cache), manual_dir=str(folder),
                  verify_checksums=False)
  leftovers = [p for p in cache.rglob("*") if p.is_file()]
  assert leftovers == []


def test_schema_normalises_on_train_only():
  c = small_config(data__private_features=("p_cat_0", "p_num_0"),
                   data__synthetic__num_private_numeric=1)
  ds = data.load(c.data)
  np.testing.assert_allclose(ds.train.x_s_num.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(ds.train.x_s_num.std(0), 1, atol=1e-3)
  np.testing.assert_allclose(ds.train.x_p_num.mean(0), 0, atol=1e-4)
  assert not np.allclose(ds.test.x_s_num.mean(0), 0, atol=1e-4)
  assert [f.name for f in ds.schema.private] == ["p_cat_0", "p_num_0"]
  # config.json holds the schema as JSON; reading it back gives the same one.
  assert Schema.from_json(json.loads(json.dumps(ds.schema.to_json()))) == ds.schema


def test_balance_classes_keeps_the_first_records_of_each_class():
  c = small_config(data__max_test_examples=300)
  full = data.load(c.data)
  c.data.balance_classes = True
  kept = data.load(c.data)
  for whole, part in ((full.train, kept.train), (full.test, kept.test)):
    counts = np.bincount(whole.y)
    assert counts.min() < counts.max()  # unbalanced to begin with
    np.testing.assert_array_equal(np.bincount(part.y), [counts.min()] * 2)
    # The first counts.min() records of each class, in file order.
    keep = np.concatenate([np.flatnonzero(whole.y == k)[:counts.min()]
                           for k in range(2)])
    keep.sort()
    for name in ("x_s_cat", "x_p_cat", "y"):
      np.testing.assert_array_equal(getattr(part, name),
                                    getattr(whole, name)[keep])
  # A split that lacks a class cannot be balanced, and says which.
  first_class = full.schema.label_vocab[1 - full.test.y[0]]
  c.data.max_test_examples = 1
  with pytest.raises(DataError, match=rf"data.balance_classes: class "
                     rf"'{first_class}' has no records in the test split"):
    data.load(c.data)


def test_private_features_are_config_not_code():
  c = small_config(data__private_features=("s_cat_0",))
  ds = data.load(c.data)
  assert [f.name for f in ds.schema.private] == ["s_cat_0"]
  assert "s_cat_0" not in [f.name for f in ds.schema.server]


def test_synthetic_is_deterministic_and_has_known_dependence():
  cfg = small_config().data.synthetic
  a, b = synthetic.generate(cfg), synthetic.generate(cfg)
  for k in a["train"]:
    np.testing.assert_array_equal(a["train"][k], b["train"][k])

  def agreement(dependence):
    cfg.num_examples, cfg.dependence = 50_000, dependence
    t = synthetic.generate(cfg)["train"]
    # How often p_cat_0 equals the most common value given s_cat_0.
    s, p = t["s_cat_0"], t["p_cat_0"]
    best = [np.bincount(p[s == v], minlength=3).max() for v in range(5)]
    return sum(best) / len(p)
  assert agreement(0.0) < 0.37  # independent: ~1/3 for 3 values
  assert agreement(3.0) > 0.5


def test_synthetic_scales_without_per_row_python():
  cfg = small_config().data.synthetic
  cfg.num_examples = 2_000_000
  t = synthetic.generate(cfg)
  assert t["train"][LABEL].shape[0] + t["test"][LABEL].shape[0] == 2_000_000


def test_user_csv(tmp_path):
  path = tmp_path / "mine.csv"
  rows = ["colour,size,weight,ok,note"]
  rng = np.random.default_rng(0)
  for i in range(200):
    rows.append(f"{rng.choice(['red', 'grün'])},{rng.choice(['S', 'M', 'L'])},"
                f"{rng.normal():.3f},{rng.choice(['yes', 'no'])},x{i}")
  # As a spreadsheet program saves it: byte-order mark, CRLF line ends.
  path.write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))
  c = config_file("user_csv", "smoke")  # The documented way in.
  c.data.private_features = ("size",)
  c.data.csv.path = str(path)
  c.data.csv.categorical = ("colour", "size")
  c.data.csv.numeric = ("weight",)
  c.data.csv.label = "ok"
  c.data.csv.ignore = ("note",)
  configlib.check(c)
  ds = data.load(c.data)
  assert ds.train.num_examples == 160 and ds.test.num_examples == 40
  assert ds.schema.label_vocab == ("no", "yes")
  assert ds.schema.private[0].vocab == ("L", "M", "S")
  assert [f.name for f in ds.schema.server] == ["colour", "weight"]
  assert ds.schema.server[0].vocab == ("grün", "red")
  # Not UTF-8: read as Latin-1, byte for byte.
  path.write_bytes("\n".join(rows).replace("grün", "gr\xfcn").encode("latin-1"))
  assert data.load(c.data).schema.server[0].vocab == ("grün", "red")
  packed = tmp_path / "mine.csv.gz"  # Gzipped: the same table.
  packed.write_bytes(gzip.compress(path.read_bytes()))
  c.data.csv.path = str(packed)
  again = data.load(c.data)
  assert again.schema.server[0].vocab == ("grün", "red")
  np.testing.assert_array_equal(again.train.x_s_num, ds.train.x_s_num)
