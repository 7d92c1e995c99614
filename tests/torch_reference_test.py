"""The PyTorch references in benchmarks/ compute what splitjax computes.

torch is not a dependency: these tests skip where it does not import (CI has
none; `pip install torch` runs them).
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from attacks_test import _captured, numeric_run  # noqa: E402
from benchmarks import torch_reference as tr  # noqa: E402
from benchmarks import workloads as w  # noqa: E402
from conftest import small_config  # noqa: E402
from splitjax import training  # noqa: E402
from splitjax.attacks import exact, gradmatch, knowledge  # noqa: E402


def test_w1_reference_picks_the_exact_argmin():
  ds, model, views = _captured(small_config(data__synthetic__num_examples=1600), epochs=1)
  view = jax.tree.map(lambda a: a[:4], views[-1])
  space = knowledge.candidate_space(ds.schema, ())
  result = exact.attack(model, space, knowledge.Mechanism(0.0, 0.0), [view],
                        ds.train.num_examples)
  _, index = tr.w1(view, w.all_candidates(space), repeats=1, record_chunk=16)
  assert index.shape == (view.ids.size,)
  assert w.w1_agreement(space, view, result, index) == 1.0


def test_w3_reference_trains_like_splitjax():
  # Same data, model, initial params, batch and clip (0.1, no noise), one
  # epoch: torch's test AUC is splitjax's up to the data order.
  c = small_config(data__synthetic__num_examples=6400)
  ds, model, _ = _captured(c, epochs=1)
  spec = training.make_spec(c, model, ds.train)
  settings = training.make_settings([w.row(seed=0, clip=0.1)])
  trainer = training.Trainer(spec)
  train, test = jax.device_put(ds.train), jax.device_put(ds.test)
  init = trainer.init(train.y, settings)
  server, device = jax.tree.map(lambda a: a[0], (init.server_params, init.device_params))
  _, aucs = tr.w3(server, device, ds.train, ds.test, model.private_vocab_sizes,
                  spec.batch_size, spec.steps_per_epoch, 0.1, [(0.0, 0), (0.0, 1)], 1)
  state, _ = trainer.epoch(init, train, settings, np.int32(0))
  ours = float(trainer.evaluate(state, test, settings)["test_auc"][0])
  assert aucs.shape == (2,) and ours > 0.7, (aucs, ours)
  np.testing.assert_allclose(aucs, ours, atol=0.03)


def test_w4_reference_recovers_numeric_features():
  ds, model, views, aux = numeric_run()
  lo, hi = gradmatch.numeric_box(aux)
  view = views[-1]
  _, loss, x = tr.w4(view, 64, model.private_vocab_sizes, lo, hi, num_restarts=4,
                     num_steps=200, learning_rate=0.05, beta_start=2.0, beta_end=200.0,
                     repeats=1)
  ids = np.asarray(view.ids).reshape(-1)[:64]
  err = np.abs(x[:, 0] - ds.train.x_p_num[ids, 0])
  # splitjax's optimiser with the same settings (no hybrid enumeration, as in
  # the reference) on the same records: the two errors are alike.
  r = gradmatch.attack(model, ds.schema, knowledge.Mechanism(0.0, 0.0), view, aux,
                       ds.train.num_examples, num_restarts=4, num_steps=200,
                       learning_rate=0.05, max_records=64, hybrid=False,
                       beta_start=2.0, beta_end=200.0, seed=0)
  ours = np.abs(r.num[ids, 0] - ds.train.x_p_num[ids, 0])
  assert np.isfinite(loss).all()
  assert np.median(err) < 0.3 and abs(np.median(err) - np.median(ours)) < 0.1, (
      np.median(err), np.median(ours))
