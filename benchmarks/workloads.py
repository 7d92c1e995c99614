"""The reference workloads W1-W4 (issue 6), their references and FLOP counts.

No flags here: benchmarks/run.py and benchmarks/sweep_throughput.py drive
these. Every timing is the median of `repeats` runs after one warm-up run
(compilation), with the result blocked on.

- W1 EXACT: Adult, device head input h (d = 64) + one-hot of sex, race,
  relationship, marital-status; hidden 128 ReLU; 1 logit; 840 candidates
  (420 combinations x 2 labels) per record; 4,096 records (16 steps x 256 of
  a captured epoch).
- W2 training: SL on Adult's 32,561 training rows, batch 256, server tower
  [256, 256] -> cut 64, device head as W1, cut-layer clip + noise, 1 epoch.
- W3 sweep: 16 settings (sigma 0.5, 1, 2, 4 x seeds 0-3) of W2, vmapped (and
  sharded over the devices when there are several, as sweeps are).
- W4 optimiser: gradient matching on 1,024 records x 8 restarts x 500 Adam
  steps, Adult with age and hours-per-week private (plus sex and race).
"""

from __future__ import annotations

import functools
import math
import os
import platform
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from splitjax import cli, configlib, data, evaluation, models, protocol, training
from splitjax.attacks import exact, gradmatch, knowledge

CATEGORICALS = ("marital-status", "relationship", "race", "sex")
NUMERICS = ("age", "hours-per-week", "race", "sex")
CLIP, SIGMAS, SEEDS = 0.1, (0.5, 1.0, 2.0, 4.0), (0, 1, 2, 3)


def timed(fn, repeats: int) -> tuple[float, object]:
  result = fn()  # warm-up (compile)
  jax.block_until_ready(result)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    jax.block_until_ready(result)
    times.append(time.perf_counter() - start)
  return statistics.median(times), result


def adult(private, tfds_dir=None):
  c = configlib.base_config()
  c.data.name = "adult"
  c.data.private_features = private
  if tfds_dir:
    c.data.tfds_dir = tfds_dir
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  return c, ds, model


def row(seed=0, sigma=0.0, clip=0.0):
  return dict(seed=seed, clip_norm=clip, noise_stddev=sigma * clip,
              label_epsilon=math.inf, use_private=1.0)


# --- Machine ---------------------------------------------------------------


def cpu_model() -> tuple[str, str]:
  """(model name, family) of this CPU from /proc/cpuinfo; ('', '') elsewhere.

  The project's VMs have not always had the same host CPU (Intel Xeon until
  2026-11-25, AMD EPYC family 26 on 2026-12-03), and the ratios differ
  between them, so every figure names the CPU it ran on.
  """
  fields = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  return fields.get("model name", ""), fields.get("cpu family", "")


def refuse_existing(overwrite: bool, *paths: str) -> None:
  """Stops before a run whose page would replace one already there (a
  finished result is never overwritten unasked; git keeps committed ones)."""
  there = [p for p in paths if p and os.path.exists(p)]
  if there and not overwrite:
    cli.fail(f"{', '.join(there)} already {'exist' if len(there) > 1 else 'exists'}; "
             "pass --overwrite to replace, or write elsewhere (--out_dir / --out)")


def device_name() -> str:
  """e.g. cpu-amd-epyc-family26-2cores[-2devices], or the accelerator's kind.

  (The CPU files committed before 2026-12-03 are named cpu-x86_64-2cores:
  that VM had an Intel Xeon.)
  """
  d = jax.devices()[0]
  if d.platform == "cpu":
    model, family = cpu_model()
    slug = re.sub(r"\(r\)|\(tm\)|\bcpu\b|\bprocessor\b|@.*", "", model.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", slug).strip("-") or platform.machine()
    name = f"cpu-{slug}{f'-family{family}' if family else ''}-{os.cpu_count()}cores"
    return name + (f"-{jax.device_count()}devices" if jax.device_count() > 1 else "")
  return d.device_kind.lower().replace(" ", "-")


def machine_line() -> str:
  """One line naming the machine, for every benchmark page."""
  d = jax.devices()[0]
  if d.platform == "cpu":
    model, family = cpu_model()
    what = f"{model or platform.processor() or 'CPU'}{f' (family {family})' if family else ''}"
    return (f"Machine: {what}, {platform.machine()}, {os.cpu_count()} cores, "
            f"{jax.device_count()} JAX device(s), jax {jax.__version__}")
  return f"Machine: {d.device_kind}, {jax.device_count()} device(s), jax {jax.__version__}"


def matmul_size() -> int:
  """2048 on a CPU; 8192 on an accelerator, where 2048 does not fill it."""
  return 2048 if jax.devices()[0].platform == "cpu" else 8192


def matmul_rate(repeats: int = 10) -> float:
  """fp32 FLOP/s of one large jnp matmul (default precision)."""
  n = matmul_size()
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  seconds, _ = timed(lambda: f(a), repeats)
  return 2 * n ** 3 / seconds


def copy_bandwidth(mib: int = 256, repeats: int = 10) -> float:
  """Bytes/s (read + write) of an elementwise pass into a reused buffer."""
  x = jnp.zeros((mib * 2**20 // 4,), jnp.float32)
  f = jax.jit(lambda x: x + 1.0, donate_argnums=0)
  state = {"x": x}

  def step():
    state["x"] = f(state["x"])
    return state["x"]

  seconds, _ = timed(step, repeats)
  return 2 * mib * 2**20 / seconds


# --- W1 EXACT --------------------------------------------------------------


def w1_setup(tfds_dir=None, steps: int = 16):
  c, ds, model = adult(CATEGORICALS, tfds_dir)
  c.view.capture = True
  spec = training.make_spec(c, model, ds.train)
  _, _, views = training.train(training.Trainer(spec), jax.device_put(ds.train),
                               jax.device_put(ds.test), training.make_settings([row()]), 1)
  view = jax.tree.map(lambda a: a[0, :steps], views[0])
  return ds, model, knowledge.candidate_space(ds.schema, ()), view


def w1_flops_per_combination(model) -> float:
  """FLOPs of one (record, private combination), both labels: the message
  direction v = (relu'(pre) * w2) @ W_h^T (2 H d), the pre-activation, mask,
  logit (4 H), |v|^2 (2 d) and both labels' ||a_y v - m||^2 summed
  directly (6 d)."""
  h, d = model.head.hidden[0], model.server.cut_dim
  return 2 * h * d + 4 * h + 8 * d


def w1_batched(model, space, view, n, repeats):
  """(median seconds, ExactResult)."""
  mech = knowledge.Mechanism(0.0, 0.0)
  return timed(lambda: exact.attack(model, space, mech, [view], n), repeats)


def all_candidates(space) -> np.ndarray:
  """[C, P] the head input of every private combination, in index order."""
  return np.asarray(space.encode(space.digits(jnp.arange(space.size))))


def w1_agreement(space, view, result, index) -> float:
  """Fraction of the view's records whose (combination * labels + label)
  from `result` (an ExactResult) equals `index` [steps * B]."""
  ids = np.asarray(view.ids).reshape(-1)
  combo = np.zeros(ids.shape, np.int64)
  for j, radix in enumerate(space.radices):
    combo = combo * radix + result.digits[ids, j]
  ours = combo * space.num_labels + result.label[ids]
  return float(np.mean(ours == np.asarray(index)))


def naive_record_fn(model, space):
  """The straightforward single-record EXACT: every (candidate, label)
  through the whole head and jax.grad for its message; argmin of L2."""
  p_all = space.encode(space.digits(jnp.arange(space.size)))
  labels = jnp.arange(space.num_labels)

  @jax.jit
  def record(params, h, m):
    def msg(p, y):
      return jax.grad(lambda h_: protocol.record_loss(model, params, h_, p, y))(h)
    msgs = jax.vmap(lambda p: jax.vmap(lambda y: msg(p, y))(labels))(p_all)
    return jnp.sum((msgs - m) ** 2, -1).reshape(-1).argmin()

  return record


def w1_loop(model, space, view, repeats, records: int = 512):
  """The per-record loop, timed on `records` records and scaled to all."""
  record = naive_record_fn(model, space)
  steps, b = view.ids.shape
  params = [jax.tree.map(lambda a: a[s, 0], view.device_params) for s in range(steps)]
  pairs = [(s, i) for s in range(steps) for i in range(b)][:records]

  def loop():
    out = None
    for s, i in pairs:
      out = record(params[s], view.h[s, i], view.messages[s, i])
    return out

  seconds, _ = timed(loop, repeats)
  return seconds * view.ids.size / len(pairs)


# --- W2 training and W3 sweep ----------------------------------------------


def w2_setup(tfds_dir=None):
  c, ds, model = adult(CATEGORICALS, tfds_dir)
  spec = training.make_spec(c, model, ds.train)
  return c, ds, model, spec


def dense_macs(params) -> int:
  """Multiply-accumulates per example of every Dense kernel in a params tree
  (embedding tables are lookups, not counted)."""
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if str(path[-1].key) == "kernel" and leaf.ndim == 2:
      total += leaf.shape[0] * leaf.shape[1]
  return total


def w2_flops_per_example(model, spec) -> float:
  """Forward + backward of both towers: 3 x 2 x Dense MACs per example."""
  server, device = model.init(jax.random.key(0), spec.num_server_numeric)
  return 6 * (dense_macs(server) + dense_macs(device))


def w2_scan(spec, ds, repeats):
  trainer = training.Trainer(spec)
  train = jax.device_put(ds.train)
  settings = training.make_settings([row(sigma=1.0, clip=CLIP)])
  state = {"s": trainer.init(train.y, settings), "e": 0}

  def epoch():
    state["s"], out = trainer.epoch(state["s"], train, settings, np.int32(state["e"]))
    state["e"] += 1
    return out.train_loss

  return timed(epoch, repeats)[0]


def w2_loop(spec, ds, repeats):
  """The same SL step dispatched once per batch from Python."""
  train = jax.device_put(ds.train)
  setting = jax.tree.map(lambda a: a[0], training.make_settings([row(sigma=1.0, clip=CLIP)]))
  keys = training.seed_keys(setting.seed)
  step = jax.jit(functools.partial(training.sl_step, spec, train, setting, keys.noise),
                 donate_argnums=1)
  state = {"s": training.init_state(spec, train.y, setting), "e": 0}
  steps, b = spec.steps_per_epoch, spec.batch_size

  def epoch():
    e = state["e"]
    perm = jax.random.permutation(jax.random.fold_in(keys.data, e), spec.num_train)
    idx = perm[:steps * b].reshape(steps, b)
    loss = None
    for s in range(steps):
      state["s"], (loss, _) = step(jnp.int32(e), state["s"], idx[s])
    state["e"] += 1
    return loss

  return timed(epoch, repeats)[0]


def w3_rows():
  return [row(seed=s, sigma=sigma, clip=CLIP) for sigma in SIGMAS for s in SEEDS]


def _group(trainer, train, test, settings):
  num = settings.seed.shape[0]
  if num > 1:  # A group spreads over every device, as in training.train.
    settings, train, test = training.distribute(settings, train, test)
  state = trainer.init(train.y, settings)
  state, _ = trainer.epoch(state, train, settings, np.int32(0))
  return trainer.evaluate(state, test, settings)["test_auc"][:num]


def w3(spec, ds, repeats):
  """(vmapped seconds, sequential seconds, max |AUC difference|, vmapped AUCs)."""
  trainer = training.Trainer(spec)
  train, test = jax.device_put(ds.train), jax.device_put(ds.test)
  rows = w3_rows()
  group = training.make_settings(rows)
  singles = [training.make_settings([r]) for r in rows]
  vmapped, auc_v = timed(lambda: _group(trainer, train, test, group), repeats)
  sequential, auc_s = timed(
      lambda: jnp.concatenate([_group(trainer, train, test, s) for s in singles]), repeats)
  return (vmapped, sequential, float(jnp.max(jnp.abs(auc_v - auc_s))),
          np.asarray(auc_v))


def w3_phases(spec, ds, repeats):
  """Where the group gains: for the vmapped group of 16 and for one setting
  (on one device), the median (init, epoch, evaluation) wall seconds and
  the median CPU seconds of the process over the same spans (all threads,
  `time.process_time`). On the CPU the CPU seconds say whether the group
  does less work than 16 single settings, or only keeps more cores busy."""
  trainer = training.Trainer(spec)
  train, test = jax.device_put(ds.train), jax.device_put(ds.test)
  rows = w3_rows()

  def clocks():
    return time.perf_counter(), time.process_time()

  def phases(settings):
    out = []
    for r in range(repeats + 1):  # the first is the warm-up
      c0 = clocks()
      state = jax.block_until_ready(trainer.init(train.y, settings))
      c1 = clocks()
      state, _ = trainer.epoch(state, train, settings, np.int32(0))
      jax.block_until_ready(state)
      c2 = clocks()
      jax.block_until_ready(trainer.evaluate(state, test, settings))
      c3 = clocks()
      if r:
        out.append([[b[k] - a[k] for a, b in ((c0, c1), (c1, c2), (c2, c3))]
                    for k in (0, 1)])
    wall, cpu = np.median(np.asarray(out), axis=0).tolist()
    return tuple(wall), tuple(cpu)

  return phases(training.make_settings(rows)), phases(training.make_settings(rows[:1]))


# --- W4 optimiser ----------------------------------------------------------


def w4_setup(tfds_dir=None):
  c, ds, model = adult(NUMERICS, tfds_dir)
  c.view.capture = True
  spec = training.make_spec(c, model, ds.train)
  _, _, views = training.train(training.Trainer(spec), jax.device_put(ds.train),
                               jax.device_put(ds.test), training.make_settings([row()]), 1)
  view = jax.tree.map(lambda a: a[0], views[0])
  _, aux, _ = evaluation.split_aux(ds.train, 0.1, 0)
  return ds, model, view, aux


W4_KW = dict(num_restarts=8, num_steps=500, learning_rate=0.05, hybrid=False,
             beta_start=2.0, beta_end=200.0, seed=0)


def w4_flops_per_iteration(model, schema) -> float:
  """One record-restart Adam iteration: the message (private part P x H,
  message direction H x d) forward and backward, ~3 x 2 x MACs."""
  h, d = model.head.hidden[0], model.server.cut_dim
  p = sum(f.vocab_size for f in schema.private_categorical) + len(schema.private_numeric)
  return 6 * (p * h + h * d)


def w4_batched(model, ds, view, aux, repeats, records: int = 1024):
  """(median seconds, median best exact matching loss over the records)."""
  mech = knowledge.Mechanism(0.0, 0.0)
  seconds, loss = timed(lambda: gradmatch.attack(
      model, ds.schema, mech, view, aux, ds.train.num_examples, max_records=records,
      **W4_KW).loss, repeats)
  return seconds, float(np.nanmedian(loss))


def w4_loop(model, ds, view, aux, repeats, records: int = 1024, timed_records: int = 8):
  """One record per call, timed on `timed_records` records and scaled."""
  mech = knowledge.Mechanism(0.0, 0.0)

  def loop():
    out = None
    for i in range(timed_records):
      one = view._replace(ids=view.ids[:, i:i + 1], h=view.h[:, i:i + 1],
                          messages=view.messages[:, i:i + 1],
                          param_index=view.param_index[:, i:i + 1])
      out = gradmatch.attack(model, ds.schema, mech, one, aux, ds.train.num_examples,
                             max_records=1, batch_records=1, **W4_KW).loss
    return out

  return timed(loop, repeats)[0] * records / timed_records
