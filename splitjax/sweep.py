"""The sweep job: a grid of privacy settings trained, attacked and accounted.

A sweep is settings x seeds. Every run of one knowledge setting has the same
array shapes, so a *shape group* trains and is attacked as one vmapped program
(`training.Trainer`, `exact.attack_settings`); `sweep.max_group_size` splits a
large group into batches of equal composition, each a unit of work.

A sweep over data sets (`run_datasets`, a config with a `datasets` field, e.g.
configs/all_datasets.py) runs one such sweep per data set, each in
<workdir>/<name>/ with its own shape groups, resume and refusal, then writes
<workdir>/summary.{csv,md} with every data set's rows.

Workdir layout (one data set):
  config.json             the config and its hash; a rerun with another
                          config is refused
  batches/<id>.json       one finished batch (its runs' metrics, attacks,
                          accounting), written atomically; a rerun skips it
  privacy_utility.{csv,json,md}, *.png
                          the tables and plots, written once every batch is
                          done (see splitjax.report)

A run killed at any point and rerun with the same config recomputes only the
batches without a file and ends with the same tables: batch composition is a
function of the config alone, and each run's numbers depend only on its seed
and setting. `redraw` (scripts/plot.py) draws a finished sweep's plots again
from its files, without training.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from splitjax import accounting, audit, configlib, data, evaluation, models
from splitjax import protocol, report, sharding, training
from splitjax.attacks import baselines, exact, knowledge
from splitjax import workdir as wd
from splitjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Setting:
  """One row of the table: a defence at one strength, under one knowledge."""
  key: str
  defence: str  # none | clip | noise | label_dp | clip+label_dp | noise+label_dp
  #                | server_only
  knowledge: str
  noise_multiplier: float = 0.0
  target_epsilon: float = 0.0
  label_epsilon: float = math.inf

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


class Run(NamedTuple):
  setting: Setting
  seed: int

  @property
  def key(self) -> str:
    return f"{self.setting.key}/seed{self.seed}"


class Batch(NamedTuple):
  id: str
  knowledge: str
  runs: tuple[Run, ...]


# The defences that clip the cut-layer gradients, and those that also noise
# them ('clip' alone releases the clipped gradients exactly: epsilon inf).
CLIPPED = ("clip", "clip+label_dp", "noise", "noise+label_dp")
NOISY = ("noise", "noise+label_dp")


def _fmt(x: float) -> str:
  return f"{x:g}"


def grid(config) -> list[Setting]:
  """The settings of a sweep config, in table order."""
  sw, d = config.sweep, config.defence
  knowledges = tuple(sw.knowledge) or (config.view.knowledge,)
  out = []
  for k in knowledges:
    prefix = f"{k}/" if len(knowledges) > 1 else ""
    if sw.server_only:
      out.append(Setting(prefix + "server_only", "server_only", k))
    if sw.undefended:
      out.append(Setting(prefix + "none", "none", k))
    clipped = [Setting(prefix + "clip_only", "clip", k)] if sw.clip_only else []
    out += clipped
    noise = [Setting(f"{prefix}noise_sigma{_fmt(sigma)}", "noise", k,
                     noise_multiplier=float(sigma)) for sigma in sw.noise_multipliers]
    for eps in sw.target_epsilons:
      sigma = accounting.calibrate_noise_multiplier(eps, config.train.num_epochs,
                                                    d.delta, d.accountant)
      noise.append(Setting(f"{prefix}noise_eps{_fmt(eps)}", "noise", k,
                           noise_multiplier=sigma, target_epsilon=float(eps)))
    out += noise
    for eps in sw.label_epsilons:
      out.append(Setting(f"{prefix}label_eps{_fmt(eps)}", "label_dp", k,
                         label_epsilon=float(eps)))
    # Both defences: each clip setting, with noise or without (its target
    # epsilon is the cut layer's alone), with label DP at each of these.
    for s in clipped + noise:
      for eps in sw.noise_with_label_epsilons:
        out.append(dataclasses.replace(
            s, key=f"{s.key}_label_eps{_fmt(eps)}", defence=f"{s.defence}+label_dp",
            label_epsilon=float(eps)))
  if not any(s.defence != "server_only" for s in out):
    raise ConfigError("sweep: no settings to attack; set sweep.undefended or "
                      "sweep.clip_only, or give sweep.noise_multipliers, "
                      "sweep.target_epsilons or sweep.label_epsilons")
  return out


def batches(config, settings: list[Setting]) -> list[Batch]:
  """Runs (setting x seed) in shape groups, split into batches of at most
  sweep.max_group_size runs."""
  out = []
  knowledges = list(dict.fromkeys(s.knowledge for s in settings))
  for g, k in enumerate(knowledges):
    runs = [Run(s, int(seed)) for s in settings if s.knowledge == k
            for seed in config.sweep.seeds]
    size = config.sweep.max_group_size or len(runs)
    for b, start in enumerate(range(0, len(runs), size)):
      out.append(Batch(f"group{g}-{k}-batch{b}", k, tuple(runs[start:start + size])))
  return out


def view_bytes_per_run(config, spec: training.TrainSpec) -> int:
  """Bytes of the server's views one run keeps for the attacks: ids, h and
  messages of every record of every step, and the device params per step."""
  _, device = jax.eval_shape(
      lambda key: spec.model.init(key, spec.num_server_numeric), jax.random.key(0))
  params = sum(x.size for x in jax.tree.leaves(device)) * 4
  if spec.mode == "sl":
    batch, copies = spec.batch_size, 1
  else:
    batch = spec.num_clients * spec.client_batch_size
    copies = spec.num_clients if spec.knowledge == "white_box" else 1
  per_step = batch * 4 * (2 * spec.model.server.cut_dim + 2) + copies * params
  epochs = max(config.attack.epochs or (config.train.num_epochs,))
  return spec.steps_per_epoch * per_step * epochs


def check_view_memory(config, spec, batches: list[Batch]) -> None:
  """Raises ConfigError when the views a host holds of a batch (all of them
  on one host; its devices' share with several, splitjax/sharding.py) would
  exceed sweep.max_view_gb."""
  per_run = view_bytes_per_run(config, spec)
  largest = max(len(b.runs) for b in batches)
  most, total = sharding.host_devices()
  held = min(largest, -(-largest // total) * most)
  limit = config.sweep.max_view_gb * 2**30
  if held * per_run > limit:
    fit = max(1, int(limit // per_run) // most) * total  # Whole blocks per device.
    where = "" if held == largest else f" ({held} of them on one host)"
    raise ConfigError(
        f"sweep.max_group_size: a batch of {largest} runs{where} would hold "
        f"~{held * per_run / 2**30:.3g} GiB of server views per host "
        f"({per_run / 2**20:,.3g} MiB per run), above sweep.max_view_gb="
        f"{config.sweep.max_view_gb:g}; set sweep.max_group_size to at most {fit} "
        "(or raise the limit on a machine with the memory)")


def mechanism(config, setting: Setting) -> dict:
  """The Setting fields (training.Setting) of a sweep setting."""
  c = config.defence.clip_norm
  noisy = setting.defence in NOISY
  return dict(clip_norm=c if setting.defence in CLIPPED else 0.0,
              noise_stddev=setting.noise_multiplier * c if noisy else 0.0,
              noise_multiplier=setting.noise_multiplier if noisy else 0.0,
              label_epsilon=setting.label_epsilon)


def _accounting(config, spec, setting: Setting, cache: dict) -> list[dict]:
  mech = mechanism(config, setting)
  key = (setting.defence in CLIPPED, mech["noise_multiplier"], mech["label_epsilon"])
  if key not in cache:
    d = config.defence
    cache[key] = accounting.report(
        clip_norm=d.clip_norm, noise_multiplier=mech["noise_multiplier"],
        clip=setting.defence in CLIPPED, label_epsilon_=mech["label_epsilon"],
        num_classes=spec.model.num_classes, num_epochs=config.train.num_epochs,
        batch_size=spec.batch_size if spec.mode == "sl" else spec.client_batch_size,
        num_train=spec.num_train if spec.mode == "sl" else spec.records_per_client,
        delta=d.delta)
  return cache[key]


def _check_workdir(workdir: str, config, provenance: dict) -> None:
  """Refuses a workdir that holds another config's results."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      held = json.load(f).get("config_hash")
  except (OSError, ValueError) as e:
    raise ConfigError(f"--workdir: {path} is unreadable ({e}); choose another "
                      "workdir") from None
  if held != provenance["config_hash"]:
    raise ConfigError(
        f"--workdir: {workdir} holds results of a different config (hash {held}, "
        f"this config is {provenance['config_hash']}); choose another workdir "
        "(results are never overwritten)")


def _held(workdir: str, config, provenance: dict, plan: list[Batch]) -> list[str] | None:
  """What the workdir holds: None when its table is finished, else the ids
  of the finished batches. Refuses another config's workdir."""
  _check_workdir(workdir, config, provenance)
  if os.path.exists(os.path.join(workdir, report.TABLE + ".csv")):
    return None
  return [b.id for b in plan
          if os.path.exists(os.path.join(workdir, "batches", b.id + ".json"))]


def _read_batch(path: str, batch: Batch) -> dict:
  """A finished batch file, checked against the batch it should hold."""
  try:
    with open(path) as f:
      held = json.load(f)
    keys = [r["run"] for r in held["runs"]]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"--workdir: {path} is unreadable ({e}); delete it to "
                      "recompute that batch") from None
  if keys != [r.key for r in batch.runs]:
    raise ConfigError(f"--workdir: {path} holds runs {keys}, not this config's "
                      f"{[r.key for r in batch.runs]}; delete it to recompute that batch")
  return held


class Progress:
  """Progress lines (absl logging) with runs done, ETA and examples/s, and a
  bar on stderr when it is a terminal."""

  def __init__(self, num_runs: int, num_epochs: int):
    self.num_runs, self.num_epochs = num_runs, num_epochs
    self.start = time.perf_counter()
    self.units_done = 0.0
    self.units_total = 0.0
    self.runs_done = 0
    self.tty = sys.stderr.isatty()

  def plan(self, pending_runs: int):
    # A run's work: its epochs plus one epoch's worth for its attacks.
    self.units_total = pending_runs * (self.num_epochs + 1)

  def eta(self) -> str:
    if self.units_done <= 0:
      return "?"
    rate = (time.perf_counter() - self.start) / self.units_done
    seconds = rate * max(0.0, self.units_total - self.units_done)
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"

  def update(self, line: str, units: float = 0.0, runs: int = 0):
    self.units_done += units
    self.runs_done += runs
    if not wd.is_writer():  # Multi-host: process 0 reports for all.
      return
    if self.tty:  # Clear the bar so the log line starts on a clean line.
      sys.stderr.write("\r\033[K")
    logging.info("%s | runs done %d/%d, ETA %s", line, self.runs_done,
                 self.num_runs, self.eta())
    if self.tty:
      frac = self.units_done / max(self.units_total, 1e-9)
      bar = "#" * int(30 * frac)
      sys.stderr.write(f"\r[{bar:<30}] {100 * frac:5.1f}% ETA {self.eta():>9}")
      sys.stderr.flush()
      if frac >= 1:
        sys.stderr.write("\n")


@functools.lru_cache(maxsize=8)
def _trainer(spec: training.TrainSpec) -> training.Trainer:
  """One Trainer (so one compilation per batch size) per spec."""
  return training.Trainer(spec)


def majority_share(dataset) -> float:
  """The test accuracy of always guessing the test split's most frequent
  class."""
  y = np.asarray(dataset.test.y)
  return float(np.bincount(y).max() / len(y))


def _train_batch(config, dataset, spec, runs: list[Run], progress: Progress,
                 prefix: str):
  rows = [dict(seed=r.seed, **{k: v for k, v in mechanism(config, r.setting).items()
                               if k != "noise_multiplier"},
               use_private=0.0 if r.setting.defence == "server_only" else 1.0)
          for r in runs]
  trainer = _trainer(spec)
  n = len(rows)
  majority = majority_share(dataset)

  def on_epoch(epoch, metrics, seconds):
    auc = [m["test_auc"] for m in metrics]
    progress.update(
        f"{prefix} epoch {epoch + 1}/{config.train.num_epochs}: {n} runs, test AUC "
        f"{min(auc):.4f}-{max(auc):.4f}, {spec.examples_per_epoch * n / seconds:,.0f} "
        f"examples/s{' (incl. compile)' if epoch == 0 else ''}", units=n)
    if epoch + 1 == config.train.num_epochs:
      for r, m in zip(runs, metrics):
        if m["test_accuracy"] < majority - report.MAJORITY_MARGIN:
          logging.warning("%s: run %s ended with test accuracy %.4f, below %.4f for "
                          "always guessing the most frequent class", prefix, r.key,
                          float(m["test_accuracy"]), majority)

  return training.train(trainer, jax.device_put(dataset.train),
                        jax.device_put(dataset.test), training.make_settings(rows),
                        config.train.num_epochs, on_epoch)


def run_batch(config, dataset, model, ctx, batch: Batch, progress: Progress,
              acct_cache: dict, prefix: str, provenance: dict
              ) -> tuple[list[dict], dict]:
  """Trains and attacks one batch; returns its run records and timings."""
  spec = dataclasses.replace(training.make_spec(config, model, dataset.train),
                             knowledge=batch.knowledge, capture_view=True)
  # The runs in the order they lie along the setting axis: several hosts
  # each get a like number to attack (server-only runs are not attacked);
  # the batch's order on one host. Each run's numbers do not depend on it.
  attackable = [r.setting.defence != "server_only" for r in batch.runs]
  order = sharding.placement([float(a) for a in attackable])
  start = time.perf_counter()
  state, history, views = _train_batch(config, dataset, spec,
                                       [batch.runs[i] for i in order], progress, prefix)
  train_seconds = time.perf_counter() - start
  # The rows this host trained (all of them on one host), at these positions
  # of its state and views; it attacks the runs there that are not server-only.
  held = [order[row] for row in sharding.host_rows(len(batch.runs))]
  local = [j for j, i in enumerate(held) if attackable[i]]
  attacked = [held[j] for j in local]
  last = max(config.attack.epochs or (config.train.num_epochs,))
  heavy = sorted(set(config.attack.epochs)) or [config.train.num_epochs]
  settings = [batch.runs[i].setting for i in attacked]
  mechs = [mechanism(config, s) for s in settings]
  accts = [_accounting(config, spec, s, acct_cache) for s in settings]
  noisy = None
  if any(math.isfinite(m["label_epsilon"]) for m in mechs):
    noisy = np.asarray(state.labels)[np.asarray(local)]
  names = ctx.names
  if batch.knowledge == "none":
    names = tuple(a for a in names if a not in report.MODEL_ATTACKS)
  if jax.process_count() > 1:
    logging.info("%s: process %d attacks runs %s of %d", prefix, jax.process_index(),
                 sorted(attacked), len(batch.runs))
  start = time.perf_counter()
  results = []
  if attacked:
    results = evaluation.attack_settings(dataclasses.replace(ctx, names=names),
                                         views[:last], local, mechs, noisy, accts,
                                         list(range(1, last + 1)), heavy)
  # Several hosts: every host's results to every host (one collective).
  by_index = {i: res for part in sharding.allgather_json(list(zip(attacked, results)))
              for i, res in part}
  attack_seconds = time.perf_counter() - start
  progress.update(f"{prefix} attacks: {len(by_index)} runs, "
                  f"{attack_seconds:.1f} s", units=len(batch.runs),
                  runs=len(batch.runs))
  row_of = {i: row for row, i in enumerate(order)}
  records = []
  for i, r in enumerate(batch.runs):
    res = by_index.get(i, {"epochs": {}, "violations": []})
    records.append({
        "run": r.key, "setting": r.setting.to_json(), "seed": r.seed,
        "mechanism": mechanism(config, r.setting),
        "history": [h[row_of[i]] for h in history],
        "accounting": _accounting(config, spec, r.setting, acct_cache),
        "attacks": res["epochs"], "audit_violations": res["violations"]})
  return records, {"train_seconds": train_seconds, "attack_seconds": attack_seconds,
                   "num_runs": len(batch.runs), **provenance}


def run(config, workdir: str) -> list[dict]:
  """The sweep job; returns the table rows (see splitjax.report)."""
  configlib.check(config)
  provenance = wd.provenance(configlib.config_hash(config))
  settings = grid(config)
  plan = batches(config, settings)
  table = os.path.join(workdir, report.TABLE + ".csv")
  # Several hosts: process 0's workdir decides for all (they run the same batches).
  finished = sharding.from_process_0(_held, workdir, config, provenance, plan)
  if finished is None:
    logging.info("%s is complete (config %s); nothing to do", workdir,
                 provenance["config_hash"])
    if not wd.is_writer():
      return []
    with open(os.path.join(workdir, report.TABLE + ".md")) as f:
      print(f.read())
    with open(os.path.join(workdir, report.TABLE + ".json")) as f:
      return json.load(f)["rows"]

  dataset = data.load(config.data)
  model = models.make_model(dataset.schema, config.model)
  spec = training.make_spec(config, model, dataset.train)
  check_view_memory(config, spec, plan)
  ctx = evaluation.prepare(config, dataset, model, spec)
  done = set(finished)
  # Every pending setting's accounting once, up front, before the workdir is
  # touched (an epsilon it cannot represent is a config error): PLD at a
  # small sigma costs seconds, and with several hosts each needs it for
  # different runs at different times, which would hold the next batch's
  # collectives.
  acct_cache = {}
  start = time.perf_counter()
  for s in dict.fromkeys(r.setting for b in plan if b.id not in done for r in b.runs):
    _accounting(config, spec, s, acct_cache)
  logging.info("accounting: %d mechanisms in %.1f s", len(acct_cache),
               time.perf_counter() - start)
  if not os.path.exists(os.path.join(workdir, "config.json")):
    wd.write_json(os.path.join(workdir, "config.json"),
                  {"config": config.to_dict(), "schema": dataset.schema.to_json(),
                   "settings": [s.to_json() for s in settings],
                   "batches": [[r.key for r in b.runs] for b in plan], **provenance})
  num_runs = sum(len(b.runs) for b in plan)
  logging.info("%s sweep: %d settings x %d seeds = %d runs in %d batches; "
               "%d train / %d test examples, private %s", config.data.name,
               len(settings), len(config.sweep.seeds), num_runs, len(plan),
               dataset.train.num_examples, dataset.test.num_examples,
               [f.name for f in dataset.schema.private])
  progress = Progress(num_runs, config.train.num_epochs)
  progress.runs_done = sum(len(b.runs) for b in plan if b.id in done)
  progress.plan(num_runs - progress.runs_done)
  if done:
    logging.info("resuming: %d of %d batches already finished", len(done), len(plan))
  for i, b in enumerate(plan):
    if b.id in done:
      continue
    prefix = f"batch {i + 1}/{len(plan)} ({b.knowledge})"
    records, meta = run_batch(config, dataset, model, ctx, b, progress, acct_cache,
                              prefix, provenance)
    wd.write_json(os.path.join(workdir, "batches", b.id + ".json"),
                  {"batch": b.id, "runs": records, **meta})
  if not wd.is_writer():
    logging.info("sweep done in %.1f s; process 0 writes the tables",
                 time.perf_counter() - start)
    return []
  all_records, commits, software = [], [], []
  for b in plan:  # A resumed sweep names every commit and jax its batches ran on.
    held = _read_batch(os.path.join(workdir, "batches", b.id + ".json"), b)
    all_records += held["runs"]
    commits.append(held["git_commit"])
    software.append(held.get("software", "unrecorded"))  # Older batch files.
  majority = majority_share(dataset)
  rows = report.write(workdir, config, dataset.schema, settings, all_records,
                      dict(provenance, git_commit="+".join(dict.fromkeys(commits)),
                           software=" + ".join(dict.fromkeys(software))), majority)
  logging.info("sweep done in %.1f s; wrote %s", time.perf_counter() - start, table)
  with open(os.path.join(workdir, report.TABLE + ".md")) as f:
    print(f.read())
  violations = [f"{r['run']}: {v}" for r in all_records for v in r["audit_violations"]]
  if violations:
    raise audit.AuditViolation("privacy audit failed (a bug in the mechanism, "
                               "accountant or attack): " + "; ".join(violations))
  return rows


def redraw(workdir: str, out: str) -> list[str]:
  """Draws a finished sweep's plots again, in `out`, from what `workdir`
  holds: its table (privacy_utility.json), config.json and, for the plot over
  epochs, the runs' records in batches/ (which results/ folders leave out: there
  that plot is not drawn). Returns the plots' names. DataError or ConfigError
  naming what is missing."""
  rows = report.read_rows(workdir)
  config, schema = report.read_config(workdir)
  records = None
  if os.path.isdir(os.path.join(workdir, "batches")):
    records = [r for b in batches(config, grid(config)) for r in _read_batch(
        os.path.join(workdir, "batches", b.id + ".json"), b)["runs"]]
  os.makedirs(out, exist_ok=True)
  report.plot(out, rows, records, schema, config)
  return list(report.PLOTS if records is not None else report.PLOTS[:2])


def run_datasets(config, workdir: str) -> list[dict]:
  """A sweep over data sets: config.datasets maps a name to that data set's
  sweep config. Each runs as `run` in <workdir>/<name>; then
  <workdir>/summary.{csv,md} lists all their rows (column `dataset` = the
  name). A failed audit in one data set does not stop the others; it is
  raised once every data set's tables are written."""
  if not config.get("datasets"):
    raise ConfigError("datasets: no data sets to sweep; give at least one "
                      "name -> sweep config")
  names = list(config.datasets.keys())
  # Every data set's config and workdir are checked before anything is
  # written or trained: a bad one found after the others had run would
  # leave a half-done sweep behind.
  for name, sub in config.datasets.items():
    try:
      configlib.check(sub)
    except ConfigError as e:
      raise ConfigError(f"datasets.{name}: {e}") from None
    _check_workdir(os.path.join(workdir, name), sub,
                   {"config_hash": configlib.config_hash(sub)})
  sharding.from_process_0(_claim_datasets, workdir, names)
  rows, failures = [], []
  for name, sub in config.datasets.items():
    logging.info("data set %s -> %s", name, os.path.join(workdir, name))
    folder = os.path.join(workdir, name)
    try:
      run(sub, folder)
    except audit.AuditViolation as e:
      failures.append(f"{name}: {e}")
    if wd.is_writer():
      rows += [dict(r, dataset=name) for r in report.read_rows(folder)]
  if not wd.is_writer():
    return []
  report.write_summary(workdir, rows)
  with open(os.path.join(workdir, report.SUMMARY + ".md")) as f:
    print(f.read())
  if failures:
    raise audit.AuditViolation("; ".join(failures))
  return rows


def _claim_datasets(workdir: str, names: list[str]) -> None:
  """Records the data sets of a multi-data-set workdir, or refuses one that
  holds others."""
  listed = os.path.join(workdir, "datasets.json")
  if os.path.exists(listed):
    with open(listed) as f:
      before = json.load(f)["datasets"]
    if before != names:
      raise ConfigError(f"--workdir: {workdir} holds a sweep over data sets {before}, "
                        f"not {names}; choose another workdir (results are never "
                        "overwritten)")
  else:
    os.makedirs(workdir, exist_ok=True)
    wd.write_json(listed, {"datasets": names})


def main(config, workdir: str):
  """scripts/sweep.py: a sweep over data sets if the config has `datasets`,
  else one data set's sweep."""
  return (run_datasets if "datasets" in config else run)(config, workdir)


# message_energy's figures of what one release tells apart (exact.separation).
_SEPARATION = ("ruled_out", "pattern_differs", "norm_over_c", "server_part",
               "private_swing", "h_norm", "w_h_norm")


def mean_message_over_c(mean_sq: float, noise_stddev: float, num: float, dim: int,
                        clip_norm: float) -> float:
  """||mean clip(g)|| / C from ||mean m||^2, the squared norm of the mean of
  `num` messages as sent: their noise adds dim noise_stddev^2 / num to it in
  expectation, taken off here (floored at zero). `num` need not be whole: a
  class's part of the mean (`_class_figures`) carries the noise of N^2 / N_k
  messages."""
  return math.sqrt(max(mean_sq - dim * noise_stddev ** 2 / num, 0.0)) / clip_norm


class ClassSums(NamedTuple):
  """Sums over an epoch's released records of each class k of the sent
  label, per run: [R, K, d] or [R, K]."""
  sent: jax.Array     # the messages as sent, m_i
  true: jax.Array     # the true messages before the defence, g_i = dl_i/dh_i
  count: jax.Array    # the records
  over: jax.Array     # the records with ||g_i|| > C, whose message the clip shrinks


# message_energy's figures per class of the sent label (`_class_figures`).
_BY_CLASS = ("share", "over_c", "sent_part", "true_part")


def _class_figures(sums: ClassSums, noise_stddev: float, released: int, dim: int,
                   clip_norm: float) -> list[list[float]]:
  """Per class k, one run's ClassSums as _BY_CLASS's figures: the records'
  share N_k / N; the share of them with ||g_i|| > C (nan for no records);
  and the class's part of the epoch's mean message over C, as sent,
  ||sum_k m_i|| / (N C) (less the noise's expected d (sigma C)^2 N_k in the
  squared sum, floored at zero), and before the defence, ||sum_k g_i|| / (N C).
  Undefended the two parts are equal; as vectors, the classes' parts add up
  to the epoch's mean message."""
  out = []
  for sent, true, n, over in zip(*sums):
    n = float(n)
    # sum_k m_i / N is a mean of N terms of which N_k carry noise: its noise
    # is that of a mean of N^2 / N_k noisy messages.
    mean_sq = float(np.sum(np.square(np.float64(sent) / released)))
    part = mean_message_over_c(mean_sq, noise_stddev, released ** 2 / n, dim,
                               clip_norm) if n else 0.0
    out.append([n / released, float(over) / n if n else math.nan, part,
                float(np.linalg.norm(true)) / (released * clip_norm)])
  return out


@functools.partial(jax.jit, static_argnames=("model", "num_classes"))
def class_sums(model, view, x_p_cat, x_p_num, labels, clip_norm: float,
               num_classes: int) -> ClassSums:
  """ClassSums of a view stacked over R runs (labels [R, N], the sent
  ones). The true messages are recomputed from the view's device params
  (each record's own, by `param_index`) and the record's x_p and sent label:
  the evaluator's, since it reads x_p. Under 'stale' knowledge those params
  are the round's start, not the heads that sent the messages, so the true
  messages are approximate there. Their sum over every class is W_h
  times the device's first-layer bias gradient, which the device alone
  drives to zero; the clip shrinks each class's part of it by a different
  factor when it binds more often on one class."""
  grad = jax.grad(functools.partial(protocol.record_loss, model), argnums=1)

  def run(view, labels):
    def step(args):
      h, ids, index, params_all, sent = args
      p = model.encode_private(x_p_cat[ids], x_p_num[ids])
      one = lambda h_i, p_i, y_i, pi: grad(jax.tree.map(lambda a: a[pi], params_all),
                                           h_i, p_i, y_i)
      g = jax.vmap(one)(h, p, labels[ids], index)
      hot = jax.nn.one_hot(labels[ids], num_classes, dtype=g.dtype)  # [B, K]
      over = (jnp.linalg.norm(g, axis=-1) > clip_norm).astype(g.dtype)
      by_class = lambda x: jnp.einsum("bk,b...->k...", hot, x,
                                      precision=jax.lax.Precision.HIGHEST)
      return ClassSums(by_class(sent), by_class(g), jnp.sum(hot, 0), by_class(over))

    sums = jax.lax.map(step, (view.h, view.ids, view.param_index, view.device_params,
                              view.messages))
    return jax.tree.map(lambda a: jnp.sum(a, 0), sums)

  return jax.vmap(run)(view, labels)


def message_energy(config, workdir: str) -> list[dict]:
  """How much of the clip budget the messages carry, per setting of the
  sweep grid (the server-only model aside) and epoch: the mean over the
  released records of ||clip(g_i)||^2 / C^2, read off the messages as sent,
  mean ||m_i||^2 minus the noise's expected energy d (sigma C)^2, over C^2
  (C = defence.clip_norm; unclipped settings give ||g_i||^2 / C^2), and the
  norm of the server's output averaged over each step's records, ||mean h||
  (the part of h that a step's records share; clipping the messages grows
  it, results/movielens_100k/combined/label_dp_split/README.md), and the
  norm of the epoch's mean message over C, ||mean m|| / C: the gradient the
  cut layer's bias receives, averaged over the epoch's steps, less the
  noise's expected d (sigma C)^2 / N in the square (a clip that shrinks
  one class's messages more than the other's pushes it off zero,
  results/bank_marketing/combined/label_dp_split/README.md); beside it the
  same norm of the true messages' mean before the defence, ||mean g|| / C
  (`class_sums`), and the cosine between the two means; and the same split
  by the sent label's class (`_class_figures`), with the share of each
  class's true messages that are longer than C. Beside
  them, what one release tells apart (`exact.separation`; the evaluator reads
  every record's x_p for it), each a mean over the released records: the
  share of wrong x_p candidates (with the sent label) that one release makes
  at most 1/e as likely as the truth; the share whose ReLU pattern in the
  head's first layer differs from the truth's; the true message's unclipped
  norm over C; and, per unit of that layer, the server's part of the
  pre-activation |h W_h + b| beside the wrong candidates' swing
  |(p' - p) W_p| (the pattern flips where the swing outweighs the part),
  with the part's two factors, ||h|| and the Frobenius norm of W_h.
  Those need a candidate space of at most
  exact.MAX_SEPARATION_CANDIDATES; larger ones get the energy alone.

  Each batch's figures are written to energy_batches/<batch>.json as it
  finishes; a rerun of the same config in the same workdir reads those and
  trains only the rest (another config's workdir is refused).

  The noise's own spread leaves the estimate a standard error of
  sqrt(2 d) sigma^2 / sqrt(N) per run (N released records), reported beside
  it: at Bank's size (d 64, N about 36,000) that is 0.004 at sigma 0.25 and
  0.95 at sigma 4, where the estimate says nothing. Seeds are aggregated as
  in the tables (mean, 95 % t-interval). Trains every run in one vmapped
  program with the views captured, then writes message_energy.json and .md
  (and config.json) to `workdir`; a workdir that holds them is refused.
  """
  configlib.check(config)
  wd.refuse_finished(workdir, "message_energy.json")
  provenance = wd.provenance(configlib.config_hash(config))
  _check_workdir(workdir, config, provenance)
  dataset = data.load(config.data)
  model = models.make_model(dataset.schema, config.model)
  spec = training.make_spec(config, model, dataset.train)
  settings = [s for s in grid(config) if s.defence != "server_only"]
  plan = batches(config, settings)  # sweep.max_group_size bounds the views held
  check_view_memory(config, spec, plan)
  held_path = lambda b: os.path.join(workdir, "energy_batches", b.id + ".json")
  held = {b.id: _read_batch(held_path(b), b) for b in plan if os.path.exists(held_path(b))}
  if not os.path.exists(os.path.join(workdir, "config.json")):
    wd.write_json(os.path.join(workdir, "config.json"),
                  {"config": config.to_dict(), **provenance})
  c2, d = config.defence.clip_norm ** 2, spec.model.server.cut_dim
  num_classes = spec.model.num_classes
  space = knowledge.candidate_space(dataset.schema,
                                    tuple(config.attack.exact.numeric_grids))
  separable = space.size <= exact.MAX_SEPARATION_CANDIDATES
  if not separable:
    logging.warning("message_energy: %d candidates, over %d: energy alone",
                    space.size, exact.MAX_SEPARATION_CANDIDATES)
  width = len(_SEPARATION) if separable else 0
  for b in plan:  # a held batch must carry what this version computes
    if b.id in held and any(
        len(r.get("signal_over_c2", ())) != config.train.num_epochs
        or len(r.get("h_common", ())) != config.train.num_epochs
        or len(r.get("bias_push", ())) != config.train.num_epochs
        or len(r.get("unclipped", ())) != config.train.num_epochs
        or len(r.get("by_class", ())) != config.train.num_epochs
        or any(len(e) not in (0, num_classes) for e in r.get("by_class", ()))
        or len(r.get("separation", ())) != (config.train.num_epochs if width else 0)
        or any(len(e) != width for e in r.get("separation", ()))
        for r in held[b.id]["runs"]):
      raise ConfigError(f"--workdir: {held_path(b)} holds other figures than this "
                        "version computes; delete it to recompute that batch")
  x_p_num = np.asarray(dataset.train.x_p_num)
  true_digits = np.concatenate(
      [np.asarray(dataset.train.x_p_cat)]
      + [baselines.grid_index(x_p_num[:, k], g)[:, None] for k, g in enumerate(space.grids)],
      1).astype(np.int32)
  progress = Progress(sum(len(b.runs) for b in plan), config.train.num_epochs)
  progress.runs_done = sum(len(b.runs) for b in plan if b.id in held)
  progress.plan(progress.num_runs - progress.runs_done)
  if held:
    logging.info("resuming: %d of %d batches already finished", len(held), len(plan))
  signal = {}  # run key -> [per epoch ||clip(g)||^2 / C^2]
  common = {}  # run key -> [per epoch mean over steps of ||mean h||]
  push = {}  # run key -> [per epoch ||mean m|| / C over the epoch's messages]
  unclipped = {}  # run key -> [per epoch (||mean g|| / C, cos(mean m, mean g))]
  classes = {}  # run key -> [per epoch [per class _BY_CLASS's figures] or []]
  x_p_cat, x_p_num_dev = jnp.asarray(dataset.train.x_p_cat), jnp.asarray(x_p_num)
  apart = {}  # run key -> [per epoch means, in _SEPARATION's order]
  for i, b in enumerate(plan):
    if b.id in held:
      continue
    # Trained as the sweep trains the batch (its knowledge, views captured).
    batch_spec = dataclasses.replace(spec, knowledge=b.knowledge, capture_view=True)
    state, _, views = _train_batch(config, dataset, batch_spec, list(b.runs), progress,
                                   f"batch {i + 1}/{len(plan)} ({b.knowledge})")
    released = views[0].ids[0].size
    start = time.perf_counter()
    for e, view in enumerate(views):
      energy, shared, sent_mean = jax.device_get(
          (jnp.mean(jnp.sum(jnp.square(view.messages), -1), (1, 2)),
           jnp.mean(jnp.linalg.norm(jnp.mean(view.h, 2), axis=-1), 1),
           jnp.mean(view.messages, (1, 2))))
      # Every run's class sums in one program and one transfer (knowledge
      # 'none' leaves no device params to recompute the true messages with).
      sums = None if view.device_params is None else jax.device_get(class_sums(
          model, view, x_p_cat, x_p_num_dev, state.labels, config.defence.clip_norm,
          num_classes))
      for j, r in enumerate(b.runs):
        mech = mechanism(config, r.setting)
        noise = mech["noise_stddev"]
        signal.setdefault(r.key, []).append((float(energy[j]) - d * noise ** 2) / c2)
        common.setdefault(r.key, []).append(float(shared[j]))
        push.setdefault(r.key, []).append(mean_message_over_c(
            float(np.sum(np.square(sent_mean[j]))), noise, released, d, math.sqrt(c2)))
        if sums is None:
          unclipped.setdefault(r.key, []).append((math.nan, math.nan))
          classes.setdefault(r.key, []).append([])
        else:
          true_mean = np.sum(sums.true[j], 0) / released
          unclipped.setdefault(r.key, []).append(
              (float(np.linalg.norm(true_mean)) / math.sqrt(c2),
               float(sent_mean[j] @ true_mean / max(
                   np.linalg.norm(sent_mean[j]) * np.linalg.norm(true_mean), 1e-30))))
          classes.setdefault(r.key, []).append(_class_figures(
              jax.tree.map(lambda a: a[j], sums), noise, released, d, math.sqrt(c2)))
        if separable:
          sep = exact.separation(model, space, jax.tree.map(lambda a: a[j], view),
                                 true_digits, state.labels[j], float(mech["clip_norm"]),
                                 float(noise))
          # Every figure's mean in one transfer, in _SEPARATION's order (the
          # norm over C).
          means = jax.device_get(jax.tree.map(jnp.mean, sep))
          apart.setdefault(r.key, []).append(tuple(
              float(m) / (math.sqrt(c2) if f == "norm" else 1.0)
              for f, m in zip(sep._fields, means)))
      if separable:  # minutes on MovieLens: say how far it is
        now = time.perf_counter() - start
        logging.info("batch %d/%d: what one release tells apart, epoch %d/%d done, "
                     "%.0f s, ETA %.0f s", i + 1, len(plan), e + 1, len(views), now,
                     now / (e + 1) * (len(views) - e - 1))
    del views
    held[b.id] = {"batch": b.id, "released": int(released), "runs": [
        {"run": r.key, "signal_over_c2": signal[r.key], "h_common": common[r.key],
         "bias_push": push[r.key], "unclipped": unclipped[r.key],
         "by_class": classes[r.key],
         "separation": apart.get(r.key, [])}
        for r in b.runs], **provenance}
    wd.write_json(held_path(b), held[b.id])
    progress.update(f"batch {i + 1}/{len(plan)}: message energy read",
                    units=len(b.runs), runs=len(b.runs))
  for b in plan:
    for r in held[b.id]["runs"]:
      signal[r["run"]], apart[r["run"]] = r["signal_over_c2"], r["separation"]
      common[r["run"]], push[r["run"]] = r["h_common"], r["bias_push"]
      unclipped[r["run"]], classes[r["run"]] = r["unclipped"], r["by_class"]
  released = held[plan[0].id]["released"]  # records per epoch, the same in every batch
  # A resumed run names every commit its batches ran on.
  provenance = dict(provenance, git_commit="+".join(
      dict.fromkeys(held[b.id]["git_commit"] for b in plan)))
  def over_seeds(name: str, values: list[float]) -> dict:
    """One figure's seeds as a row's mean, 95 % interval and per-seed list."""
    mean, half = report.ci95(values)
    return {name: mean, f"{name}_ci95": half, f"{name}_per_seed": values}

  seeds = lambda store, s, e: [store[Run(s, int(seed)).key][e]
                               for seed in config.sweep.seeds]
  out = []
  for e in range(config.train.num_epochs):
    for s in settings:
      values = seeds(signal, s, e)
      sigma = mechanism(config, s)["noise_multiplier"]
      mean, half = report.ci95(values)
      out.append({"setting": s.key, "epoch": e + 1, "noise_multiplier": sigma,
                  "label_epsilon": s.label_epsilon, "signal_over_c2": mean,
                  "signal_over_c2_ci95": half, "per_seed": values,
                  "noise_se": math.sqrt(2 * d) * sigma ** 2 / math.sqrt(released)})
      out[-1].update(over_seeds("h_common", seeds(common, s, e)))
      out[-1].update(over_seeds("bias_push", seeds(push, s, e)))
      for k, name in enumerate(("unclipped_mean", "push_cosine")):
        out[-1].update(over_seeds(name, [v[k] for v in seeds(unclipped, s, e)]))
      for k, name in enumerate(_SEPARATION if separable else ()):
        out[-1].update(over_seeds(name, [v[k] for v in seeds(apart, s, e)]))
  by_class = []  # per setting, epoch and class of the sent label
  for s in settings:
    for e in range(config.train.num_epochs):
      runs = seeds(classes, s, e)
      if not all(runs):  # knowledge 'none'
        continue
      for k in range(num_classes):
        by_class.append({"setting": s.key, "epoch": e + 1, "class": k})
        for f, name in enumerate(_BY_CLASS):
          by_class[-1].update(over_seeds(name, [run[k][f] for run in runs]))
  lines = [f"# {config.data.name}: message signal energy, ||clip(g)||^2 / C^2",
           "", f"config {provenance['config_hash']}, commit {provenance['git_commit']}, "
           f"seeds {' '.join(str(s) for s in config.sweep.seeds)}, clip norm "
           f"{config.defence.clip_norm:g}, cut dim {d}; mean ± 95 % t-interval over "
           "seeds; 'noise se' is one run's standard error from the noise; "
           "'||mean h||', the norm of the server's output averaged over a step's "
           "records (the part of h they share), the mean over the epoch's steps; "
           "'||mean m|| / C', the norm of the epoch's mean message as sent (the "
           "gradient on the cut layer's bias, averaged over the epoch's steps) "
           "over C, less the noise's part; '||mean g|| / C', the same of the true "
           "messages before the defence (the evaluator's; the device alone drives "
           "it to zero), and 'cos', the cosine between the two means (noise "
           "included)."
           + (" Of the wrong x_p candidates (sent label): 'ruled out', the share one "
              "release makes at most 1/e as likely as the truth; 'pattern differs', "
              "the share whose first-layer ReLU pattern differs from the truth's. "
              "'||g|| / C': the true message's norm before clipping. Per unit of the "
              "head's first layer: 'server part', |h W_h + b|; 'x_p swing', a wrong "
              "candidate's |(p' - p) W_p|; and the server part's factors ||h|| and "
              "||W_h||_F." if separable
              else ""),
           "", "| setting | epoch | signal / C^2 | noise se | \\|\\|mean h\\|\\| |"
           " \\|\\|mean m\\|\\| / C | \\|\\|mean g\\|\\| / C | cos |"
           + (" ruled out | pattern differs | \\|\\|g\\|\\| / C | server part | x_p swing |"
              " \\|\\|h\\|\\| | \\|\\|W_h\\|\\|_F |" if separable else ""),
           "|---|---|---|---|---|---|---|---|" + ("---|" * len(_SEPARATION) if separable else "")]
  keys = [s.key for s in settings]
  for r in sorted(out, key=lambda r: (keys.index(r["setting"]), r["epoch"])):
    cell = report.mean_ci(r["signal_over_c2"], r["signal_over_c2_ci95"])
    lines.append(f"| {r['setting']} | {r['epoch']} | {cell} | {r['noise_se']:.3f} | "
                 f"{report.mean_ci(r['h_common'], r['h_common_ci95'])} | "
                 f"{report.mean_ci(r['bias_push'], r['bias_push_ci95'])} | "
                 f"{report.mean_ci(r['unclipped_mean'], r['unclipped_mean_ci95'])} | "
                 f"{report.mean_ci(r['push_cosine'], r['push_cosine_ci95'], 2)} |"
                 + "".join(f" {report.mean_ci(r[n], r[n + '_ci95'])} |"
                           for n in (_SEPARATION if separable else ())))
  if by_class:
    lines += ["", "## By the sent label's class", "",
              "'share', the class's share of the released records; '||g|| > C', "
              "the share of them whose true message is longer than C (the clip "
              "shrinks it, where it clips); 'sent part' and 'true part', the norm "
              "of the sum of the class's messages as sent (less the noise's part) "
              "and before the defence, over N C. As vectors, the classes' parts add "
              "up to the mean message: '||mean m|| / C' and '||mean g|| / C' above.",
              "",
              "| setting | epoch | class | share | \\|\\|g\\|\\| > C | sent part | "
              "true part |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['epoch']} | {r['class']} | "
              + " | ".join(report.mean_ci(r[n], r[n + "_ci95"]) for n in _BY_CLASS) + " |"
              for r in by_class]
  text = "\n".join(lines) + "\n"
  wd.write_text(os.path.join(workdir, "message_energy.md"), text)
  wd.write_json(os.path.join(workdir, "message_energy.json"),
                {"rows": out, "by_class": by_class, **provenance})
  print(text)
  return out
