"""Defences applied on the device, before a message leaves it.

Message defences compose like optax transformations: each factory returns a
`MessageTransform` whose `update(messages, key)` returns the messages to send.
Their parameters may be traced values, so one compiled program can vmap over a
batch of settings (clip norms, noise multipliers).

Label DP (`randomized_response`) is drawn once per record before training; the
noisy label then stays fixed.

This module imports no model code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class MessageTransform(NamedTuple):
  """update(messages [B, d], key) -> messages [B, d]."""
  update: Callable[[jax.Array, jax.Array], jax.Array]


def clip_by_l2_norm(clip_norm: jax.Array | float) -> MessageTransform:
  """Clips each record's message to L2 norm `clip_norm` (0 = no clipping).

  Guarantee: after clipping, replacing one record's (x_p, y) changes its
  message by at most 2 * clip_norm in L2 (replace-one neighbouring relation).
  """
  def update(messages, key):
    del key
    norms = jnp.linalg.norm(messages, axis=-1, keepdims=True)
    scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-12))
    return jnp.where(clip_norm > 0, messages * scale, messages)
  return MessageTransform(update)


def add_gaussian_noise(stddev: jax.Array | float) -> MessageTransform:
  """Adds N(0, stddev^2 I) to each record's message, independently.

  Guarantee: with messages clipped to C and stddev = sigma * C, each release
  of a record's message is a Gaussian mechanism with L2 sensitivity 2C under
  replacement, i.e. mu = 2 / sigma in mu-GDP; the accountant composes one such
  release per epoch with no subsampling amplification (the server knows which
  record each message belongs to).
  """
  def update(messages, key):
    return messages + stddev * jax.random.normal(key, messages.shape,
                                                 messages.dtype)
  return MessageTransform(update)


def chain(*transforms: MessageTransform) -> MessageTransform:
  """Applies transforms in order, each with its own key."""
  def update(messages, key):
    keys = jax.random.split(key, len(transforms))
    for t, k in zip(transforms, keys):
      messages = t.update(messages, k)
    return messages
  return MessageTransform(update)


# The largest finite epsilon_label that randomized_response honours. Its draw
# compares a float32 uniform (a multiple of 2^-23) with a float32 keep
# probability, so the flip probability it realises is rounded. The realised
# epsilon (tests/defences_test.py) is within 1e-3 of the nominal one up to 10
# (k = 2: 9.9995; k = 5: 10.00006; 1 and 3: +2e-7), 0.01 over at 12, 0.25
# over at 15 (k = 2), and from about 17 every label is kept (epsilon inf).
MAX_LABEL_EPSILON = 10.0


def label_epsilon_ok(epsilon: float) -> bool:
  """Whether randomized_response realises epsilon: in (0, MAX_LABEL_EPSILON]
  or inf (off)."""
  return epsilon == math.inf or 0 < epsilon <= MAX_LABEL_EPSILON


def rr_probabilities(epsilon, num_classes: int, xp=jnp):
  """(keep, other): the probability that k-ary randomized response at epsilon
  reports the true label, and that it reports each one other label. epsilon =
  inf gives (1, 0). `xp` is jnp (traceable) or np (float64: accounting and
  the attacks' posteriors)."""
  e = xp.exp(xp.minimum(epsilon, 80.0))  # no inf / inf; keep is 1.0 long before
  keep = xp.where(xp.isinf(epsilon), 1.0, e / (e + num_classes - 1))
  other = xp.where(xp.isinf(epsilon), 0.0, (1.0 - keep) / max(num_classes - 1, 1))
  return keep, other


def randomized_response(key: jax.Array, labels: jax.Array, num_classes: int,
                        epsilon: jax.Array | float) -> jax.Array:
  """k-ary randomized response: keep the label w.p. e^eps / (e^eps + k - 1).

  Otherwise report one of the other k - 1 labels uniformly. epsilon = inf
  keeps every label. Above MAX_LABEL_EPSILON the float32 draw no longer
  realises the epsilon asked for (configs refuse it).

  Guarantee: epsilon-label-DP for each record's label (replace-one on y),
  up to the float32 rounding of the draw (within 1e-3 of epsilon up to
  MAX_LABEL_EPSILON, 2e-7 at 1 and 3); drawn once, so it does not compose
  over epochs.
  """
  k_keep, k_other = jax.random.split(key)
  keep_prob, _ = rr_probabilities(epsilon, num_classes)
  keep = jax.random.uniform(k_keep, labels.shape) < keep_prob
  shift = jax.random.randint(k_other, labels.shape, 1, num_classes)
  return jnp.where(keep, labels, (labels + shift) % num_classes).astype(labels.dtype)
