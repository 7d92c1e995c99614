"""Eight CPU devices, or two processes (hosts) on this machine, give the
one-device numbers: the setting axis of a sweep (training and EXACT), and the
record axes of EXACT (fewer settings than devices) and of the optimiser,
sharded."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from splitjax import sweep
from sweep_test import _grid_config, assert_rows_close


def _eight_devices() -> dict:
  """The environment of a process with 8 CPU devices (keeping the caller's
  other XLA flags, e.g. conftest's)."""
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  return dict(os.environ, XLA_FLAGS=flags.strip())


@pytest.fixture(scope="module")
def one_device_rows(tmp_path_factory):
  folder = tmp_path_factory.mktemp("one")
  sweep.run(_grid_config(), str(folder))
  return json.loads((folder / "privacy_utility.json").read_text())["rows"]


def test_eight_cpu_devices_give_the_one_device_table(tmp_path, one_device_rows):
  eight = tmp_path / "eight"
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
      import jax
      assert jax.device_count() == 8, jax.devices()
      from absl import logging
      logging.set_verbosity(logging.INFO)
      from splitjax import sharding, sweep
      assert sharding.mesh().size == 8
      from sweep_test import _grid_config
      sweep.run(_grid_config(), {str(eight)!r})
      sweep.run(_grid_config(sweep__max_group_size=4), {str(eight) + "_small"!r})
      """)
  env = _eight_devices()
  r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  # EXACT spreads 8 attacked settings over the 8 devices, one each; in the
  # batches of 4 runs it has fewer settings than devices and spreads records.
  assert "EXACT: 8 settings over 8 devices" in r.stderr
  for folder in (eight, tmp_path / "eight_small"):
    rows = json.loads((folder / "privacy_utility.json").read_text())["rows"]
    assert_rows_close(rows, one_device_rows)


@pytest.mark.parametrize("weights,hosts,loads", [
    ([0] * 3 + [1] * 24, [0, 1], [12, 12]),  # The main command on two hosts.
    ([0] * 3 + [1] * 24, list(range(8)), [4, 4, 4, 3, 3, 3, 3, 0]),  # Blocks of 4.
    ([0] * 2 + [1] * 8, [0, 1], [4, 4]),
    ([5, 1, 1, 1, 1, 1], [0, 1], [7, 3]),  # Blocks of 3: the 5 has two beside it.
    ([1] * 3, [0, 1, 2, 3], [1, 1, 1, 0]),
    # Two hosts of two devices, blocks of 3, the last device holds one row:
    # each host attacks 4 (per device alone would give the first host 5).
    ([0] * 2 + [1] * 8, [0, 0, 1, 1], [2, 2, 3, 1]),
    ([1] * 8, [0, 0, 0, 0], [2, 2, 2, 2]),  # One host: spread over its devices.
])
def test_balanced_order_evens_the_weight_per_host(weights, hosts, loads):
  from splitjax import sharding
  order = sharding.balanced_order(weights, hosts)
  assert sorted(order) == list(range(len(weights)))
  block = -(-len(weights) // len(hosts))
  got = [sum(weights[j] for j in order[i * block:(i + 1) * block])
         for i in range(len(hosts))]
  assert got == loads, order
  # A device's runs keep their order (a block is increasing).
  for i in range(len(hosts)):
    part = order[i * block:(i + 1) * block]
    assert part == sorted(part), order


def _free_port() -> int:
  try:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      return s.getsockname()[1]
  except OSError as e:
    pytest.skip(f"no loopback socket for jax.distributed ({e})")


def test_two_processes_give_the_one_process_table(tmp_path, one_device_rows):
  # Two JAX processes (one CPU device each) stand in for two hosts, each with
  # its own workdir, as on hosts without a shared file system: process 0
  # writes the table; process 1 writes nothing. Then a different config on
  # the same workdirs is refused on both (by process 0's workdir), not hung.
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
      import jax
      from absl import logging
      logging.set_verbosity(logging.INFO)
      jax.distributed.initialize("127.0.0.1:{_free_port()}", 2, int(sys.argv[1]))
      assert jax.device_count() == 2 and jax.local_device_count() == 1
      from splitjax import sweep
      from splitjax.errors import ConfigError
      from sweep_test import _grid_config
      # One host refuses a batch of 10 runs at this limit (sweep_test); each of
      # two holds 5 of them, which fit.
      sweep.run(_grid_config(sweep__max_view_gb=0.001), sys.argv[2])
      try:
        sweep.run(_grid_config(seed=7), sys.argv[2])
      except ConfigError as e:
        print("refused:", e)
      from conftest import small_config
      from splitjax import evaluation
      evaluation.run(small_config(), sys.argv[2] + "_attack")
      """)
  # The processes talk over loopback only: no proxy (gRPC would use one).
  env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
  procs = [subprocess.Popen([sys.executable, "-c", script, str(i), str(tmp_path / f"host{i}")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=600))
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    assert "refused: --workdir:" in out and "holds results of a different config" in out
  rows = json.loads((tmp_path / "host0" / "privacy_utility.json").read_text())["rows"]
  assert_rows_close(rows, one_device_rows)
  assert not (tmp_path / "host1").exists()  # No files, not even empty folders.
  assert "runs done" in outs[0][1] and "runs done" not in outs[1][1]  # Progress: process 0.
  # Each process attacked runs it trained, not all of them, and as many as
  # the other: the batch's two server-only runs (never attacked) come first,
  # so halves of the batch in its own order would give 3 and 5
  # (sharding.placement).
  keys = json.loads((tmp_path / "host0" / "config.json").read_text())["batches"][0]
  assert len(keys) == 10 and keys[0].startswith("server_only"), keys
  parts = []
  for i, (_, err) in enumerate(outs):
    assert f"process {i} attacks runs " in err, err[-3000:]
    line = err.split(f"process {i} attacks runs ")[1].splitlines()[0]
    parts.append(json.loads(line.split(" of ")[0]))
  assert sorted(parts[0] + parts[1]) == [i for i, k in enumerate(keys)
                                         if not k.startswith("server_only")], parts
  assert len(parts[0]) == len(parts[1]) == 4, parts
  # The attack job: process 1 trains half of the padded setting axis and
  # leaves the attack to process 0, whose numbers are one process's.
  from conftest import small_config
  from splitjax import evaluation
  one = evaluation.run(small_config(), str(tmp_path / "one_attack"))
  two = json.loads((tmp_path / "host0_attack" / "attack_metrics.json").read_text())
  assert not (tmp_path / "host1_attack").exists()
  for epoch, per in one["epochs"].items():
    for name, scores in per.items():
      if name == "ceilings":
        continue
      theirs = two["epochs"][epoch][name]
      for attr, entry in scores.get("features", {}).items():
        assert theirs["features"][attr]["accuracy"] == pytest.approx(
            entry["accuracy"], abs=0.002), (epoch, name, attr)
      if "label" in scores:
        assert theirs["label"]["accuracy"] == pytest.approx(
            scores["label"]["accuracy"], abs=0.002), (epoch, name)


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
  env = _eight_devices()
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
