"""scripts/seed_spread.py: known answers on a hand-made sweep table, the page it
writes, and bad input (one line, exit status 2, no page)."""

import json
import math
import subprocess
import sys

import pytest

from splitjax import report
from splitjax.errors import ConfigError, DataError
from conftest import REPO

ROWS = [  # Two settings of six seeds; "b" has two tight blocks far apart.
    {"setting": "a", "dataset": "toy", "seeds": "0 1 2 3 4 5",
     "per_seed": {"test_auc": [1, 2, 3, 4, 5, 6], "exact/label": [None] * 6}},
    {"setting": "b", "dataset": "toy", "seeds": "0 1 2 3 4 5",
     "per_seed": {"test_auc": [0.5] * 3 + [0.7] * 3, "exact/label": [0.9] * 6}},
]


def _sweep(folder, rows=ROWS):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "privacy_utility.json").write_text(json.dumps(
      {"rows": rows, "seeds": list(range(6)), "config_hash": "c0ffee",
       "git_commit": "abc123", "software": "jax test"}))
  return folder


def _run(*args):
  return subprocess.run([sys.executable, "scripts/seed_spread.py", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_seed_spread_known_answers():
  a, b, b_label = report.seed_spread(ROWS, ["test_auc", "exact/label"], 3)
  assert (a["setting"], b["setting"], b_label["setting"]) == ("a", "b", "b")  # "a"'s
  assert a["mean"] == 3.5 and a["sd"] == pytest.approx(math.sqrt(3.5))  # label: None.
  # t(0.975, 5) sqrt(3.5 / 6) over six seeds; t(0.975, 2) / sqrt(3) per block of 3.
  assert a["half"] == pytest.approx(1.9633143, rel=1e-6)
  assert a["block_halves"] == pytest.approx([2.4841377, 2.4841377], rel=1e-6)
  assert a["blocks"] == ["0 1 2", "3 4 5"] and a["blocks_missing"] == 0
  assert a["blocks_missing_zero_width"] == 0
  # Each block of "b" is constant: a zero-width interval that misses the mean 0.6.
  assert b["mean"] == pytest.approx(0.6)
  assert b["block_halves"] == pytest.approx([0.0, 0.0], abs=1e-12)
  assert b["blocks_missing"] == 2 and b["sd"] == pytest.approx(math.sqrt(0.012))
  assert b["blocks_missing_zero_width"] == 2  # Both misses are of that kind.
  assert b_label["sd"] == 0.0 and b_label["blocks_missing"] == 0
  assert b_label["blocks_missing_zero_width"] == 0  # Zero-width, but on the mean.
  # One constant block and one spread one, both missing the mean 1.5.
  [c] = report.seed_spread([{"setting": "c", "seeds": "0 1 2 3 4 5", "per_seed": {
      "test_auc": [1.0, 1.0, 1.0, 2.0, 1.95, 2.05]}}], ["test_auc"], 3)
  assert c["blocks_missing"] == 2 and c["blocks_missing_zero_width"] == 1


def test_seeds_for():
  # t(0.975, n - 1) / sqrt(n): 1.049 at n = 6, 0.925 at n = 7.
  assert report.seeds_for(1.0, 1.0) == 7
  assert report.seeds_for(math.sqrt(3.5), 1.0) == 16
  assert report.seeds_for(0.0, 0.01) == 2
  assert report.seeds_for(1.0, 1e-3) is None  # Over a thousand seeds.


def test_bad_input_in_process(tmp_path):
  with pytest.raises(ConfigError, match=r"^--subset: blocks of 7 seeds, but the sweep has 6$"):
    report.seed_spread(ROWS, ["test_auc"], 7)
  with pytest.raises(ConfigError, match=r"^--metrics: no per-seed values for auc; the "
                     r"table has test_auc, exact/label$"):
    report.seed_spread(ROWS, ["auc"], 3)
  (tmp_path / "summary.csv").write_text("x\n")
  with pytest.raises(DataError, match="it holds summary.csv, so pass one data set's folder"):
    report.read_sweep(str(tmp_path))
  (tmp_path / "privacy_utility.json").write_text('{"rows": [{"setting": "a"}]}')
  with pytest.raises(DataError, match="no rows with per-seed values"):
    report.read_sweep(str(tmp_path))


def test_script_writes_its_page_and_keeps_it(tmp_path):
  folder = _sweep(tmp_path / "sweep")
  r = _run(f"--workdir={folder}", "--half_width=1")
  assert r.returncode == 0, r.stderr[-2000:]
  page = (folder / "seed_spread.md").read_text()
  assert f"Command: `python scripts/seed_spread.py --workdir={folder} --half_width=1`" in page
  assert "config c0ffee, commit abc123, seeds 0 1 2 3 4 5; jax test." in page
  assert "| a | 3.5000 ± 1.9633 | 1.8708 | 2.4841, 2.4841 | 0/2 | 16 |" in page
  assert "| b | 0.9000 ± 0.0000 | 0.0000 | 0.0000, 0.0000 | 0/2 | 2 |" in page  # exact/label
  assert "| b | 0.6000 ± 0.1150 | 0.1095 | 0.0000, 0.0000 | 2/2 (2 zero-width) | " in page
  assert ("3 (metric, setting) pairs: 2 of 6 3-seed intervals miss the all-seeds mean "
          "(2 of them zero-width: the block's seeds agreed exactly); " in page)

  again = _run(f"--workdir={folder}")  # A finished page is refused and kept.
  assert again.returncode == 2
  assert again.stderr.strip().splitlines()[-1] == (
      f"splitjax: error: --out: {folder}/seed_spread.md already exists; pass "
      "--overwrite to replace it, or write elsewhere")
  assert (folder / "seed_spread.md").read_text() == page


@pytest.mark.parametrize("args, line", [
    (["--subset=7"], "--subset: blocks of 7 seeds, but the sweep has 6"),
    (["--metrics=auc"], "--metrics: no per-seed values for auc; the table has test_auc, "
                        "exact/label"),
    (["--subset=1"], "flag --subset=1: 1 is not integer >= 2"),
])
def test_script_bad_input_writes_nothing(tmp_path, args, line):
  folder = _sweep(tmp_path / "sweep")
  r = _run(f"--workdir={folder}", *args)
  assert r.returncode == 2, r.stderr[-2000:]
  assert line in r.stderr.strip().splitlines()[-1]
  assert not (folder / "seed_spread.md").exists()


def test_script_refuses_a_folder_without_a_sweep(tmp_path):
  r = _run(f"--workdir={tmp_path}")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
      f"splitjax: error: --workdir: no finished sweep in {tmp_path} (no "
      "privacy_utility.json)")
  assert list(tmp_path.iterdir()) == []


def test_script_reports_an_unwritable_out(tmp_path):
  folder = _sweep(tmp_path / "sweep")
  (tmp_path / "file").write_text("")  # --out's folder is a file: cannot be made.
  r = _run(f"--workdir={folder}", f"--out={tmp_path}/file/page.md")
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1] == (
      f"splitjax: error: --out: cannot write {tmp_path}/file/page.md: File exists")
