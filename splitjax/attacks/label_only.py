"""Label-only attacks: no device model, just the messages (binary labels).

After Li et al., "Label Leakage and Protection in Two-party Split Learning"
(ICLR 2022):
- norm: a record's label is scored by its message's L2 norm (with a skewed
  label and a confident model, the rare class gets the larger gradients);
- direction: by the cosine between its message and a reference direction,
  here the difference of the summed messages of the auxiliary records of each
  class in the same step (for one logit, dl/dh = (sigmoid - y) dlogit/dh, so
  the two classes point opposite ways).
Both orient the score and pick the threshold that maximises accuracy on the
auxiliary records, whose labels the server knows; predictions cover every
record released in the view.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from splitjax.attacks.knowledge import AuxSample
from splitjax.errors import ConfigError
from splitjax.protocol import ServerView


class LabelScores(NamedTuple):
  score: np.ndarray  # float32 [N], higher = more likely label 1
  label: np.ndarray  # int32 [N]
  seen: np.ndarray   # bool [N]


def _by_record(view: ServerView, values, num_records):
  ids = np.asarray(view.ids).ravel()
  out = np.zeros(num_records, np.float32)
  out[ids] = np.asarray(values).ravel()
  seen = np.zeros(num_records, bool)
  seen[ids] = True
  return out, seen


def _fit_threshold(score, aux: AuxSample, seen):
  """Orientation and threshold that best separate the aux records' labels."""
  ids = np.asarray(aux.ids)
  ids = ids[seen[ids]]
  y = np.asarray(aux.y)[seen[np.asarray(aux.ids)]]
  s = score[ids]
  best = (-1.0, 1.0, 0.0)
  for sign in (1.0, -1.0):
    cand = np.sort(sign * s)
    for t in np.concatenate([cand[::max(1, len(cand) // 512)], [np.inf]]):
      acc = np.mean((sign * s >= t) == (y == 1))
      if acc > best[0]:
        best = (acc, sign, t)
  _, sign, t = best
  return sign * score, (sign * score >= t).astype(np.int32)


def _check(num_labels):
  if num_labels != 2:
    raise ConfigError("label-only attacks need a binary label")


def norm_attack(view: ServerView, aux: AuxSample, num_records: int,
                num_labels: int) -> LabelScores:
  _check(num_labels)
  norms = jnp.linalg.norm(view.messages, axis=-1)
  score, seen = _by_record(view, norms, num_records)
  oriented, label = _fit_threshold(score, aux, seen)
  return LabelScores(oriented, label, seen)


def direction_attack(view: ServerView, aux: AuxSample, num_records: int,
                     num_labels: int) -> LabelScores:
  _check(num_labels)
  known = np.full(num_records, -1, np.int32)
  known[np.asarray(aux.ids)] = np.asarray(aux.y)
  ids = np.asarray(view.ids)
  sign = jnp.asarray(np.where(known[ids] == 1, 1.0, np.where(known[ids] == 0, -1.0, 0.0)))
  m = view.messages
  ref = (sign[..., None] * m).sum(axis=1, keepdims=True)  # [S, 1, d]
  global_ref = ref.sum(axis=0, keepdims=True)
  ref = jnp.where(jnp.linalg.norm(ref, axis=-1, keepdims=True) > 0, ref, global_ref)
  cos = (m * ref).sum(-1) / jnp.maximum(
      jnp.linalg.norm(m, axis=-1) * jnp.linalg.norm(ref, axis=-1), 1e-12)
  score, seen = _by_record(view, cos, num_records)
  oriented, label = _fit_threshold(score, aux, seen)
  return LabelScores(oriented, label, seen)
