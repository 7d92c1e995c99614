"""A synthetic table with a known dependence between server, private and label.

Generated in vectorised NumPy, in chunks of `_CHUNK_ROWS` rows, so 10^7 rows
take seconds and bounded memory; no per-row Python work.

The generative model (all weights drawn once from `seed`):
- server numerics x ~ N(0, I); server categoricals uniform;
- private categorical j ~ softmax(dependence * (x A_j + E_j[server cats])
  + private_chain * onehot(private categorical j - 1)), so with
  private_chain > 0 each leans to the value of the one before it, beyond
  what the server's features say;
- private numeric k = dependence * x b_k + N(0, 1);
- label ~ softmax(x W + sum_j V_j[private cat j] + private numerics U),
  so the private features carry label signal the server lacks.
`dependence` = 0 makes the private features independent of the server's.
"""

from __future__ import annotations

import numpy as np

from splitjax.data.schema import LABEL, Column, RawTable, TableSpec

_CHUNK_ROWS = 1 << 20


def spec_of(cfg) -> TableSpec:
  """The TableSpec of a synthetic config (`config.data.synthetic`)."""
  def vocab(k):
    return tuple(str(i) for i in range(k))
  cols = ([Column(f"s_cat_{i}", vocab(cfg.server_vocab_size))
           for i in range(cfg.num_server_categorical)]
          + [Column(f"s_num_{i}") for i in range(cfg.num_server_numeric)]
          + [Column(f"p_cat_{i}", vocab(cfg.private_vocab_size))
             for i in range(cfg.num_private_categorical)]
          + [Column(f"p_num_{i}") for i in range(cfg.num_private_numeric)])
  private = tuple(c.name for c in cols if c.name.startswith("p_"))
  return TableSpec("synthetic", tuple(cols), vocab(cfg.num_classes), private)


def generate(cfg) -> dict[str, RawTable]:
  """Generates the train and test splits of `config.data.synthetic`."""
  rng = np.random.default_rng(cfg.seed)
  ns, vs = cfg.num_server_numeric, cfg.server_vocab_size
  cs, cp, vp = cfg.num_server_categorical, cfg.num_private_categorical, cfg.private_vocab_size
  npn, k = cfg.num_private_numeric, cfg.num_classes
  a = rng.normal(size=(cp, ns, vp)) / np.sqrt(max(ns, 1))
  e = rng.normal(size=(cp, cs, vs, vp))
  b = rng.normal(size=(npn, ns)) / np.sqrt(max(ns, 1))
  w = rng.normal(size=(ns, k)) / np.sqrt(max(ns, 1))
  v = rng.normal(size=(cp, vp, k)) * cfg.private_signal
  u = rng.normal(size=(npn, k)) * cfg.private_signal

  n = cfg.num_examples
  parts = []
  for start in range(0, n, _CHUNK_ROWS):
    m = min(_CHUNK_ROWS, n - start)
    x = rng.normal(size=(m, ns)).astype(np.float32)
    s_cat = rng.integers(0, vs, size=(m, cs))
    p_cat = np.empty((m, cp), np.int64)
    for j in range(cp):
      logits = x @ a[j] + sum(e[j, i][s_cat[:, i]] for i in range(cs))
      logits = cfg.dependence * logits
      if j and cfg.private_chain:
        logits = logits + cfg.private_chain * np.eye(vp)[p_cat[:, j - 1]]
      p_cat[:, j] = _sample(rng, logits)
    p_num = (cfg.dependence * x @ b.T + rng.normal(size=(m, npn))).astype(np.float32)
    label_logits = x @ w + p_num @ u
    for j in range(cp):
      label_logits = label_logits + v[j][p_cat[:, j]]
    y = _sample(rng, label_logits)
    parts.append((x, s_cat, p_cat, p_num, y))

  x, s_cat, p_cat, p_num, y = (np.concatenate(z) for z in zip(*parts))
  table = {}
  for i in range(cs):
    table[f"s_cat_{i}"] = s_cat[:, i].astype(np.int32)
  for i in range(ns):
    table[f"s_num_{i}"] = x[:, i]
  for j in range(cp):
    table[f"p_cat_{j}"] = p_cat[:, j].astype(np.int32)
  for j in range(npn):
    table[f"p_num_{j}"] = p_num[:, j]
  table[LABEL] = y.astype(np.int32)
  num_test = int(round(n * cfg.test_fraction))
  return {"train": {c: t[num_test:] for c, t in table.items()},
          "test": {c: t[:num_test] for c, t in table.items()}}


def _sample(rng, logits):
  """One categorical draw per row (Gumbel-max)."""
  return np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1)
