"""Eight CPU devices give the one-device numbers: the setting axis of a
sweep, and the record axes of EXACT and of the optimiser, sharded."""

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO
from splitjax import sweep
from sweep_test import _grid_config, assert_rows_close


def test_eight_cpu_devices_give_the_one_device_table(tmp_path):
  eight = tmp_path / "eight"
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
      import jax
      assert jax.device_count() == 8, jax.devices()
      from splitjax import sharding, sweep
      assert sharding.mesh().size == 8
      from sweep_test import _grid_config
      sweep.run(_grid_config(), {str(eight)!r})
      """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  sweep.run(_grid_config(), str(tmp_path / "one"))
  rows = json.loads((eight / "privacy_utility.json").read_text())["rows"]
  one = json.loads((tmp_path / "one" / "privacy_utility.json").read_text())["rows"]
  assert_rows_close(rows, one)


def _gradmatch_inputs():
  from attacks_test import _captured
  from conftest import small_config
  from splitjax import evaluation
  c = small_config(data__private_features=("p_cat_0", "p_num_0"),
                   data__synthetic__num_private_numeric=1,
                   data__synthetic__num_examples=1600)
  ds, model, views = _captured(c, epochs=1)
  _, aux, _ = evaluation.split_aux(ds.train, 0.2, 0)
  return ds, model, views[-1], aux


def _gradmatch(ds, model, view, aux):
  from splitjax.attacks import gradmatch, knowledge
  return gradmatch.attack(model, ds.schema, knowledge.Mechanism(0.0, 0.0), view, aux,
                          ds.train.num_examples, num_restarts=4, num_steps=100,
                          learning_rate=0.05, max_records=64, hybrid=True,
                          beta_start=2.0, beta_end=200.0, seed=0, batch_records=32)


def test_optimiser_records_sharded_over_eight_devices(tmp_path):
  # The 8-device process trains, saves its view, and attacks it sharded; this
  # process attacks the same view on one device.
  import jax
  import numpy as np
  out = tmp_path / "eight.npz"
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
      import jax, numpy as np
      assert jax.device_count() == 8
      from sharding_test import _gradmatch_inputs, _gradmatch
      ds, model, view, aux = _gradmatch_inputs()
      r = _gradmatch(ds, model, view, aux)
      leaves = jax.tree.leaves(view)
      np.savez({str(out)!r}, cat=r.cat, num=r.num, label=r.label, seen=r.seen,
               **{{f"v{{i}}": np.asarray(a) for i, a in enumerate(leaves)}})
      """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  held = np.load(out)
  ds, model, view, aux = _gradmatch_inputs()
  leaves, tree = jax.tree.flatten(view)
  view = jax.tree.unflatten(tree, [held[f"v{i}"] for i in range(len(leaves))])
  one = _gradmatch(ds, model, view, aux)
  seen = held["seen"]
  assert seen.sum() == 64 and (one.seen == seen).all()
  np.testing.assert_array_equal(one.cat[seen], held["cat"][seen])
  np.testing.assert_array_equal(one.label[seen], held["label"][seen])
  # Sharded, each device multiplies fewer rows, so the matmuls round
  # differently, and 100 Adam steps carry that into the optimum found: one
  # record of 64 once ended 8e-4 apart (normalised units, values ~1).
  np.testing.assert_allclose(one.num[seen], held["num"][seen], atol=5e-3)
