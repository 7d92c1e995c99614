"""One split-learning step as explicit messages, and what the server records.

SPEC §1: the server computes h = f_s(x_s) and sends it; the device computes its
loss, updates its head and sends back the per-record cut-layer gradient
g_i = dl_i/dh_i (not divided by the batch size); the server back-propagates the
batch mean of the messages through f_s.

`ServerView` is the honest-but-curious server's whole record. It holds record
ids, h, the messages as sent, the step and epoch, and the device params only as
far as the knowledge setting allows. It never holds x_p or y: attacks take a
ServerView and nothing else from the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from splitjax.models import SplitModel

Params = Any


def server_forward(model: SplitModel, server_params: Params,
                   x_cat: jax.Array, x_num: jax.Array
                   ) -> tuple[jax.Array, Callable[[jax.Array], Params]]:
  """The server's forward pass.

  Returns:
    h: [B, d], sent to the device.
    backward: maps the received messages [B, d] to the server's parameter
      gradient, back-propagating their batch mean (the residuals of this
      forward pass are reused, so f_s runs once).
  """
  h, vjp = jax.vjp(lambda p: model.server.apply(p, x_cat, x_num), server_params)

  def backward(messages: jax.Array) -> Params:
    return vjp(messages / messages.shape[0])[0]

  return h, backward


def record_loss(model: SplitModel, device_params: Params, h: jax.Array,
                p: jax.Array, y: jax.Array) -> jax.Array:
  """The loss of one record (unbatched): l(f_d(h, p), y)."""
  logits = model.head.apply(device_params, h[None], p[None])[0]
  return model.loss(logits, y)


class DeviceOut(NamedTuple):
  loss: jax.Array      # mean loss over the batch
  grads: Params        # gradient of the mean loss w.r.t. the device params
  messages: jax.Array  # [B, d] per-record dl_i/dh_i, before any defence


def device_step(model: SplitModel, device_params: Params, h: jax.Array,
                p: jax.Array, y: jax.Array) -> DeviceOut:
  """The device's computation on a batch: loss, its own gradient, messages.

  Since l_i depends on h only through h_i, the gradient of sum_i l_i w.r.t. h
  is exactly the per-record messages, and one backward pass gives them and the
  parameter gradient together.
  """
  def total(params, h):
    losses = jax.vmap(record_loss, (None, None, 0, 0, 0))(model, params, h, p, y)
    return losses.sum(), losses

  (_, losses), (g_params, g_h) = jax.value_and_grad(
      total, argnums=(0, 1), has_aux=True)(device_params, h)
  batch = h.shape[0]
  g_params = jax.tree.map(lambda g: g / batch, g_params)
  return DeviceOut(losses.mean(), g_params, g_h)


class ServerView(NamedTuple):
  """What the server records, stacked over the steps of an epoch.

  Leading axes are [steps] then [batch] (SL) or [clients x client batch]
  (FSL). `device_params` has a leading [steps, P] axis: P = 1 for SL and for
  FSL's stale knowledge (the round-start average), P = clients for FSL
  white-box; `param_index[s, b]` says which of the P a record's message was
  computed with. It is None under knowledge 'none'.
  """
  ids: jax.Array          # int32 [S, B] record ids (rows of the train split)
  h: jax.Array            # float32 [S, B, d]
  messages: jax.Array     # float32 [S, B, d], as sent (after the defence)
  step: jax.Array         # int32 [S] global step
  epoch: jax.Array        # int32 [S]
  param_index: jax.Array  # int32 [S, B]
  device_params: Params | None

  @property
  def batch_size(self) -> int:
    return self.ids.shape[-1]
