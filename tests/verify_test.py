"""splitjax.verify over the committed results (every table agrees with its
JSON), and over copies of them with one thing changed (each change is found);
scripts/verify_results.py's exit status and bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from splitjax import verify
from conftest import REPO

RESULTS = os.path.join(REPO, "results")
SWEEP = "bank_marketing/clip_only/cut_layer_norm/clip_norms/c0.3_plain"
ENERGY = "bank_marketing/clip_only/cut_layer_norm/label_dp/message_energy"


def _full_clone() -> bool:
  r = subprocess.run(["git", "-C", REPO, "rev-parse", "--is-shallow-repository"],
                     capture_output=True, text=True)
  return r.returncode == 0 and r.stdout.strip() == "false"


def test_committed_results_agree():
  repo = REPO if _full_clone() else None
  found = verify.check(RESULTS, repo)
  assert found.folders >= 100  # the walk reached the tree, not an empty folder
  assert found.problems == {}
  # The H100 run's config.json never came back from the lent machine
  # (results/adult/h100/README.md); everything else is checked.
  assert found.unchecked == {
      "adult/h100": ["the config hash and privacy_utility.md: no config.json"]}


def _copy(tmp_path, *folders):
  for f in folders:
    shutil.copytree(os.path.join(RESULTS, f), tmp_path / f)
  return tmp_path


def _edit(path, old, new):
  text = path.read_text()
  assert text.count(old) >= 1, f"{old!r} not in {path}"
  path.write_text(text.replace(old, new, 1))


def _json_edit(path, change):
  obj = json.loads(path.read_text())
  change(obj)
  path.write_text(json.dumps(obj))


def _sweep_edits():
  def csv_cell(d):  # one figure in the CSV, not in the JSON
    head, line = (d / "privacy_utility.csv").read_text().splitlines()[:2]
    cells = line.split(",")
    cells[head.split(",").index("test_auc")] = "0.999"
    _edit(d / "privacy_utility.csv", line, ",".join(cells))

  def json_mean(d):  # a mean that its per-seed values do not give
    def change(obj):
      obj["rows"][1]["test_auc"] += 0.01
    _json_edit(d / "privacy_utility.json", change)

  def md_cell(d):  # the undefended test AUC in the Markdown only
    md = d / "privacy_utility.md"
    line = next(x for x in md.read_text().splitlines() if x.startswith("| none |"))
    cells = line.split("|")
    cells[7] = " 0.9999 ± 0.0001 "
    _edit(md, line, "|".join(cells))

  def config_field(d):  # a config.json that is not the run's config
    def change(obj):
      obj["config"]["train"]["num_epochs"] = 30
    _json_edit(d / "config.json", change)

  def no_csv(d):
    (d / "privacy_utility.csv").unlink()

  return [("csv_cell", csv_cell, "privacy_utility.csv: server_only test_auc is '0.999'"),
          ("json_mean", json_mean, "privacy_utility.json: none test_auc is"),
          ("md_cell", md_cell, "privacy_utility.md line"),
          ("config_field", config_field, "config.json's config hashes to"),
          ("no_csv", no_csv, "no privacy_utility.csv")]


SWEEP_EDITS = _sweep_edits()


@pytest.mark.parametrize("name, edit, expected", SWEEP_EDITS,
                         ids=[e[0] for e in SWEEP_EDITS])
def test_a_changed_sweep_is_found(tmp_path, name, edit, expected):
  root = _copy(tmp_path, SWEEP)
  assert verify.check(str(root)).problems == {}  # the copy agrees, before the edit
  edit(root / SWEEP)
  problems = verify.check(str(root)).problems
  assert list(problems) == [SWEEP], name
  assert any(p.startswith(expected) for p in problems[SWEEP]), problems[SWEEP]


def test_changed_figures_beside_sweeps_are_found(tmp_path):
  root = _copy(tmp_path, ENERGY)
  shutil.copy(os.path.join(RESULTS, "bank_marketing", "prior_accuracy.json"), root)
  shutil.copy(os.path.join(RESULTS, "bank_marketing", "prior_accuracy.md"), root)
  assert verify.check(str(root)).problems == {}

  def energy(obj):
    obj["rows"][0]["per_seed"][0] += 1.0  # signal's per-seed values
    obj["rows"][1]["h_common_per_seed"][0] += 1.0  # any <x>_per_seed
  _json_edit(root / ENERGY / "message_energy.json", energy)
  md = root / ENERGY / "message_energy.md"
  row = next(x for x in md.read_text().splitlines() if x.startswith("| none | 3 |"))
  _edit(md, row, row.replace("| none | 3 | ", "| none | 3 | 9"))
  held = json.loads((root / "prior_accuracy.json").read_text())
  marital = f"{held['scores']['prior']['features']['marital']['accuracy']:.4f}"
  _edit(root / "prior_accuracy.md", f"| prior | {marital} |", "| prior | 0.0001 |")

  def confusion(obj):
    obj["scores"]["prior"]["label"]["confusion"][0][0] += 100
  _json_edit(root / "prior_accuracy.json", confusion)
  problems = verify.check(str(root)).problems
  energy, prior = problems[ENERGY], problems["."]
  assert any(p.startswith("message_energy.json: none epoch 1 signal") for p in energy)
  assert any(p.startswith("message_energy.json: h_common is") for p in energy)
  assert any(p.startswith("message_energy.md: no row '| none | 3 |") for p in energy)
  assert f"prior_accuracy.md: prior marital is 0.0001, its JSON {marital}" in prior
  assert any(p.startswith("prior_accuracy.json: accuracy") for p in prior)


def test_a_summary_is_checked_against_its_data_sets(tmp_path):
  _copy(tmp_path, "all_datasets")
  names = ("adult", "bank_marketing", "movielens_100k")
  for name in names:  # inside it, as a run writes them (links: not walked)
    os.symlink(os.path.join(RESULTS, name), tmp_path / "all_datasets" / name)
  assert verify.check(str(tmp_path)).problems == {}
  for name in names:  # beside it, as results/ holds them
    os.unlink(tmp_path / "all_datasets" / name)
    os.symlink(os.path.join(RESULTS, name), tmp_path / name)
  assert verify.check(str(tmp_path)).problems == {}
  summary = tmp_path / "all_datasets" / "summary.md"
  line = next(x for x in summary.read_text().splitlines() if x.startswith("| adult | none |"))
  _edit(summary, line, line.replace("| adult | none |", "| adult | none | 1 |"))
  (tmp_path / "movielens_100k").unlink()
  problems = verify.check(str(tmp_path)).problems["all_datasets"]
  assert problems == ["datasets.json names movielens_100k, whose privacy_utility.json "
                      "is neither inside nor beside this folder"]
  os.symlink(os.path.join(RESULTS, "movielens_100k"), tmp_path / "movielens_100k")
  problems = verify.check(str(tmp_path)).problems["all_datasets"]
  assert len(problems) == 1 and problems[0].startswith("summary.md line"), problems


@pytest.mark.skipif(not _full_clone(), reason="needs the full git history")
def test_commits_are_checked(tmp_path):
  root = _copy(tmp_path, SWEEP)
  held = json.loads((root / SWEEP / "privacy_utility.json").read_text())["git_commit"]
  assert verify.check(str(root), REPO).problems == {}

  def dirty(obj):
    obj["git_commit"] += "-dirty"
  _json_edit(root / SWEEP / "config.json", dirty)  # the tables do not show it
  (root / SWEEP / "other.json").write_text(json.dumps({"git_commit": "f" * 40}))
  # A README may name commits, never a made-up one (a config hash is 12 digits).
  invented = "1" + "f" * 39
  (root / SWEEP / "README.md").write_text(
      f"Run at {held[:7]} (config {'ab12' * 3}),\nand again at {invented}.\n")
  assert verify.check(str(root), REPO).problems[SWEEP] == [
      f"recorded commit {held}-dirty: made from uncommitted changes",
      f"recorded commit {'f' * 40}: not a commit of {REPO}",
      f"README.md line 2 names commit {invented}, not a commit of {REPO}"]


def _run(*args):
  return subprocess.run([sys.executable, "scripts/verify_results.py", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_script_exit_status(tmp_path):
  root = _copy(tmp_path, SWEEP)
  r = _run(f"--root={root}", "--nocheck_commits")
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.splitlines()[-1] == (f"1 result folders checked under {root}: "
                                       "0 disagreement(s) in 0 folder(s), 0 thing(s) "
                                       "not checked")
  (root / SWEEP / "privacy_utility.csv").unlink()
  r = _run(f"--root={root}", "--nocheck_commits")
  assert r.returncode == 1
  assert r.stdout.splitlines()[0] == (
      f"{root}/{SWEEP}: disagrees: no privacy_utility.csv (the sweep did not "
      "finish, or was copied without it)")


@pytest.mark.parametrize("args, line", [
    (["--root=/no/such/folder"], "--root: no such folder: /no/such/folder"),
    (["--root={tmp}"], "--root: {tmp} is not inside a git checkout; pass "
                       "--nocheck_commits to skip the commit check"),
    (["--root={tmp}", "--nocheck_commits"], "--root: no result folder (no JSON) under {tmp}"),
])
def test_script_bad_input(tmp_path, args, line):
  r = _run(*[a.format(tmp=tmp_path) for a in args])
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1] == "splitjax: error: " + line.format(tmp=tmp_path)
