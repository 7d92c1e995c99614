"""Each Bayes prior alone (scripts/prior_accuracy.py): known answers."""

import os
import subprocess
import sys

import pytest

from splitjax import evaluation
from splitjax import workdir as workdir_lib
from splitjax.errors import ConfigError
from conftest import REPO, small_config


def test_each_prior_alone_gives_its_known_answer_and_the_chain_gains(tmp_path):
  # With no release, a factorised prior's marginal MAP is each table's own
  # argmax: 'server_model' must score exactly what the server-model baseline
  # does, 'marginal' what the most-frequent-value baseline does, and
  # 'label_given_private' the server model's features. With private_chain 6
  # the second private feature leans to the first's value, so the chain's
  # MAP candidate gets both (and the label) right more often: measured all
  # correct 0.403 against 0.350 for the server model. A single feature's
  # marginal need not gain: the chain's first link is a fit of its own on
  # 240 aux rows (p_cat_0 0.501 against the server model's 0.539).
  c = small_config(data__synthetic__private_chain=6.0)
  workdir = str(tmp_path / "w")
  res = evaluation.prior_accuracy(c, workdir)["scores"]
  acc = lambda guess, f: (res[guess]["label"] if f == "label"
                          else res[guess]["features"][f])["accuracy"]
  for f in ("p_cat_0", "p_cat_1", "label"):
    assert acc("bayes/server_model", f) == acc("server_model", f)
    assert acc("bayes/marginal", f) == acc("prior", f)
  for f in ("p_cat_0", "p_cat_1"):
    assert acc("bayes/label_given_private", f) == acc("server_model", f)
  assert res["bayes/server_model"]["all_correct"] == res["server_model"]["all_correct"]
  assert res["bayes/chain"]["all_correct"] > res["server_model"]["all_correct"] + 0.03
  page = open(os.path.join(workdir, "prior_accuracy.md")).read()
  assert "| bayes/chain |" in page and "| server_model |" in page
  assert page.startswith(f"Command: `{workdir_lib.command_line()}`")
  with pytest.raises(ConfigError, match="prior_accuracy.json"):
    evaluation.prior_accuracy(c, workdir)
  assert open(os.path.join(workdir, "prior_accuracy.md")).read() == page


def test_private_numerics_are_refused_in_one_line_before_any_output(tmp_path):
  workdir = tmp_path / "w"
  r = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "prior_accuracy.py"),
       f"--config={REPO}/configs/synthetic.py:smoke",
       "--config.data.synthetic.num_private_numeric=1",
       "--config.data.private_features=('p_cat_0','p_num_0')",
       "--config.attack.exact.numeric_grids=('p_num_0:-2:2:1',)", f"--workdir={workdir}"],
      capture_output=True, text=True, cwd=tmp_path, timeout=600,
      env={**os.environ, "PYTHONPATH": REPO})
  assert r.returncode == 2, r.stderr[-2000:]
  errors = [l for l in r.stderr.splitlines() if l.startswith("splitjax: error:")]
  assert errors == ["splitjax: error: data.private_features: prior_accuracy scores "
                    "categoricals; ['p_num_0'] are numeric"], r.stderr[-2000:]
  assert not workdir.exists() or not os.listdir(workdir)
