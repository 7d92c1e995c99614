"""Each Bayes prior alone (scripts/prior_accuracy.py): known answers."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from splitjax import data, evaluation, models, training
from splitjax.attacks import exact
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
  # The whole commit, '-dirty' mark included (it was cut to 12 characters).
  assert f"commit {workdir_lib.git_commit()};" in page
  with pytest.raises(ConfigError, match="prior_accuracy.json"):
    evaluation.prior_accuracy(c, workdir)
  assert open(os.path.join(workdir, "prior_accuracy.md")).read() == page


def test_a_private_numeric_without_a_grid_is_refused_in_one_line_before_any_output(
    tmp_path):
  workdir = tmp_path / "w"
  r = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "prior_accuracy.py"),
       f"--config={REPO}/configs/synthetic.py:smoke",
       "--config.data.synthetic.num_private_numeric=1",
       "--config.data.private_features=('p_cat_0','p_num_0')", f"--workdir={workdir}"],
      capture_output=True, text=True, cwd=tmp_path, timeout=600,
      env={**os.environ, "PYTHONPATH": REPO})
  assert r.returncode == 2, r.stderr[-2000:]
  errors = [l for l in r.stderr.splitlines() if l.startswith("splitjax: error:")]
  assert errors == ["splitjax: error: attack.exact.numeric_grids: no grid for numeric "
                    "private features ['p_num_0']; add 'name:lo:hi:step'"], r.stderr[-2000:]
  assert not workdir.exists() or not os.listdir(workdir)


def test_private_numerics_are_scored_by_each_priors_median(tmp_path):
  # A numeric's prior is a Laplace around the server model's regression
  # ('server_model', 'label_given_private', 'chain') or the aux sample's
  # values on the grid ('marginal'); with no release each guess is that
  # prior's median, a grid value next to the regression, or next to the aux
  # sample's median. Measured MAE (sd): server model 0.6357, the three
  # Laplace priors' medians 0.6305; aux median 0.8062, 'marginal' 0.8060.
  # Tolerance 0.05 sd (the grid's step is 0.25; a uniform prior's median
  # would be 0.17 off).
  c = small_config(data__private_features=("p_cat_0", "p_num_0"),
                   data__synthetic__num_private_numeric=1,
                   attack__exact__numeric_grids=("p_num_0:-3:3:0.25",))
  workdir = tmp_path / "w"
  res = evaluation.prior_accuracy(c, str(workdir))["scores"]
  mae = lambda guess: res[guess]["features"]["p_num_0"]["mae_std"]
  for kind in ("server_model", "label_given_private", "chain"):
    assert abs(mae(f"bayes/{kind}") - mae("server_model")) < 0.05, (kind, res)
  assert abs(mae("bayes/marginal") - mae("prior")) < 0.05, res
  assert mae("server_model") < mae("prior") - 0.1, res  # x_s tells about p_num_0
  page = (workdir / "prior_accuracy.md").read_text()
  assert "| p_cat_0 | p_num_0 (MAE, sd) | p_num_0 (within 1/2) | label |" in page


def test_prior_guess_over_a_numeric_grid_keeps_the_factorised_answers():
  # The audit's kappa is held to Bayes's prior alone (evaluation.prepare).
  # Over a numeric grid, whose prior is uniform, the 'server_model' prior's
  # marginal MAP is still the server model's argmax, label included, and
  # 'label_given_private' keeps its categoricals (summing out y leaves the
  # server model's table). Tolerance 0.5 % of the targets for float near-ties
  # between two values; measured: none. Blocks of 7 records (padded) give
  # what blocks of 512 do. The numeric's prior is a Laplace around the
  # server model's regression, so its pick, the median, is the grid value
  # next to that regression wherever it lies inside the grid. (Under a
  # uniform prior the marginal MAP, the argmax, let rounding pick another
  # value for 792 of 1,152 records.)
  c = small_config(data__private_features=("p_cat_0", "p_num_0"),
                   data__synthetic__num_private_numeric=1,
                   data__synthetic__num_examples=1600)
  c.attack.names = ("prior", "server_model", "bayes_exact")
  c.attack.exact.numeric_grids = ("p_num_0:-2:2:0.5",)
  c.attack.bayes.prior = "label_given_private"
  c.attack.server_model.num_steps = 100
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  ctx = evaluation.prepare(c, ds, model, training.make_spec(c, model, ds.train))
  t, sm = ctx.targets, ctx.server_model
  assert ctx.space.size == ds.schema.private_categorical[0].vocab_size * 9
  agree = lambda a, b: float(np.mean(a[t] == b[t]))
  cat, num, label, (map_cat, map_label), _ = evaluation.prior_guess(ctx, "server_model",
                                                                    ctx.space)
  assert cat.shape == (ds.train.num_examples, 1) and not cat[~t].any()
  assert agree(cat[:, 0], sm.cat[:, 0]) >= 0.995
  assert agree(label, sm.label) >= 0.995
  assert agree(map_cat[:, 0], sm.cat[:, 0]) >= 0.995
  cat, _, label, _, _ = evaluation.prior_guess(ctx, "label_given_private", ctx.space)
  assert agree(cat[:, 0], sm.cat[:, 0]) >= 0.995
  rows = np.flatnonzero(t)
  prior = evaluation._bayes_prior(ctx)
  small, big = (evaluation.prior_marginals(prior, ctx.space, rows, b) for b in (7, 512))
  for a, b in zip(small, big):
    np.testing.assert_array_equal(a, b)
  grid, center = np.asarray(ctx.space.grids[0]), sm.num[rows, 0]
  inside = np.abs(center) < 1.0  # the grid spans about +-2 sd
  assert inside.mean() > 0.5
  np.testing.assert_array_less(np.abs(grid[big[0][:, 1]] - center)[inside],
                               grid[1] - grid[0] + 1e-6)
  got = evaluation.score(ds.schema, ds.train, None, t, cat, None, label)
  assert ctx.best_guess["label"] >= got["label"]["accuracy"]
  assert ctx.best_guess["p_cat_0"] >= got["features"]["p_cat_0"]["accuracy"]
  # prior_marginals evaluates the categoricals' factors once per combination
  # of categoricals and only the label's (which reads the numeric) over the
  # whole space: it must give what the joint log prior the attack itself
  # uses (exact.log_prior_of, every candidate) gives, summed by brute force.
  # The numeric's window pick is the grid value whose half-unit window
  # (0.5 in the feature's own units: on this grid of step 0.5, the value and
  # its neighbour on each side) holds the most mass, near-ties to the value
  # with the most mass of its own.
  space, few = ctx.space, rows[:64]
  digits = space.digits(jnp.arange(space.size))
  d = np.asarray(digits)
  for kind in ("chain", "label_given_private"):
    prior = evaluation._bayes_prior(ctx, kind)
    lp = np.asarray(exact.log_prior_of(exact.prior_rows(prior, jnp.asarray(few)), digits,
                                       space.encode(digits)), np.float64)   # [R, C, K]
    post = np.exp(lp - lp.max((1, 2), keepdims=True))
    post /= post.sum((1, 2), keepdims=True)
    by_cat = np.stack([post[:, d[:, 0] == v].sum((1, 2)) for v in range(space.radices[0])], 1)
    by_num = np.stack([post[:, d[:, 1] == v].sum((1, 2)) for v in range(space.radices[1])], 1)
    flat = post.reshape(len(few), -1).argmax(-1)
    raw = np.asarray(space.raw_grids[0])
    held = by_num @ (np.abs(raw[:, None] - raw[None]) <= 0.5 + 1e-6)
    window = np.where(held >= held.max(-1, keepdims=True) - 1e-6, by_num, -1).argmax(-1)
    want = (np.stack([by_cat.argmax(-1), (np.cumsum(by_num, -1) >= 0.5 - 1e-4).argmax(-1)], 1),
            window[:, None], post.sum(1).argmax(-1), d[flat // 2, 0], flat % 2)
    marg, in_window, lab, map_cat, map_label = evaluation.prior_marginals(prior, space,
                                                                          few, 16)
    for a, b in ((marg, want[0]), (in_window, want[1]), (lab, want[2]),
                 (map_cat[:, 0], want[3]), (map_label, want[4])):
      np.testing.assert_array_equal(a, b, err_msg=kind)
    assert len(np.unique(lab)) == 2  # the label's marginal is not one value for all
