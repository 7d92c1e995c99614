"""SL and FSL training: each epoch one jitted `lax.scan`, vmappable over settings.

A *setting* (`Setting`) holds the values that may differ between runs of one
compiled program: seed, clip norm, noise multiplier, label-DP epsilon, and
whether the device uses its private features (0 gives the server-features-only
baseline with identical shapes). Everything that fixes array shapes lives in
the static `TrainSpec`. `Trainer` jits `vmap`ped functions over a leading
setting axis, so a batch of settings trains as one program.

Keys: one root key per setting from its seed, split once into init, data
order, FSL partition, message noise and label-DP keys; the step or epoch is
folded in where a key is used repeatedly. The data order and the FSL
partition depend on the seed alone, so `Trainer.epoch` computes them once per
distinct seed of a batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from splitjax import accounting, configlib, data, defences, models, protocol, sharding
from splitjax import workdir as wd
from splitjax.data.schema import Arrays
from splitjax.errors import ConfigError
from splitjax.models import SplitModel

Params = Any


class Setting(NamedTuple):
  """Per-setting values; stack them on a leading axis to vmap."""
  seed: jax.Array              # int32
  clip_norm: jax.Array         # float32, 0 = no clipping
  noise_stddev: jax.Array      # float32, absolute stddev of the message noise
  label_epsilon: jax.Array     # float32, inf = no label DP
  use_private: jax.Array       # float32, 1 = split model, 0 = server-only


def make_settings(rows: list[dict]) -> Setting:
  """Stacks settings given as dicts of Setting's fields."""
  def col(name, dtype):
    return jnp.asarray([r[name] for r in rows], dtype)
  return Setting(col("seed", jnp.int32), col("clip_norm", jnp.float32),
                 col("noise_stddev", jnp.float32),
                 col("label_epsilon", jnp.float32),
                 col("use_private", jnp.float32))


class TrainState(NamedTuple):
  server_params: Params
  device_params: Params
  server_opt_state: Any
  device_opt_state: Any
  step: jax.Array    # int32, global step (FSL: local steps)
  labels: jax.Array  # int32 [N] training labels the device uses (label DP)


class _Keys(NamedTuple):
  init: jax.Array
  data: jax.Array
  partition: jax.Array
  noise: jax.Array
  label: jax.Array


def seed_keys(seed: jax.Array) -> _Keys:
  return _Keys(*jax.random.split(jax.random.key(seed), 5))


def _optimizer(name: str, learning_rate: float,
               weight_decay: float = 0.0) -> optax.GradientTransformation:
  """'adam' or 'sgd' (plain: its step scales with the gradient, where Adam's
  is about the learning rate whatever the gradient's size). A weight decay
  lambda > 0 takes learning_rate * lambda * theta off every param at each
  step on top of the optimiser's step, decoupled from the gradient
  (optax.adamw; for SGD, whose step is the gradient's, that is L2
  regularisation); at 0 the optimiser is the plain one."""
  if not weight_decay:
    return {"adam": optax.adam, "sgd": optax.sgd}[name](learning_rate)
  if name == "adam":
    return optax.adamw(learning_rate, weight_decay=weight_decay)
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """Everything static: model, shapes, optimisers, mode, view capture."""
  model: SplitModel
  num_train: int
  num_server_numeric: int
  mode: str = "sl"
  batch_size: int = 256
  server_learning_rate: float = 1e-3
  device_learning_rate: float = 1e-3
  server_optimizer: str = "adam"  # configlib.OPTIMIZERS
  device_optimizer: str = "adam"
  server_weight_decay: float = 0.0
  device_weight_decay: float = 0.0
  num_clients: int = 1
  local_steps: int = 1
  client_batch_size: int = 32
  knowledge: str = "white_box"
  capture_view: bool = False
  eval_batch_size: int = 8192

  @property
  def server_opt(self) -> optax.GradientTransformation:
    return _optimizer(self.server_optimizer, self.server_learning_rate,
                      self.server_weight_decay)

  @property
  def device_opt(self) -> optax.GradientTransformation:
    return _optimizer(self.device_optimizer, self.device_learning_rate,
                      self.device_weight_decay)

  @property
  def records_per_client(self) -> int:
    return self.num_train // self.num_clients

  @property
  def steps_per_epoch(self) -> int:
    """SL steps, or FSL local steps (rounds x local_steps)."""
    if self.mode == "sl":
      return self.num_train // self.batch_size
    steps = self.records_per_client // self.client_batch_size
    return steps - steps % self.local_steps

  @property
  def examples_per_epoch(self) -> int:
    per_step = self.batch_size if self.mode == "sl" else (
        self.num_clients * self.client_batch_size)
    return self.steps_per_epoch * per_step

  def check(self):
    """Raises ConfigError when the data cannot fill one epoch."""
    if self.mode == "sl" and self.batch_size > self.num_train:
      raise ConfigError(f"train.batch_size: {self.batch_size} is larger than "
                        f"the {self.num_train} training examples")
    if self.mode == "fsl":
      if self.num_clients > self.num_train:
        raise ConfigError(f"fsl.num_clients: {self.num_clients} clients for "
                          f"{self.num_train} training examples")
      if self.steps_per_epoch < self.local_steps:
        raise ConfigError(
            f"fsl.client_batch_size: {self.client_batch_size} x "
            f"fsl.local_steps {self.local_steps} exceeds the "
            f"{self.records_per_client} records per client")


def make_spec(config, model: SplitModel, train: Arrays) -> TrainSpec:
  """The TrainSpec of a config, checked against the data."""
  spec = TrainSpec(
      model=model, num_train=train.num_examples,
      num_server_numeric=train.x_s_num.shape[1], mode=config.train.mode,
      batch_size=config.train.batch_size,
      server_learning_rate=config.train.server_learning_rate,
      device_learning_rate=config.train.device_learning_rate,
      server_optimizer=config.train.server_optimizer,
      device_optimizer=config.train.device_optimizer,
      server_weight_decay=config.train.server_weight_decay,
      device_weight_decay=config.train.device_weight_decay,
      num_clients=config.fsl.num_clients if config.train.mode == "fsl" else 1,
      local_steps=config.fsl.local_steps,
      client_batch_size=config.fsl.client_batch_size,
      knowledge=config.view.knowledge, capture_view=config.view.capture,
      eval_batch_size=config.train.eval_batch_size)
  spec.check()
  return spec


def init_state(spec: TrainSpec, train_labels: jax.Array,
               setting: Setting) -> TrainState:
  """Fresh params, optimiser states, and the label-DP training labels."""
  keys = seed_keys(setting.seed)
  server_params, device_params = spec.model.init(keys.init,
                                                 spec.num_server_numeric)
  labels = defences.randomized_response(keys.label, train_labels,
                                        spec.model.num_classes,
                                        setting.label_epsilon)
  return TrainState(server_params, device_params,
                    spec.server_opt.init(server_params),
                    spec.device_opt.init(device_params),
                    jnp.zeros((), jnp.int32), labels)


def _gather(data: Arrays, idx: jax.Array) -> Arrays:
  return jax.tree.map(lambda x: x[idx], data)


def _server_update(spec, state, g_server):
  updates, opt_state = spec.server_opt.update(g_server, state.server_opt_state,
                                              state.server_params)
  return optax.apply_updates(state.server_params, updates), opt_state


def _defend(setting, noise_key, step, messages):
  transform = defences.chain(defences.clip_by_l2_norm(setting.clip_norm),
                             defences.add_gaussian_noise(setting.noise_stddev))
  return transform.update(messages, jax.random.fold_in(noise_key, step))


def sl_step(spec: TrainSpec, train: Arrays, setting: Setting,
            noise_key: jax.Array, epoch: jax.Array, state: TrainState,
            idx: jax.Array):
  """One SL step on the records `idx` [B]; returns (state, (loss, view))."""
  m = spec.model
  x = _gather(train, idx)
  h, backward = protocol.server_forward(m, state.server_params, x.x_s_cat,
                                        x.x_s_num)
  p = m.encode_private(x.x_p_cat, x.x_p_num) * setting.use_private
  out = protocol.device_step(m, state.device_params, h, p, state.labels[idx])
  sent = _defend(setting, noise_key, state.step, out.messages)
  server_params, server_opt = _server_update(spec, state, backward(sent))
  updates, device_opt = spec.device_opt.update(out.grads, state.device_opt_state,
                                               state.device_params)
  view = None
  if spec.capture_view:
    known = (None if spec.knowledge == "none"
             else jax.tree.map(lambda a: a[None], state.device_params))
    view = protocol.ServerView(idx.astype(jnp.int32), h, sent, state.step,
                               epoch, jnp.zeros_like(idx, jnp.int32), known)
  new_state = TrainState(server_params,
                         optax.apply_updates(state.device_params, updates),
                         server_opt, device_opt, state.step + 1, state.labels)
  return new_state, (out.loss, view)


def _fsl_local_step(spec, train, setting, noise_key, epoch, carry, idx):
  """One local step of all K clients at once; idx is [K, client batch]."""
  state, client_params, client_opt, start_params = carry
  m = spec.model
  k, bc = idx.shape
  flat = idx.reshape(-1)
  x = _gather(train, flat)
  h, backward = protocol.server_forward(m, state.server_params, x.x_s_cat,
                                        x.x_s_num)
  p = m.encode_private(x.x_p_cat, x.x_p_num) * setting.use_private
  out = jax.vmap(protocol.device_step, (None, 0, 0, 0, 0))(
      m, client_params, h.reshape(k, bc, -1), p.reshape(k, bc, -1),
      state.labels[flat].reshape(k, bc))
  sent = _defend(setting, noise_key, state.step, out.messages.reshape(k * bc, -1))
  server_params, server_opt = _server_update(spec, state, backward(sent))
  updates, client_opt_new = jax.vmap(spec.device_opt.update)(
      out.grads, client_opt, client_params)
  view = None
  if spec.capture_view:
    if spec.knowledge == "white_box":
      known, index = client_params, jnp.repeat(jnp.arange(k, dtype=jnp.int32), bc)
    else:  # The server knows only the round-start average.
      known, index = jax.tree.map(lambda a: a[None], start_params), jnp.zeros(
          k * bc, jnp.int32)
    if spec.knowledge == "none":
      known = None
    view = protocol.ServerView(flat.astype(jnp.int32), h, sent, state.step,
                               epoch, index, known)
  state = state._replace(server_params=server_params,
                         server_opt_state=server_opt, step=state.step + 1)
  carry = (state, optax.apply_updates(client_params, updates), client_opt_new,
           start_params)
  return carry, (out.loss.mean(), view)


def fedavg(tree: Any) -> Any:
  """The server's average over the leading client axis (integer leaves, such
  as Adam's step count, are equal across clients and kept)."""
  return jax.tree.map(
      lambda a: a.mean(0) if jnp.issubdtype(a.dtype, jnp.floating) else a[0],
      tree)


def fsl_round(spec: TrainSpec, train: Arrays, setting: Setting,
              noise_key: jax.Array, epoch: jax.Array, state: TrainState,
              idx: jax.Array):
  """One FedAvg round; idx is [local_steps, K, client batch].

  Each client starts from the round-start device model, takes local_steps
  steps on its own records, and the server averages the copies (params and
  optimiser moments). Returns (state, client_params, (losses, views)).
  """
  k = idx.shape[1]
  broadcast = lambda t: jax.tree.map(lambda a: jnp.broadcast_to(a, (k,) + a.shape), t)
  carry = (state, broadcast(state.device_params),
           broadcast(state.device_opt_state), state.device_params)
  step = functools.partial(_fsl_local_step, spec, train, setting, noise_key, epoch)
  (state, client_params, client_opt, _), outs = jax.lax.scan(step, carry, idx)
  state = state._replace(device_params=fedavg(client_params),
                         device_opt_state=fedavg(client_opt))
  return state, client_params, outs


class EpochOut(NamedTuple):
  train_loss: jax.Array
  view: protocol.ServerView | None


def client_partition(spec: TrainSpec, seed: jax.Array) -> jax.Array:
  """The fixed records of each FSL client, [K, records per client]."""
  perm = jax.random.permutation(seed_keys(seed).partition, spec.num_train)
  n = spec.records_per_client
  return perm[:spec.num_clients * n].reshape(spec.num_clients, n)


def epoch_rows(spec: TrainSpec, seed: jax.Array, epoch: jax.Array) -> jax.Array:
  """The training rows of every step of one epoch (shuffled per epoch,
  remainder dropped): [steps, B] in SL; in FSL [rounds, local_steps, K,
  client batch] from each client's fixed records. They depend on the seed
  alone, so settings that share one share them (Trainer.epoch)."""
  epoch_key = jax.random.fold_in(seed_keys(seed).data, epoch)
  steps = spec.steps_per_epoch
  if spec.mode == "sl":
    perm = jax.random.permutation(epoch_key, spec.num_train)
    return perm[:steps * spec.batch_size].reshape(steps, spec.batch_size)
  part = client_partition(spec, seed)
  k, bc, steps_l = spec.num_clients, spec.client_batch_size, spec.local_steps
  client_keys = jax.random.split(epoch_key, k)
  shuffled = jax.vmap(lambda key, rows: jax.random.permutation(key, rows))(
      client_keys, part)[:, :steps * bc]
  return shuffled.reshape(k, steps // steps_l, steps_l, bc).transpose(1, 2, 0, 3)


def train_epoch(spec: TrainSpec, state: TrainState, train: Arrays,
                setting: Setting, epoch: jax.Array,
                rows: jax.Array) -> tuple[TrainState, EpochOut]:
  """One epoch as one scan over `rows`, the setting's seed's epoch_rows."""
  keys = seed_keys(setting.seed)
  if spec.mode == "sl":
    step = functools.partial(sl_step, spec, train, setting, keys.noise, epoch)
    state, (losses, view) = jax.lax.scan(step, state, rows)
    return state, EpochOut(losses.mean(), view)

  rnd = functools.partial(fsl_round, spec, train, setting, keys.noise, epoch)

  def body(state, round_idx):
    state, _, outs = rnd(state, round_idx)
    return state, outs

  state, (losses, view) = jax.lax.scan(body, state, rows)
  if view is not None:  # [rounds, local_steps, ...] -> [steps, ...]
    view = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), view)
  return state, EpochOut(losses.mean(), view)


def binary_auc(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """ROC AUC by the Mann-Whitney statistic, ties given average ranks."""
  s = jnp.sort(scores)
  ranks = (jnp.searchsorted(s, scores, side="left")
           + jnp.searchsorted(s, scores, side="right") + 1) / 2.0
  pos = labels.astype(jnp.float32)
  n_pos = pos.sum()
  n_neg = pos.shape[0] - n_pos
  return ((ranks * pos).sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def evaluate(spec: TrainSpec, state: TrainState, test: Arrays,
             setting: Setting, num_settings: int = 1) -> dict[str, jax.Array]:
  """Test AUC (macro one-vs-rest beyond two classes), accuracy, log-loss.

  The test rows go through the model in chunks of eval_batch_size rows summed
  over the `num_settings` settings vmapped together (at least 256 per
  setting, at most the whole test set): on the 2-core CPU, 16
  settings at 8,192 rows each ran the Adult test set 1.3x slower than at 512
  (389 against 297 ms, scratch timing, 2026-12-03), their activations no
  longer fitting the cache.
  """
  m = spec.model
  n = test.num_examples
  chunk = min(max(spec.eval_batch_size // num_settings, 256), n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  padded = jax.tree.map(
      lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), test)

  def logits_of(x):
    h = m.server.apply(state.server_params, x.x_s_cat, x.x_s_num)
    p = m.encode_private(x.x_p_cat, x.x_p_num) * setting.use_private
    return m.head.apply(state.device_params, h, p)

  chunks = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]),
                        padded)
  logits = jax.lax.map(logits_of, chunks)
  logits = logits.reshape((num_chunks * chunk,) + logits.shape[2:])[:n]
  probs = m.probabilities(logits)
  y = test.y
  if m.num_classes == 2:
    auc = binary_auc(logits[:, 0], y)
  else:
    auc = jax.vmap(lambda c: binary_auc(probs[:, c], y == c))(
        jnp.arange(m.num_classes)).mean()
  return {"test_auc": auc,
          "test_accuracy": (probs.argmax(-1) == y).mean(),
          "test_log_loss": m.loss(logits, y).mean()}


class Trainer:
  """Compiled init, epoch and evaluation, all vmapped over settings."""

  def __init__(self, spec: TrainSpec):
    self.spec = spec
    self.init = jax.jit(jax.vmap(functools.partial(init_state, spec),
                                 in_axes=(None, 0)))
    self._epoch = jax.jit(self._epoch_impl, donate_argnums=0)
    self.evaluate = jax.jit(self._evaluate)

  def epoch(self, state: TrainState, train: Arrays, settings: Setting,
            epoch) -> tuple[TrainState, EpochOut]:
    """One epoch of every setting. The shuffles (sorts of the training rows)
    are computed once per distinct seed, not once per setting; the numbers
    are the same."""
    seeds, slot = np.unique(sharding.to_host(settings.seed), return_inverse=True)
    slot = slot.astype(np.int32)
    sharded = getattr(settings.seed, "sharding", None)
    if sharded is not None and len(sharded.device_set) > 1:
      slot = jax.device_put(slot, sharded)  # Each device gathers its own settings' rows.
    return self._epoch(state, train, settings, epoch, seeds, slot)

  def _epoch_impl(self, state, train, settings, epoch, seeds, slot):
    rows = jax.vmap(epoch_rows, (None, 0, None))(self.spec, seeds, epoch)
    fn = functools.partial(train_epoch, self.spec)
    return jax.vmap(fn, in_axes=(0, None, 0, None, 0))(state, train, settings, epoch,
                                                        rows[slot])

  def _evaluate(self, state: TrainState, test: Arrays, settings: Setting):
    fn = functools.partial(evaluate, self.spec, num_settings=settings.seed.shape[0])
    return jax.vmap(fn, in_axes=(0, None, 0))(state, test, settings)


def metrics_row(losses, evals, index: int) -> dict[str, float]:
  """The metrics of setting `index` as plain floats, failing on non-finite."""
  row = {"train_loss": float(losses[index])}
  row.update({k: float(v[index]) for k, v in evals.items()})
  bad = [k for k, v in row.items() if not math.isfinite(v)]
  if bad:
    raise FloatingPointError(f"non-finite metrics {bad}: {row}")
  return row


def distribute(settings: Setting, *data):
  """With several devices, the setting axis sharded over all of them (padded
  with copies of the last setting to a multiple of the device count) and the
  data replicated (splitjax/sharding.py); unchanged on one device."""
  m = sharding.mesh()
  if m is None:
    return (settings, *data)
  settings = sharding.shard_axis(sharding.pad_leading(settings, m.size), m, 0)
  return (settings, *sharding.replicate(data, m))


def train(trainer: Trainer, train_data: Arrays, test_data: Arrays,
          settings: Setting, num_epochs: int, on_epoch=None):
  """Trains every setting for num_epochs; returns (state, history, views).

  Args:
    trainer: the compiled functions.
    train_data, test_data: device arrays.
    settings: stacked settings [S].
    num_epochs: epochs to run.
    on_epoch: optional callback(epoch, rows, seconds) after each epoch, with
      one metrics dict per setting.

  Returns:
    The final stacked TrainState, a list (per epoch) of lists (per setting)
    of metrics dicts, and a list of per-epoch ServerViews (or Nones). The
    state and views hold the settings `sharding.host_rows(S)`: all of them on
    one host; with several hosts, those this host trained (the metrics cover
    every setting on every host).
  """
  num_settings = settings.seed.shape[0]
  settings, train_data, test_data = distribute(settings, train_data, test_data)
  state = trainer.init(train_data.y, settings)
  history, views = [], []
  for epoch in range(num_epochs):
    start = time.perf_counter()
    state, out = trainer.epoch(state, train_data, settings, np.int32(epoch))
    evals = trainer.evaluate(state, test_data, settings)
    losses, evals = sharding.to_host((out.train_loss, evals))
    seconds = time.perf_counter() - start
    rows = [metrics_row(losses, evals, i) for i in range(num_settings)]
    history.append(rows)
    views.append(out.view)
    if on_epoch is not None:
      on_epoch(epoch, rows, seconds)
  # The padding copies dropped. Several hosts: each keeps the settings it
  # trained, to attack them on its own devices (splitjax/sharding.py).
  state, views = sharding.host_part((state, views), sharding.host_rows(num_settings),
                                    num_settings)
  return state, history, views


def defence_setting(config, spec: TrainSpec) -> dict:
  """The Setting fields of `config.defence`, calibrating sigma if asked.

  Returns clip_norm (0 = no clipping), noise_stddev and label_epsilon, plus
  noise_multiplier (the sigma used) for the record.
  """
  d = config.defence
  sigma = d.noise_multiplier
  if d.target_epsilon:
    sigma = accounting.calibrate_noise_multiplier(
        d.target_epsilon, config.train.num_epochs, d.delta, d.accountant)
    logging.info("calibrated noise multiplier %.4f for epsilon %.3g at delta %.1e "
                 "over %d epochs", sigma, d.target_epsilon, d.delta,
                 config.train.num_epochs)
  return dict(clip_norm=d.clip_norm if d.clip else 0.0,
              noise_stddev=sigma * d.clip_norm if d.noise else 0.0,
              noise_multiplier=sigma if d.noise else 0.0,
              label_epsilon=d.label_epsilon)


def accounting_rows(config, spec: TrainSpec, mech: dict) -> list[dict]:
  """Per-epoch epsilons (splitjax.accounting.report) of a run's defence."""
  d = config.defence
  return accounting.report(
      clip_norm=d.clip_norm, noise_multiplier=mech["noise_multiplier"],
      clip=d.clip, label_epsilon_=d.label_epsilon,
      num_classes=spec.model.num_classes, num_epochs=config.train.num_epochs,
      batch_size=spec.batch_size if spec.mode == "sl" else spec.client_batch_size,
      num_train=spec.num_train if spec.mode == "sl" else spec.records_per_client,
      delta=d.delta)


def run(config, workdir: str) -> list[dict]:
  """The training job: trains the split model and its server-only baseline.

  Writes `config.json` and `metrics.jsonl` (one line per epoch) to workdir,
  and logs one line per epoch with examples/s. Everything is validated before
  the workdir is touched; a workdir with a finished run is refused.

  Returns:
    The metrics rows written.
  """

  configlib.check(config)
  wd.refuse_finished(workdir, "metrics.jsonl")
  dataset = data.load(config.data)
  model = models.make_model(dataset.schema, config.model)
  spec = make_spec(config, model, dataset.train)
  trainer = Trainer(spec)
  mech = defence_setting(config, spec)
  rows = [dict(seed=config.seed, **mech, use_private=1.0)]
  eps = accounting_rows(config, spec, mech)
  if config.train.server_only_baseline:
    rows.append(dict(rows[0], use_private=0.0))
  settings = make_settings(rows)
  provenance = wd.provenance(configlib.config_hash(config), seed=config.seed)
  logging.info("%s: %d train / %d test examples, private %s, %d steps/epoch",
               config.data.name, dataset.train.num_examples,
               dataset.test.num_examples,
               [f.name for f in dataset.schema.private], spec.steps_per_epoch)

  wd.write_json(os.path.join(workdir, "config.json"),
                {"config": config.to_dict(), "schema": dataset.schema.to_json(),
                 **provenance})
  out_rows = []

  def on_epoch(epoch, rows_, seconds):
    examples = spec.examples_per_epoch * len(rows_)
    row = {"epoch": epoch + 1, **rows_[0], "seconds": seconds,
           "examples_per_second": examples / seconds, **eps[epoch],
           "noise_multiplier": mech["noise_multiplier"], **provenance}
    line = (f"epoch {epoch + 1}/{config.train.num_epochs}: train loss "
            f"{row['train_loss']:.4f}, test AUC {row['test_auc']:.4f}, "
            f"accuracy {row['test_accuracy']:.4f}, log-loss "
            f"{row['test_log_loss']:.4f}")
    if len(rows_) > 1:
      row["server_only"] = rows_[1]
      row["auc_gain"] = row["test_auc"] - rows_[1]["test_auc"]
      line += (f" | server-only AUC {rows_[1]['test_auc']:.4f} "
               f"(gain {row['auc_gain']:+.4f})")
    if math.isfinite(row["epsilon_total"]):
      line += f" | epsilon {row['epsilon_total']:.3g} at delta {row['delta']:g}"
    line += (f" | {row['examples_per_second']:,.0f} examples/s"
             + (" (incl. compile)" if epoch == 0 else ""))
    logging.info(line)
    out_rows.append(row)
    # Progress so far, for a long run; renamed to metrics.jsonl at the end.
    wd.write_jsonl(os.path.join(workdir, "metrics.jsonl.partial"), out_rows)

  start = time.perf_counter()
  train(trainer, jax.device_put(dataset.train), jax.device_put(dataset.test),
        settings, config.train.num_epochs, on_epoch)
  wd.rename(os.path.join(workdir, "metrics.jsonl.partial"),
            os.path.join(workdir, "metrics.jsonl"))
  logging.info("done in %.1f s; wrote %s", time.perf_counter() - start,
               os.path.join(workdir, "metrics.jsonl"))
  return out_rows
