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


def randomized_response(key: jax.Array, labels: jax.Array, num_classes: int,
                        epsilon: jax.Array | float) -> jax.Array:
  """k-ary randomized response: keep the label w.p. e^eps / (e^eps + k - 1).

  Otherwise report one of the other k - 1 labels uniformly. epsilon = inf
  keeps every label.

  Guarantee: epsilon-label-DP for each record's label (replace-one on y);
  drawn once, so it does not compose over epochs.
  """
  k_keep, k_other = jax.random.split(key)
  keep_prob = jnp.where(jnp.isinf(epsilon), 1.0,
                        jnp.exp(epsilon) / (jnp.exp(epsilon) + num_classes - 1))
  keep = jax.random.uniform(k_keep, labels.shape) < keep_prob
  shift = jax.random.randint(k_other, labels.shape, 1, num_classes)
  return jnp.where(keep, labels, (labels + shift) % num_classes).astype(labels.dtype)
