"""Training throughput on Adult (batch 256): one scan per epoch vs a Python loop.

  python -m benchmarks.train_throughput [--epochs=3] [--out=results/benchmarks/train_cpu.md]

Both drivers run the same jitted SL step (`training.sl_step`) on the same data,
in the same process: (a) `Trainer.epoch`, one compiled `lax.scan` per epoch;
(b) a Python loop that dispatches the jitted step once per batch. Each is
warmed up (compiled) first, then timed over --epochs epochs; the median epoch
is reported, as examples/s and as the ratio (a)/(b).
"""

import functools
import math
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from splitjax import configlib, data, models, training, workdir

_EPOCHS = flags.DEFINE_integer("epochs", 3, "Timed epochs per driver.")
_OUT = flags.DEFINE_string("out", "", "Markdown file to write (optional).")

ROW = dict(seed=0, clip_norm=0.0, noise_stddev=0.0, label_epsilon=math.inf,
           use_private=1.0)


def adult_config():
  c = configlib.base_config()
  c.data.name = "adult"
  c.data.private_features = ("marital-status", "relationship", "race", "sex")
  c.train.batch_size = 256
  return c


def time_scan(trainer, train, settings, epochs):
  state = trainer.init(train.y, settings)
  state, out = trainer.epoch(state, train, settings, np.int32(0))  # compile
  jax.block_until_ready(out)
  times = []
  for e in range(epochs):
    start = time.perf_counter()
    state, out = trainer.epoch(state, train, settings, np.int32(e + 1))
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_loop(spec, train, setting, epochs):
  keys = training.setting_keys(setting)
  step = jax.jit(functools.partial(training.sl_step, spec, train, setting, keys.noise),
                 donate_argnums=1)
  state = training.init_state(spec, train.y, setting)
  steps, b = spec.steps_per_epoch, spec.batch_size

  def epoch(state, e):
    perm = jax.random.permutation(jax.random.fold_in(keys.data, e), spec.num_train)
    idx = perm[:steps * b].reshape(steps, b)
    for s in range(steps):
      state, (loss, _) = step(jnp.int32(e), state, idx[s])
    jax.block_until_ready(loss)
    return state

  state = epoch(state, 0)  # compile
  times = []
  for e in range(epochs):
    start = time.perf_counter()
    state = epoch(state, e + 1)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  c = adult_config()
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  spec = training.make_spec(c, model, ds.train)
  trainer = training.Trainer(spec)
  train = jax.device_put(ds.train)
  settings = training.make_settings([ROW])
  setting = jax.tree.map(lambda a: a[0], settings)
  scan_s = time_scan(trainer, train, settings, _EPOCHS.value)
  loop_s = time_loop(spec, train, setting, _EPOCHS.value)
  n = spec.examples_per_epoch
  device = jax.devices()[0]
  lines = [
      "# Training throughput: Adult, SL, batch 256",
      "",
      f"Command: `python -m benchmarks.train_throughput --epochs={_EPOCHS.value}`  ",
      f"Machine: {device.platform} {getattr(device, 'device_kind', '')}, "
      f"{platform.processor() or platform.machine()}, jax {jax.__version__}; "
      f"commit {workdir.git_commit()}  ",
      f"Model: server tower {tuple(c.model.server_hidden)} -> cut {c.model.cut_dim}, "
      f"device head {tuple(c.model.device_hidden)}; {spec.steps_per_epoch} steps, "
      f"{n} examples per epoch; median of {_EPOCHS.value} epochs after warm-up.",
      "",
      "| driver | s/epoch | examples/s |",
      "| --- | ---: | ---: |",
      f"| one `lax.scan` per epoch (`Trainer.epoch`) | {scan_s:.3f} | {n / scan_s:,.0f} |",
      f"| Python loop, one jitted step per batch | {loop_s:.3f} | {n / loop_s:,.0f} |",
      "",
      f"Ratio scan / loop: **{loop_s / scan_s:.2f}x**",
  ]
  text = "\n".join(lines) + "\n"
  print(text)
  if _OUT.value:
    workdir.write_text(_OUT.value, text)


if __name__ == "__main__":
  app.run(main)
