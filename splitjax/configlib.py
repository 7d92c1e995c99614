"""The base configuration every experiment file in configs/ starts from.

Every default lives here or in the experiment file, so the `config.json` a run
writes is the whole truth. `check(config)` validates names against registries
and ranges before anything runs or is written, and raises a one-line
ConfigError naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math

import ml_collections

from splitjax import defences
from splitjax.errors import ConfigError

MODES = ("sl", "fsl")
KNOWLEDGE = ("white_box", "stale", "none")
ATTACKS = ("prior", "server_model", "exact", "bayes_exact", "gradmatch",
           "label_norm", "label_direction")
BAYES_PRIORS = ("chain", "label_given_private", "server_model", "marginal", "uniform")
PRIVATE_ENCODINGS = ("one_hot", "embed")
# Each tower's optimiser (training.TrainSpec): Adam, or plain SGD, whose
# step scales with the gradient (Adam's does not).
OPTIMIZERS = ("adam", "sgd")


def base_config() -> ml_collections.ConfigDict:
  """The fields every experiment has; an experiment file overrides some."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "adult"
  c.data.tfds_dir = "~/tensorflow_datasets"
  c.data.manual_dir = ""  # "" = packaged copy, else download.
  c.data.verify_checksums = True
  c.data.private_features = ()
  c.data.server_features = ()  # () = every feature that is not private.
  c.data.max_train_examples = 0  # 0 = all.
  c.data.max_test_examples = 0  # 0 = all.
  # True: each split keeps as many records of each class as its rarest class
  # has, the first ones in file order (after max_*_examples).
  c.data.balance_classes = False
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_examples=20_000, num_server_categorical=2, server_vocab_size=5,
      num_server_numeric=4, num_private_categorical=2, private_vocab_size=3,
      num_private_numeric=0, num_classes=2, dependence=1.0,
      private_signal=1.0, private_chain=0.0, test_fraction=0.2, seed=0))
  c.data.csv = ml_collections.ConfigDict(dict(
      path="", delimiter=",", categorical=(), numeric=(), label="",
      ignore=(), test_fraction=0.2, split_seed=0))

  c.model = ml_collections.ConfigDict()
  c.model.server_hidden = (256, 256)
  c.model.embed_dim = 8
  c.model.cut_dim = 64
  # Normalise each record's h over its coordinates (models.ServerTower):
  # ||h|| = sqrt(cut_dim), a server tower that cannot lengthen h.
  c.model.cut_layer_norm = False
  c.model.device_hidden = (128,)
  c.model.private_encoding = "one_hot"
  c.model.private_embed_dim = 8

  c.train = ml_collections.ConfigDict()
  c.train.mode = "sl"
  c.train.num_epochs = 5
  c.train.batch_size = 256
  c.train.server_learning_rate = 1e-3
  c.train.device_learning_rate = 1e-3
  c.train.server_optimizer = "adam"  # OPTIMIZERS
  c.train.device_optimizer = "adam"
  # Decoupled weight decay lambda: each step also takes lr * lambda * theta
  # off the tower's params (training._optimizer); 0 is off.
  c.train.server_weight_decay = 0.0
  c.train.device_weight_decay = 0.0
  c.train.eval_batch_size = 8192  # test rows per chunk, summed over the settings vmapped together
  c.train.server_only_baseline = True

  c.fsl = ml_collections.ConfigDict()
  c.fsl.num_clients = 100
  c.fsl.local_steps = 5
  c.fsl.client_batch_size = 32

  # Defences on the device (any combination): clip each message to L2 norm
  # clip_norm; add N(0, (noise_multiplier * clip_norm)^2 I); label randomized
  # response with label_epsilon (in (0, 10], inf = off; defences.MAX_LABEL_EPSILON
  # says why no higher). target_epsilon > 0 picks
  # noise_multiplier for num_epochs at delta (needs clip and noise).
  c.defence = ml_collections.ConfigDict()
  c.defence.clip = False
  c.defence.noise = False
  # The committed main tables' C, kept for comparability; measured on Bank
  # and Adult, C = 1-3 does better at every epsilon (README, "Choosing C").
  c.defence.clip_norm = 0.1
  c.defence.noise_multiplier = 1.0
  c.defence.target_epsilon = 0.0  # 0 = use noise_multiplier as given.
  c.defence.label_epsilon = math.inf
  c.defence.delta = 1e-5
  c.defence.accountant = "pld"

  c.view = ml_collections.ConfigDict()
  c.view.capture = False
  c.view.knowledge = "white_box"

  # Attacks (scripts/attack.py): the attacker is the server.
  c.attack = ml_collections.ConfigDict()
  c.attack.names = ("prior", "server_model", "exact", "bayes_exact",
                    "label_norm", "label_direction")
  c.attack.epochs = ()  # 1-based epochs to attack after; () = the last.
  c.attack.aux_fraction = 0.1
  c.attack.aux_seed = 0
  c.attack.exact = ml_collections.ConfigDict(dict(
      # chunk_mb 0: the device's default (16 MiB on CPU, 512 on GPU/TPU).
      metric="l2", chunk_candidates=4096, chunk_mb=0.0,
      max_candidates=2_000_000, max_chunk_mb=1024.0, numeric_grids=(),
      max_steps=0))
  # noiseless_scale: without message noise the likelihood is a point mass;
  # Bayes stands in a Gaussian this many times each record's RMS message
  # coordinate (splitjax/attacks/exact.py).
  # prior: Bayes's log prior(c, y | x_s), fitted on the auxiliary sample.
  # 'chain': each private categorical given x_s and the ones before it, the
  # label given x_s and the candidate's x_p; 'label_given_private': the same
  # label, the private features each from x_s alone (the server model);
  # 'server_model': all from x_s alone; 'marginal': aux frequencies;
  # 'uniform': none.
  c.attack.bayes = ml_collections.ConfigDict(dict(
      prior="chain", noiseless_scale=1e-4))
  # held_out_fraction: aux rows held out to early-stop the server model,
  # temperature-scale its confidences and shrink them toward the class
  # frequencies; they are the audit's priors and Bayes's
  # (splitjax/attacks/baselines.py.fit).
  c.attack.server_model = ml_collections.ConfigDict(dict(
      hidden=64, num_steps=500, learning_rate=1e-2, held_out_fraction=0.2))
  c.attack.gradmatch = ml_collections.ConfigDict(dict(
      num_restarts=16, num_steps=1000, learning_rate=0.05, max_records=1024,
      hybrid=True, beta_start=2.0, beta_end=200.0))

  # Sweeps (scripts/sweep.py): a grid of settings x seeds, seeds aggregated.
  # The settings: no defence; per-record clipping to defence.clip_norm alone
  # (clip_only: no noise, so epsilon inf); per-record clipping plus
  # Gaussian noise at each sigma (or at the sigma calibrated to each target
  # epsilon); label DP alone at each epsilon_label; every clip setting (the
  # clip alone and each noise setting) also with label DP at each of
  # noise_with_label_epsilons; and a
  # server-features-only model. Each knowledge setting is one shape group
  # (its own program).
  c.sweep = ml_collections.ConfigDict()
  c.sweep.seeds = (0, 1, 2)
  c.sweep.undefended = True
  c.sweep.clip_only = False
  c.sweep.server_only = True
  c.sweep.noise_multipliers = ()
  c.sweep.target_epsilons = ()
  c.sweep.label_epsilons = ()
  c.sweep.noise_with_label_epsilons = ()
  c.sweep.knowledge = ()  # () = (view.knowledge,)
  c.sweep.max_group_size = 0  # runs vmapped per program; 0 = a whole group
  c.sweep.max_view_gb = 8.0  # refuse batches whose captured views exceed this
  c.sweep.plots = True
  return c


def main_sweep(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The grid of the committed results (issue 5's main job): no defence,
  clip + noise at sigma 0.25 to 4, label DP at epsilon 1 and 3, 3 seeds."""
  c.sweep.noise_multipliers = (0.25, 0.5, 1.0, 2.0, 4.0)
  c.sweep.label_epsilons = (1.0, 3.0)
  c.sweep.seeds = (0, 1, 2)
  return c


def combined(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every clip + noise setting of the grid also with label DP at
  epsilon_label 1 and 3 (the data sets' `:combined` variants)."""
  c.sweep.noise_with_label_epsilons = (1.0, 3.0)
  return c


def variants(arg: str | None, known: tuple[str, ...]) -> set[str]:
  """The comma-separated variants of a config argument (`--config=F:a,b`).

  Raises:
    ValueError: naming the unknown ones and the known.
  """
  out = set(arg.split(",")) if arg else set()
  unknown = out - set(known)
  if unknown:
    raise ValueError(f"unknown config variants {sorted(unknown)}; known: "
                     f"{', '.join(known)}")
  return out


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to a seconds-long run (the `:smoke` variants)."""
  c.data.max_train_examples = 2048
  c.data.max_test_examples = 1024
  c.model.server_hidden = (32,)
  c.model.cut_dim = 16
  c.model.device_hidden = (16,)
  c.train.num_epochs = 2
  c.attack.gradmatch.max_records = 64
  c.attack.gradmatch.num_steps = 100
  c.fsl.num_clients = 8
  return c


def _need(ok: bool, field: str, msg: str):
  if not ok:
    raise ConfigError(f"{field}: {msg}")


def check(config: ml_collections.ConfigDict) -> None:
  """Validates a config before anything runs.

  Raises:
    ConfigError: naming the first bad field.
  """
  from splitjax import data  # Its names, sizes and (fixed tables') features.
  from splitjax.attacks.exact import METRICS as EXACT_METRICS
  data.check(config.data)
  m, t, f = config.model, config.train, config.fsl
  for name in ("server_hidden", "device_hidden"):
    widths = getattr(m, name)
    _need(all(isinstance(w, int) and w > 0 for w in widths), f"model.{name}",
          f"widths must be positive integers, got {tuple(widths)}")
  for name in ("cut_dim", "embed_dim", "private_embed_dim"):
    _need(getattr(m, name) > 0, f"model.{name}",
          f"must be positive, got {getattr(m, name)}")
  _need(m.private_encoding in PRIVATE_ENCODINGS, "model.private_encoding",
        f"unknown {m.private_encoding!r}; known: {list(PRIVATE_ENCODINGS)}")
  _need(t.mode in MODES, "train.mode", f"unknown {t.mode!r}; known: {list(MODES)}")
  _need(t.num_epochs > 0, "train.num_epochs", f"must be positive, got {t.num_epochs}")
  _need(t.batch_size > 0, "train.batch_size", f"must be positive, got {t.batch_size}")
  _need(t.eval_batch_size > 0, "train.eval_batch_size",
        f"must be positive, got {t.eval_batch_size}")
  for name in ("server_learning_rate", "device_learning_rate"):
    _need(getattr(t, name) > 0, f"train.{name}",
          f"must be positive, got {getattr(t, name)}")
  for side in ("server", "device"):
    name, value = f"{side}_weight_decay", getattr(t, f"{side}_weight_decay")
    _need(math.isfinite(value) and value >= 0, f"train.{name}",
          f"must be finite and >= 0 (0 is off), got {value}")
    rate = getattr(t, f"{side}_learning_rate")
    _need(rate * value < 1, f"train.{name}",
          f"{value} x the learning rate {rate} must be under 1: each step "
          "takes that share of every param off")
  for name in ("server_optimizer", "device_optimizer"):
    _need(getattr(t, name) in OPTIMIZERS, f"train.{name}",
          f"unknown {getattr(t, name)!r}; known: {list(OPTIMIZERS)}")
  for name in ("num_clients", "local_steps", "client_batch_size"):
    _need(getattr(f, name) > 0, f"fsl.{name}",
          f"must be positive, got {getattr(f, name)}")
  d = config.defence
  _need(d.clip_norm > 0, "defence.clip_norm", f"must be > 0, got {d.clip_norm}")
  _need(d.noise_multiplier >= 0, "defence.noise_multiplier",
        f"must be >= 0, got {d.noise_multiplier}")
  _need(defences.label_epsilon_ok(d.label_epsilon), "defence.label_epsilon",
        f"must be in (0, {defences.MAX_LABEL_EPSILON:g}] or inf (off), got {d.label_epsilon}")
  _need(0 < d.delta < 1, "defence.delta", f"must be in (0, 1), got {d.delta}")
  _need(d.target_epsilon >= 0, "defence.target_epsilon",
        f"must be >= 0 (0 = off), got {d.target_epsilon}")
  _need(not d.target_epsilon or (d.clip and d.noise), "defence.target_epsilon",
        "needs defence.clip=True and defence.noise=True")
  _need(d.accountant in ("pld", "rdp"), "defence.accountant",
        f"unknown {d.accountant!r}; known: ['pld', 'rdp']")
  _need(config.view.knowledge in KNOWLEDGE, "view.knowledge",
        f"unknown {config.view.knowledge!r}; known: {list(KNOWLEDGE)}")
  _need(config.view.knowledge != "stale" or t.mode == "fsl", "view.knowledge",
        "'stale' needs train.mode='fsl' (it is the FedAvg round-start model)")
  a = config.attack
  for name in a.names:
    _need(name in ATTACKS, "attack.names", f"unknown attack {name!r}; known: "
          f"{list(ATTACKS)}")
  _need(len(set(a.names)) == len(a.names), "attack.names",
        f"names an attack twice: {tuple(a.names)}")
  for e in a.epochs:
    _need(1 <= e <= t.num_epochs, "attack.epochs",
          f"epoch {e} is outside 1..train.num_epochs={t.num_epochs}")
  _need(0 < a.aux_fraction < 1, "attack.aux_fraction",
        f"must be in (0, 1), got {a.aux_fraction}")
  _need(0 <= a.server_model.held_out_fraction < 1,
        "attack.server_model.held_out_fraction",
        f"must be in [0, 1), got {a.server_model.held_out_fraction}")
  _need(a.exact.chunk_candidates > 0, "attack.exact.chunk_candidates",
        f"must be positive, got {a.exact.chunk_candidates}")
  _need(a.exact.chunk_mb >= 0, "attack.exact.chunk_mb",
        f"must be >= 0 (0 = the device's default), got {a.exact.chunk_mb}")
  _need(a.exact.metric in EXACT_METRICS, "attack.exact.metric",
        f"unknown {a.exact.metric!r}; known: {list(EXACT_METRICS)}")
  _need(a.bayes.prior in BAYES_PRIORS, "attack.bayes.prior",
        f"unknown {a.bayes.prior!r}; known: {list(BAYES_PRIORS)}")
  _need(a.bayes.prior not in ("chain", "label_given_private") or a.server_model.hidden > 0,
        "attack.bayes.prior", f"{a.bayes.prior!r} splits its classifiers' hidden "
        "layer; it needs attack.server_model.hidden > 0")
  _need(a.gradmatch.num_restarts > 0 and a.gradmatch.num_steps > 0,
        "attack.gradmatch", "num_restarts and num_steps must be positive")
  _need(a.gradmatch.learning_rate > 0, "attack.gradmatch.learning_rate",
        f"must be positive, got {a.gradmatch.learning_rate}")
  _need(a.gradmatch.beta_start >= 0 and a.gradmatch.beta_end > 0,
        "attack.gradmatch", "beta_start must be >= 0 (0 = no smoothing) and beta_end "
        f"positive, got {a.gradmatch.beta_start} and {a.gradmatch.beta_end}")
  _need(a.bayes.noiseless_scale > 0, "attack.bayes.noiseless_scale",
        f"must be positive, got {a.bayes.noiseless_scale}")
  _need(a.server_model.learning_rate > 0 and a.server_model.num_steps > 0,
        "attack.server_model", "learning_rate and num_steps must be positive")
  sw = config.sweep
  _need(len(sw.seeds) > 0 and len(set(sw.seeds)) == len(sw.seeds), "sweep.seeds",
        f"needs distinct seeds, got {tuple(sw.seeds)}")
  for name in ("noise_multipliers", "target_epsilons", "label_epsilons",
               "noise_with_label_epsilons"):
    values = tuple(getattr(sw, name))
    _need(all(v > 0 for v in values) and len(set(values)) == len(values),
          f"sweep.{name}", f"needs distinct positive values, got {values}")
  for name in ("label_epsilons", "noise_with_label_epsilons"):
    values = tuple(getattr(sw, name))
    _need(all(map(defences.label_epsilon_ok, values)), f"sweep.{name}",
          f"each must be <= {defences.MAX_LABEL_EPSILON:g} or inf, got {values}")
  _need(not sw.noise_with_label_epsilons or sw.noise_multipliers or sw.target_epsilons
        or sw.clip_only, "sweep.noise_with_label_epsilons", "adds label DP to the "
        "clip settings, and sweep.clip_only is False and sweep.noise_multipliers and "
        "sweep.target_epsilons are empty")
  for k in sw.knowledge:
    _need(k in KNOWLEDGE, "sweep.knowledge",
          f"unknown {k!r}; known: {list(KNOWLEDGE)}")
    _need(k != "stale" or t.mode == "fsl", "sweep.knowledge",
          "'stale' needs train.mode='fsl' (it is the FedAvg round-start model)")
  _need(len(set(sw.knowledge)) == len(sw.knowledge), "sweep.knowledge",
        f"names a setting twice: {tuple(sw.knowledge)}")
  _need(sw.max_view_gb > 0, "sweep.max_view_gb",
        f"must be positive, got {sw.max_view_gb}")
  _need(sw.max_group_size >= 0, "sweep.max_group_size",
        f"must be >= 0 (0 = no limit), got {sw.max_group_size}")
  needs_model = {"exact", "bayes_exact", "gradmatch"} & set(a.names)
  _need(not needs_model or config.view.knowledge != "none", "attack.names",
        f"{sorted(needs_model)} need the device model; view.knowledge is 'none'")


# Fields added after results were committed: at these values they change
# nothing, and the hash leaves them out, so that those results keep theirs.
_ADDED = {"data": {"balance_classes": False},
          "model": {"cut_layer_norm": False},
          "sweep": {"noise_with_label_epsilons": (), "clip_only": False},
          "train": {"server_optimizer": "adam", "device_optimizer": "adam",
                    "server_weight_decay": 0.0, "device_weight_decay": 0.0}}


def _hashed(tree: dict) -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      value = _hashed(value)
      for field, neutral in _ADDED.get(key, {}).items():
        held = value.get(field)
        if field in value and (tuple(held) if isinstance(held, (list, tuple))
                               else held) == neutral:
          del value[field]
    out[key] = value
  return out


def config_hash(config: ml_collections.ConfigDict) -> str:
  """A short, stable hash of the whole config."""
  text = json.dumps(_hashed(config.to_dict()), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]
