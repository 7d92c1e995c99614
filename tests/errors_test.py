"""Bad input: each case gets one line naming what is wrong, and writes nothing."""

import gzip
import os
import shutil
import subprocess
import sys

import pytest

from splitjax import configlib, data, models, training
from splitjax.data import official
from splitjax.errors import ConfigError, DataError
from conftest import REPO, small_config


def _adult_copy(folder, edit=None):
  """Official adult files in `folder`, line `edit[0]` of adult.data edited."""
  folder.mkdir(parents=True, exist_ok=True)
  with gzip.open(os.path.join(official.packaged_dir(), "adult.data.gz"), "rt",
                 encoding="latin-1") as f:
    lines = f.readlines()
  if edit:
    line_no, old, new = edit
    lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
  (folder / "adult.data").write_text("".join(lines), encoding="latin-1")
  shutil.copy(os.path.join(official.packaged_dir(), "adult.test.gz"), folder)
  return str(folder)


def _csv(tmp_path, body, header="a,b,c,y"):
  path = tmp_path / "t.csv"
  path.write_text(header + "\n" + body)
  c = small_config("csv", data__private_features=("b",))
  c.data.csv.path = str(path)
  c.data.csv.categorical = ("a", "b")
  c.data.csv.numeric = ("c",)
  c.data.csv.label = "y"
  return c


def _csv_absent(tmp_path, private_features):
  """A CSV config whose file does not exist."""
  c = _csv(tmp_path, GOOD_ROWS)
  c.data.csv.path = str(tmp_path / "absent.csv")
  c.data.private_features = private_features
  return c


def _gz(c, content: bytes):
  """The CSV config `c`, pointed at a `.gz` file holding `content`."""
  c.data.csv.path += ".gz"
  with open(c.data.csv.path, "wb") as f:
    f.write(content)
  return c


def _load(c):
  configlib.check(c)
  ds = data.load(c.data)
  spec = training.make_spec(c, models.make_model(ds.schema, c.model), ds.train)
  training.defence_setting(c, spec)


GOOD_ROWS = "".join(f"{'pq'[i % 2]},{'uvw'[i % 3]},{i}.5,{'no' if i % 4 else 'yes'}\n"
                    for i in range(20))

CASES = {
    "missing_file": (
        lambda t: small_config("adult", data__manual_dir=str(t), data__tfds_dir=str(t / "c"),
                               data__private_features=("sex",)),
        DataError, r"adult.data: file not found"),
    "checksum_mismatch": (
        lambda t: small_config("adult", data__private_features=("sex",),
                               data__tfds_dir=str(t / "c"),
                               data__manual_dir=_adult_copy(t / "d", (3, "38", "39"))),
        DataError, r"adult.data: checksum mismatch"),
    "category_not_in_vocabulary": (
        lambda t: small_config("adult", data__private_features=("sex",),
                               data__tfds_dir=str(t / "c"), data__verify_checksums=False,
                               data__manual_dir=_adult_copy(t / "d", (4, "Male", "Mail"))),
        DataError, r"adult.data, line 4, column 'sex': 'Mail' is not in the vocabulary"),
    "wrong_number_of_columns": (
        lambda t: _csv(t, GOOD_ROWS + "p,u,1.0\n"),
        DataError, r"t.csv, line 22: expected 4 columns, found 3"),
    "empty_cell": (
        lambda t: _csv(t, GOOD_ROWS + "p,u,,no\n"),
        DataError, r"t.csv, line 22, column 'c': empty or NaN cell"),
    "nan_cell": (
        lambda t: _csv(t, "p,u,NaN,no\n" + GOOD_ROWS),
        DataError, r"t.csv, line 2, column 'c': empty or NaN cell"),
    "not_a_number": (
        lambda t: _csv(t, GOOD_ROWS + "p,u,heavy,no\n"),
        DataError, r"t.csv, line 22, column 'c': 'heavy' is not a number"),
    "csv_undeclared_column": (
        lambda t: _csv(t, GOOD_ROWS.replace(",no\n", ",no,1\n").replace(",yes\n", ",yes,1\n"),
                       header="a,b,c,y,extra"),
        ConfigError, r"columns \['extra'\] .* are not declared"),
    "csv_damaged_gzip": (
        lambda t: _gz(_csv(t, GOOD_ROWS), b"not gzip"),
        DataError, r"t.csv.gz: cannot read it \(Not a gzipped file"),
    "unknown_feature": (
        lambda t: small_config(data__private_features=("p_cat_0", "shoe_size")),
        ConfigError, r"data.private_features: unknown feature 'shoe_size'"),
    "csv_unknown_feature_before_reading": (  # Its declared columns suffice.
        lambda t: _csv_absent(t, ("b", "shoe_size")),
        ConfigError, r"data.private_features: unknown feature 'shoe_size' for data set "
                     r"'csv'; known: \['a', 'b', 'c'\]"),
    "unknown_dataset": (
        lambda t: small_config("adultt"),
        ConfigError, r"data.name: unknown data set 'adultt'"),
    "negative_width": (
        lambda t: small_config(model__server_hidden=(16, -4)),
        ConfigError, r"model.server_hidden: widths must be positive integers"),
    "batch_larger_than_data": (
        lambda t: small_config(train__batch_size=5000),
        ConfigError, r"train.batch_size: 5000 is larger than the 1920 training"),
    "manual_dir_not_a_folder": (
        lambda t: small_config("adult", data__manual_dir=str(t / "nope"),
                               data__private_features=("sex",)),
        DataError, r"nope: data.manual_dir is not a folder"),
    "label_epsilon_not_positive": (
        lambda t: small_config(defence__label_epsilon=0.0),
        ConfigError, r"defence.label_epsilon: must be in \(0, 10\] or inf \(off\), got 0.0"),
    "label_epsilon_past_float32": (
        lambda t: small_config(defence__label_epsilon=40.0),
        ConfigError, r"defence.label_epsilon: must be in \(0, 10\] or inf \(off\), got 40.0"),
    "sweep_label_epsilon_past_float32": (
        lambda t: small_config(sweep__label_epsilons=(3.0, 12.0)),
        ConfigError, r"sweep.label_epsilons: each must be <= 10 or inf, got \(3.0, 12.0\)"),
    "sweep_knowledge_twice": (  # Ran each run twice, rows doubled, until 2026-12-05.
        lambda t: small_config(sweep__knowledge=("white_box", "white_box")),
        ConfigError, r"sweep.knowledge: names a setting twice: \('white_box', 'white_box'\)"),
    "attack_named_twice": (
        lambda t: small_config(attack__names=("prior", "exact", "exact")),
        ConfigError, r"attack.names: names an attack twice: \('prior', 'exact', 'exact'\)"),
    "stale_without_fsl": (
        lambda t: small_config(view__knowledge="stale"),
        ConfigError, r"view.knowledge: 'stale' needs train.mode='fsl'"),
    "noise_multiplier_negative": (
        lambda t: small_config(defence__noise_multiplier=-0.5),
        ConfigError, r"defence.noise_multiplier: must be >= 0, got -0.5"),
    "clip_norm_not_positive": (
        lambda t: small_config(defence__clip_norm=0.0),
        ConfigError, r"defence.clip_norm: must be > 0, got 0.0"),
    "delta_out_of_range": (
        lambda t: small_config(defence__delta=1.0),
        ConfigError, r"defence.delta: must be in \(0, 1\), got 1.0"),
    "target_epsilon_unreachable": (
        lambda t: small_config(defence__clip=True, defence__noise=True,
                               defence__target_epsilon=1e-6),
        ConfigError, r"defence.target_epsilon: 1e-06 is below the epsilon"),
    "target_epsilon_without_noise": (
        lambda t: small_config(defence__target_epsilon=1.0),
        ConfigError, r"defence.target_epsilon: needs defence.clip=True"),
    "optimizer_unknown": (
        lambda t: small_config(train__server_optimizer="adamw"),
        ConfigError, r"train.server_optimizer: unknown 'adamw'; known: \['adam', 'sgd'\]"),
    "weight_decay_negative": (
        lambda t: small_config(train__device_weight_decay=-0.1),
        ConfigError, r"train.device_weight_decay: must be finite and >= 0 \(0 is off\), "
                     r"got -0.1"),
    "weight_decay_too_large": (
        lambda t: small_config(train__server_weight_decay=1000.0),
        ConfigError, r"train.server_weight_decay: 1000.0 x the learning rate 0.001 must "
                     r"be under 1"),
    "exact_metric_unknown": (  # Found only after training until 2026-12-04.
        lambda t: small_config(attack__exact__metric="cos"),
        ConfigError, r"attack.exact.metric: unknown 'cos'; known: \['l2', 'cosine'\]"),
    "noiseless_scale_not_positive": (
        lambda t: small_config(attack__bayes__noiseless_scale=0.0),
        ConfigError, r"attack.bayes.noiseless_scale: must be positive, got 0.0"),
    "label_given_private_without_hidden": (
        lambda t: small_config(attack__bayes__prior="label_given_private",
                               attack__server_model__hidden=0),
        ConfigError, r"attack.bayes.prior: 'label_given_private' splits its classifiers' "
                     r"hidden layer; it needs attack.server_model.hidden > 0"),
    "chain_without_hidden": (
        lambda t: small_config(attack__server_model__hidden=0),
        ConfigError, r"attack.bayes.prior: 'chain' splits its classifiers' "
                     r"hidden layer; it needs attack.server_model.hidden > 0"),
    "gradmatch_negative_beta": (
        lambda t: small_config(attack__gradmatch__beta_start=-1.0),
        ConfigError, r"attack.gradmatch: beta_start must be >= 0 \(0 = no smoothing\)"),
    "held_out_fraction_out_of_range": (
        lambda t: small_config(attack__server_model__held_out_fraction=1.0),
        ConfigError, r"attack.server_model.held_out_fraction: must be in \[0, 1\), got 1.0"),
    "fsl_clients_too_small": (
        lambda t: small_config(train__mode="fsl", fsl__num_clients=100,
                               fsl__client_batch_size=16, fsl__local_steps=2),
        ConfigError, r"fsl.client_batch_size: 16 x fsl.local_steps 2 exceeds the 19"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_names_what_is_wrong(case, tmp_path):
  make, error, pattern = CASES[case]
  c = make(tmp_path)
  with pytest.raises(error, match=pattern) as info:
    _load(c)
  assert "\n" not in str(info.value)
  cache = tmp_path / "c"
  if cache.exists():  # No half-written TFDS cache.
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def _train_cli(args, cwd):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "train.py"),
                         *args], cwd=cwd, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("config, private", [
    ("synthetic.py:smoke", "('p_cat_0','shoe_size')"),
    # A fixed table's feature names are checked before TFDS or a backend logs.
    ("adult.py:smoke", "('sex','shoe_size')")])
def test_cli_bad_input_exits_nonzero_with_one_line_and_no_workdir(tmp_path, config,
                                                                  private):
  workdir = tmp_path / "run"
  r = _train_cli([f"--config={REPO}/configs/{config}",
                  f"--config.data.private_features={private}",
                  f"--workdir={workdir}"], tmp_path)
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("splitjax: error: "), r.stderr[-2000:]
  assert "data.private_features: unknown feature 'shoe_size'" in lines[0]
  assert not workdir.exists()


@pytest.mark.parametrize("flag, expected", [
    ("--config.train.num_epoch=3",
     "--config.train.num_epoch: no such config field 'num_epoch' (Did you mean"),
    ("--config.train.num_epochs=three", "flag --config.train.num_epochs=three: invalid"),
    ("--config=configs/no_such.py", "--config: no such file: configs/no_such.py"),
    ("--config=configs/synthetic.py:no_variant",
     "unknown config variant 'no_variant'; known: smoke"),
    ("--config=configs/all_datasets.py:adultt",
     "unknown config variants ['adultt']; known: smoke, numeric, fsl, combined; data sets: "
     "adult, bank_marketing, movielens_100k"),
    ("--config={tmp}/returns_int.py",
     "--config: get_config() returned int, not a ConfigDict"),
    ("--config={tmp}/fails_on_import.py",
     "--config={tmp}/fails_on_import.py: AttributeError: module 'os' has no attribute "
     "'no_such_name'"),
    ("--distributed", "--distributed: jax.distributed.initialize() failed (give "
     "--coordinator_address, --num_processes and --process_id, or run where JAX "
     "detects them: TPU, Slurm, Open MPI): "),
    ("--num_processes=2", "--num_processes: only with --distributed"),
    ("config.train.num_epochs=3",  # Its dashes forgotten: absl would print usage.
     "unexpected arguments: config.train.num_epochs=3 (every option is a --flag; "
     "see --help)"),
    # A config out of range: refused before any backend starts (and logs).
    ("--config.defence.label_epsilon=40.0",
     "defence.label_epsilon: must be in (0, 10] or inf (off), got 40.0"),
])
def test_cli_bad_flag_is_one_line_not_a_traceback(tmp_path, flag, expected):
  # absl and ml_collections would print a traceback for each of these.
  (tmp_path / "returns_int.py").write_text("def get_config():\n  return 3\n")
  (tmp_path / "fails_on_import.py").write_text(
      "import os\nos.no_such_name\ndef get_config():\n  return None\n")
  flag, expected = flag.format(tmp=tmp_path), expected.format(tmp=tmp_path)
  config = [] if flag.startswith("--config=") else [
      f"--config={REPO}/configs/synthetic.py:smoke"]
  r = _train_cli([*config, flag, f"--workdir={tmp_path / 'run'}"], REPO)
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("splitjax: error: "), r.stderr[-2000:]
  assert expected in lines[0]
  assert not (tmp_path / "run").exists()


def test_cli_help_exits_zero_and_does_no_work(tmp_path):
  # absl prints --help and then exits with status 1, as if it were an error.
  r = _train_cli(["--help"], tmp_path)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "--config" in r.stdout and "--workdir" in r.stdout
  assert list(tmp_path.iterdir()) == []


def test_cli_unusable_workdir_is_one_line_and_leaves_nothing(tmp_path):
  # A file where the workdir (or a folder above it) should be: refused before
  # any work, in one line, and the probe leaves no folder behind.
  (tmp_path / "afile").write_text("")
  for workdir in (tmp_path / "afile", tmp_path / "afile" / "run"):
    r = _train_cli([f"--config={REPO}/configs/synthetic.py:smoke", f"--workdir={workdir}"],
                   tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [l for l in r.stderr.splitlines() if l.startswith("splitjax:")] == [
        f"splitjax: error: --workdir: {tmp_path / 'afile'} exists and is not a folder"]
  from splitjax import workdir as wd
  wd.check_writable(str(tmp_path / "new" / "deeper"))  # Writable: fine, and nothing made.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_cli_missing_data_folder_is_one_line(tmp_path):
  # A DataError found after the backend started: still the only line (jax's
  # INFO line about a missing libtpu is hushed).
  r = _train_cli([f"--config={REPO}/configs/movielens_100k.py:smoke",
                  f"--config.data.manual_dir={tmp_path / 'nowhere'}",
                  f"--config.data.tfds_dir={tmp_path / 'tfds'}",
                  f"--workdir={tmp_path / 'run'}"], tmp_path)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      f"splitjax: error: {tmp_path / 'nowhere'}: data.manual_dir is not a folder"], r.stderr
  assert not (tmp_path / "run").exists()



def test_cli_bad_row_is_one_line_before_tfds_prepares(tmp_path):
  # The files are read before TFDS prepares them, so its preparation lines
  # and its custom-config warning do not come before the error.
  folder = _adult_copy(tmp_path / "d", (4, "Male", "Mail"))
  r = _train_cli([f"--config={REPO}/configs/adult.py:smoke",
                  f"--config.data.manual_dir={folder}",
                  "--config.data.verify_checksums=False",
                  f"--config.data.tfds_dir={tmp_path / 'tfds'}",
                  f"--workdir={tmp_path / 'run'}"], tmp_path)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      f"splitjax: error: {folder}/adult.data, line 4, column 'sex': 'Mail' is not "
      "in the vocabulary ['Female', 'Male']"], r.stderr
  assert r.stdout == ""
  assert not (tmp_path / "run").exists() and not (tmp_path / "tfds").exists()

def test_benchmark_page_is_not_replaced_unasked(tmp_path, capsys):
  from benchmarks import workloads
  page = tmp_path / "cpu.md"
  workloads.refuse_existing(False, str(page), "")  # Nothing there yet: fine.
  page.write_text("finished")
  with pytest.raises(SystemExit) as e:
    workloads.refuse_existing(False, str(page))
  assert e.value.code == 2
  assert capsys.readouterr().err == (f"splitjax: error: {page} already exists; pass "
                                     "--overwrite to replace, or write elsewhere "
                                     "(--out_dir / --out)\n")
  workloads.refuse_existing(True, str(page))
  assert page.read_text() == "finished"


def test_gradmatch_without_private_features_is_refused_before_training():
  from splitjax import evaluation
  c = small_config(data__private_features=())
  c.attack.names = ("prior", "exact", "gradmatch")
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  with pytest.raises(ConfigError, match=r"attack.names: gradmatch optimises private "
                                        r"features, and data.private_features is empty"):
    evaluation.prepare(c, ds, model, training.make_spec(c, model, ds.train))


@pytest.mark.parametrize("where", ["file", "under_file", "unwritable"])
def test_unusable_tfds_dir_is_a_data_error(tmp_path, monkeypatch, where):
  from splitjax.data import builders
  (tmp_path / "afile").write_text("")
  tfds_dir = {"file": tmp_path / "afile", "under_file": tmp_path / "afile" / "x",
              "unwritable": tmp_path / "tfds"}[where]
  if where == "unwritable":  # Tests may run as root, whom chmod does not stop.
    def refuse(self, *args, **kwargs):
      raise PermissionError(13, "Permission denied", str(tfds_dir / "adult"))
    monkeypatch.setattr(builders.tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    pattern = r"data.tfds_dir: cannot prepare adult in .*tfds: Permission denied: "
  else:
    pattern = r"afile: data.tfds_dir \(.*\) is not a folder"
  c = small_config("adult", data__private_features=("sex",), data__tfds_dir=str(tfds_dir))
  with pytest.raises(DataError, match=pattern):
    data.load(c.data)
