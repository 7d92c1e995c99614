"""scripts/train.py end to end: writes its files, never overwrites a result."""

import importlib.metadata
import json
import os
import subprocess
import sys

from conftest import REPO


def _train(workdir, tmp_path):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "train.py"),
       f"--config={REPO}/configs/adult.py:smoke",
       f"--config.data.tfds_dir={tmp_path / 'tfds'}", f"--workdir={workdir}"],
      capture_output=True, text=True, timeout=600)


def test_smoke_run_writes_config_and_metrics_and_refuses_rerun(tmp_path):
  workdir = tmp_path / "run"
  r = _train(workdir, tmp_path)
  assert r.returncode == 0, r.stderr[-2000:]
  config = json.loads((workdir / "config.json").read_text())
  assert config["config"]["data"]["name"] == "adult"
  assert len(config["config_hash"]) == 12 and config["git_commit"]
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r_["epoch"] for r_ in rows] == [1, 2]
  for row in rows:
    assert 0.5 < row["test_auc"] <= 1 and row["examples_per_second"] > 0
    assert {"config_hash", "seed", "git_commit", "auc_gain"} <= set(row)
    assert row["software"].startswith(f"jax {importlib.metadata.version('jax')}, ")
  assert "examples/s" in r.stderr and "epoch 2/2" in r.stderr

  before = (workdir / "metrics.jsonl").read_bytes()
  again = _train(workdir, tmp_path)
  assert again.returncode == 2
  assert "holds a finished result" in again.stderr
  assert (workdir / "metrics.jsonl").read_bytes() == before
