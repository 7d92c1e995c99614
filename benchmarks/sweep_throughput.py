"""A vmapped group of settings vs the same settings one after another.

  python -m benchmarks.sweep_throughput [--repeats=3] [--capture] \
      [--out=results/benchmarks/sweep_cpu.md]

Workload (issue 5 acceptance, W3 of issue 6): 16 settings = 4 noise
multipliers (0.5, 1, 2, 4; clip norm 0.1) x 4 seeds, SL on Adult's training
split (batch 256, default model), 1 epoch plus the test evaluation. Both
drivers use the same compiled code paths (`training.Trainer`), warmed up
(compiled) before timing, in the same process:
(a) one program over all 16 settings (vmap over the leading setting axis);
(b) a 1-setting program called 16 times.
Reports the median wall time of each, the ratio (b)/(a), and the largest
difference between the two drivers' test AUCs. --capture also records the
server's view (as the sweep does).
"""

import math
import platform
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from splitjax import configlib, data, models, training, workdir

_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per driver.")
_CAPTURE = flags.DEFINE_bool("capture", False, "Capture the server's view too.")
_OUT = flags.DEFINE_string("out", "", "Markdown file to write (optional).")

SIGMAS = (0.5, 1.0, 2.0, 4.0)
SEEDS = (0, 1, 2, 3)
CLIP = 0.1


def rows():
  return [dict(seed=s, clip_norm=CLIP, noise_stddev=sigma * CLIP,
               label_epsilon=math.inf, use_private=1.0)
          for sigma in SIGMAS for s in SEEDS]


def run_group(trainer, train, test, settings):
  state = trainer.init(train.y, settings)
  state, out = trainer.epoch(state, train, settings, np.int32(0))
  evals = trainer.evaluate(state, test, settings)
  return np.asarray(jax.device_get(evals["test_auc"]))


def timed(fn, repeats):
  result = fn()  # warm-up (compile)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), result


def main(argv):
  del argv
  c = configlib.base_config()
  c.data.name = "adult"
  c.data.private_features = ("marital-status", "relationship", "race", "sex")
  c.view.capture = _CAPTURE.value
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  spec = training.make_spec(c, model, ds.train)
  train, test = jax.device_put(ds.train), jax.device_put(ds.test)
  trainer = training.Trainer(spec)
  all_rows = rows()
  group = training.make_settings(all_rows)
  singles = [training.make_settings([r]) for r in all_rows]

  vmapped_s, auc_v = timed(lambda: run_group(trainer, train, test, group),
                           _REPEATS.value)
  seq_s, auc_s = timed(lambda: np.concatenate(
      [run_group(trainer, train, test, s) for s in singles]), _REPEATS.value)
  n = len(all_rows)
  examples = spec.examples_per_epoch * n
  diff = float(np.max(np.abs(auc_v - auc_s)))
  device = jax.devices()[0]
  text = "\n".join([
      "# Sweep throughput: one vmapped group vs one setting at a time",
      "",
      f"Command: `python -m benchmarks.sweep_throughput --repeats={_REPEATS.value}"
      f"{' --capture' if _CAPTURE.value else ''}`  ",
      f"Machine: {device.platform} {getattr(device, 'device_kind', '')}, "
      f"{platform.machine()}, {jax.local_device_count()} device(s), jax "
      f"{jax.__version__}; commit {workdir.git_commit()}  ",
      f"Workload: {n} settings (sigma {', '.join(f'{s:g}' for s in SIGMAS)} x seeds "
      f"{', '.join(map(str, SEEDS))}), Adult SL, batch {spec.batch_size}, 1 epoch "
      f"({spec.examples_per_epoch:,} examples per setting) + test evaluation"
      f"{', view capture on' if _CAPTURE.value else ''}. Median of "
      f"{_REPEATS.value} timed runs after warm-up.",
      "",
      "| driver | wall time (s) | examples/s | settings/s |",
      "| --- | ---: | ---: | ---: |",
      f"| vmapped group of {n} | {vmapped_s:.2f} | {examples / vmapped_s:,.0f} | "
      f"{n / vmapped_s:.2f} |",
      f"| {n} one after another | {seq_s:.2f} | {examples / seq_s:,.0f} | "
      f"{n / seq_s:.2f} |",
      "",
      f"Speed-up of the vmapped group: **{seq_s / vmapped_s:.2f}x**. Largest "
      f"|test AUC (vmapped) - test AUC (one by one)| over the {n} settings: "
      f"{diff:.2e}.",
  ]) + "\n"
  print(text)
  if _OUT.value:
    workdir.write_text(_OUT.value, text)


if __name__ == "__main__":
  app.run(main)
