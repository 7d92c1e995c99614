"""Attack throughput: EXACT (candidates/s) and the optimiser (record-restart-its/s).

  python -m benchmarks.attack_throughput [--out=results/benchmarks/attacks_cpu.md]

Workloads (Adult, default model: cut 64, device head 128 ReLU, 1 logit):
- EXACT: 4,096 records (16 steps x 256 of a captured epoch), private sex,
  race, relationship, marital-status: 420 combinations x 2 labels = 840
  candidates per record.
- Optimiser: 256 records x 8 restarts x 500 Adam steps, age and
  hours-per-week private (plus sex, race relaxed), no hybrid enumeration.
Each is compared, in the same run, with a per-record Python loop that calls a
jitted single-record function. Median of --repeats timed runs after warm-up.
"""

import math
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from splitjax import configlib, data, evaluation, models, training, workdir
from splitjax.attacks import exact, gradmatch, knowledge

_OUT = flags.DEFINE_string("out", "", "Markdown file to write (optional).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement.")

ROW = dict(seed=0, clip_norm=0.0, noise_stddev=0.0, label_epsilon=math.inf,
           use_private=1.0)


def _timed(fn):
  fn()  # warm-up (compile)
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _capture(private, steps):
  c = configlib.base_config()
  c.data.name = "adult"
  c.data.private_features = private
  c.view.capture = True
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  spec = training.make_spec(c, model, ds.train)
  _, _, views = training.train(training.Trainer(spec), jax.device_put(ds.train),
                               jax.device_put(ds.test), training.make_settings([ROW]), 1)
  view = jax.tree.map(lambda a: a[0, :steps], views[0])
  return ds, model, view


def bench_exact():
  ds, model, view = _capture(("marital-status", "relationship", "race", "sex"), 16)
  space = knowledge.candidate_space(ds.schema, ())
  mech = knowledge.Mechanism(0.0, 0.0)
  n = ds.train.num_examples
  records = int(view.ids.size)
  batched = _timed(lambda: exact.attack(model, space, mech, [view], n,
                                        chunk_candidates=420))
  p = space.encode(space.digits(jnp.arange(space.size)))

  @jax.jit
  def one_record(params, h, m):
    rec_pre = models.head_record_pre(model, params, h)
    cand_pre = models.head_private_pre(model, params, p)
    w_h = models.head_w_h(model, params)
    msgs = jax.vmap(exact.candidate_messages, (None, None, None, None, 0, None))(
        model, params, rec_pre, w_h, cand_pre, 2)
    return exact.score(m, msgs, "l2").argmin()

  steps, b = view.ids.shape
  params = [jax.tree.map(lambda a: a[s, 0], view.device_params) for s in range(steps)]

  def loop():
    out = None
    for s in range(steps):
      for i in range(b):
        out = one_record(params[s], view.h[s, i], view.messages[s, i])
    jax.block_until_ready(out)

  looped = _timed(loop)
  cands = records * space.size * space.num_labels
  return dict(records=records, candidates=space.size * space.num_labels,
              batched_s=batched, loop_s=looped, batched_rate=cands / batched,
              loop_rate=cands / looped)


def bench_optimiser(num_records=256, restarts=8, steps=500):
  ds, model, view = _capture(("age", "hours-per-week", "race", "sex"), 1)
  _, aux, _ = evaluation.split_aux(ds.train, 0.1, 0)
  mech = knowledge.Mechanism(0.0, 0.0)
  n = ds.train.num_examples
  kw = dict(num_restarts=restarts, num_steps=steps, learning_rate=0.05, hybrid=False,
            beta_start=2.0, beta_end=200.0, seed=0)
  batched = _timed(lambda: gradmatch.attack(model, ds.schema, mech, view, aux, n,
                                            max_records=num_records, **kw))
  loop_records = 16  # The loop is slow; time 16 records and scale.

  def loop():
    for i in range(loop_records):
      one = view._replace(ids=view.ids[:, i:i + 1], h=view.h[:, i:i + 1],
                          messages=view.messages[:, i:i + 1],
                          param_index=view.param_index[:, i:i + 1])
      gradmatch.attack(model, ds.schema, mech, one, aux, n, max_records=1,
                       batch_records=1, **kw)

  looped = _timed(loop) * num_records / loop_records
  its = num_records * restarts * steps
  return dict(records=num_records, restarts=restarts, steps=steps, batched_s=batched,
              loop_s=looped, batched_rate=its / batched, loop_rate=its / looped)


def main(argv):
  del argv
  e = bench_exact()
  o = bench_optimiser()
  device = jax.devices()[0]
  text = "\n".join([
      "# Attack throughput",
      "",
      f"Command: `python -m benchmarks.attack_throughput --repeats={_REPEATS.value}`  ",
      f"Machine: {device.platform} {getattr(device, 'device_kind', '')}, "
      f"{platform.machine()}, jax {jax.__version__}; commit {workdir.git_commit()}  ",
      "Median of repeated runs after warm-up; the loop calls a jitted single-record "
      "function once per record.",
      "",
      "| workload | batched | per-record loop | ratio |",
      "| --- | ---: | ---: | ---: |",
      f"| EXACT, {e['records']:,} records x {e['candidates']} candidates "
      f"(candidates/s) | {e['batched_rate']:.3g} | {e['loop_rate']:.3g} | "
      f"{e['loop_s'] / e['batched_s']:.1f}x |",
      f"| optimiser, {o['records']} records x {o['restarts']} restarts x {o['steps']} "
      f"steps (record-restart-its/s) | {o['batched_rate']:.3g} | {o['loop_rate']:.3g} | "
      f"{o['loop_s'] / o['batched_s']:.1f}x |",
      "",
      "The optimiser's loop time is measured on 16 records and scaled to 256.",
  ]) + "\n"
  print(text)
  if _OUT.value:
    workdir.write_text(_OUT.value, text)


if __name__ == "__main__":
  app.run(main)
