"""The split model: a server tower f_s(x_s) -> h and a device head f_d(h, x_p).

The device head takes the private features already encoded as one dense
vector `p` (one-hot categoricals, then standardised numerics). That keeps the
head a plain function of (h, p), which is what the attacks need: EXACT feeds it
enumerated one-hot candidates, and the gradient-matching optimiser feeds it
relaxed (softmax) ones.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from splitjax.data.schema import Schema


class ServerTower(nn.Module):
  """f_s: embeds server categoricals, concatenates numerics, MLP to the cut.

  With `cut_layer_norm` each record's h is normalised over its d coordinates
  (zero mean, unit variance; no learned scale or offset), so ||h|| is
  sqrt(d) whatever the tower's weights: a tower that cannot lengthen h.
  """
  vocab_sizes: tuple[int, ...]
  embed_dim: int
  hidden: tuple[int, ...]
  cut_dim: int
  cut_layer_norm: bool = False

  @nn.compact
  def __call__(self, x_cat: jax.Array, x_num: jax.Array) -> jax.Array:
    parts = [nn.Embed(v, self.embed_dim, name=f"embed_{j}")(x_cat[..., j])
             for j, v in enumerate(self.vocab_sizes)]
    x = jnp.concatenate(parts + [x_num], axis=-1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
    h = nn.Dense(self.cut_dim, name="cut")(x)
    if self.cut_layer_norm:
      h = nn.LayerNorm(use_bias=False, use_scale=False, name="cut_norm")(h)
    return h


class DeviceHead(nn.Module):
  """f_d: concatenates h with the encoded private input, MLP to the logits.

  With `private_encoding='embed'` each one-hot block first goes through a
  bias-free linear map (an embedding that also accepts relaxed inputs).
  """
  private_vocab_sizes: tuple[int, ...]
  private_encoding: str
  private_embed_dim: int
  hidden: tuple[int, ...]
  num_outputs: int

  @nn.compact
  def __call__(self, h: jax.Array, p: jax.Array) -> jax.Array:
    if self.private_encoding == "embed" and self.private_vocab_sizes:
      blocks, start = [], 0
      for j, v in enumerate(self.private_vocab_sizes):
        blocks.append(nn.Dense(self.private_embed_dim, use_bias=False,
                               name=f"embed_{j}")(p[..., start:start + v]))
        start += v
      p = jnp.concatenate(blocks + [p[..., start:]], axis=-1)
    x = jnp.concatenate([h, p], axis=-1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.num_outputs, name="logits")(x)


@dataclasses.dataclass(frozen=True)
class SplitModel:
  """Both halves, the private encoding and the loss of one schema."""
  server: ServerTower
  head: DeviceHead
  num_classes: int
  num_private_numeric: int = 0

  @property
  def private_vocab_sizes(self) -> tuple[int, ...]:
    return self.head.private_vocab_sizes

  def encode_private(self, x_cat: jax.Array, x_num: jax.Array) -> jax.Array:
    """One-hot categoricals then numerics: the head's private input `p`."""
    parts = [jax.nn.one_hot(x_cat[..., j], v, dtype=jnp.float32)
             for j, v in enumerate(self.private_vocab_sizes)]
    return jnp.concatenate(parts + [x_num.astype(jnp.float32)], axis=-1)

  @property
  def private_dim(self) -> int:
    return sum(self.private_vocab_sizes) + self.num_private_numeric

  def init(self, key: jax.Array, num_server_numeric: int):
    """Initial (server_params, device_params)."""
    k_server, k_head = jax.random.split(key)
    n_cat = len(self.server.vocab_sizes)
    server_params = self.server.init(
        k_server, jnp.zeros((1, n_cat), jnp.int32),
        jnp.zeros((1, num_server_numeric)))
    device_params = self.head.init(
        k_head, jnp.zeros((1, self.server.cut_dim)),
        jnp.zeros((1, self.private_dim)))
    return server_params, device_params

  def loss(self, logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-record cross-entropy (sigmoid for two classes)."""
    if self.num_classes == 2:
      return optax.sigmoid_binary_cross_entropy(logits[..., 0],
                                                y.astype(jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)

  def probabilities(self, logits: jax.Array) -> jax.Array:
    """Class probabilities, [..., num_classes]."""
    if self.num_classes == 2:
      p1 = jax.nn.sigmoid(logits[..., 0])
      return jnp.stack([1.0 - p1, p1], axis=-1)
    return jax.nn.softmax(logits, axis=-1)


def make_model(schema: Schema, model_config) -> SplitModel:
  """Builds the split model for a schema from `config.model`."""
  num_outputs = 1 if schema.num_classes == 2 else schema.num_classes
  server = ServerTower(
      vocab_sizes=tuple(f.vocab_size for f in schema.server_categorical),
      embed_dim=model_config.embed_dim,
      hidden=tuple(model_config.server_hidden),
      cut_dim=model_config.cut_dim, cut_layer_norm=model_config.cut_layer_norm)
  head = DeviceHead(
      private_vocab_sizes=tuple(f.vocab_size for f in schema.private_categorical),
      private_encoding=model_config.private_encoding,
      private_embed_dim=model_config.private_embed_dim,
      hidden=tuple(model_config.device_hidden),
      num_outputs=num_outputs)
  return SplitModel(server, head, schema.num_classes,
                    num_private_numeric=len(schema.private_numeric))


# The device head split at its first layer. Attacks evaluate the head for many
# candidate private inputs per record: the first layer's pre-activation is
# (record part h @ W_h + b) + (candidate part p @ W_p), so each part is computed
# once (per record, per candidate) instead of once per pair.


def _first_layer_name(model: SplitModel) -> str:
  return "hidden_0" if model.head.hidden else "logits"


def head_record_pre(model: SplitModel, device_params, h: jax.Array) -> jax.Array:
  """h @ W_h + b: the record's part of the first pre-activation, [..., H]."""
  layer = device_params["params"][_first_layer_name(model)]
  d = h.shape[-1]
  return h @ layer["kernel"][:d] + layer["bias"]


def head_w_h(model: SplitModel, device_params) -> jax.Array:
  """W_h [d, H]: the first layer's weights on h (d = cut_dim)."""
  layer = device_params["params"][_first_layer_name(model)]
  return layer["kernel"][:model.server.cut_dim]


def head_private_pre(model: SplitModel, device_params, p: jax.Array) -> jax.Array:
  """p @ W_p (after the embedding, if any): the candidate's part, [..., H]."""
  params = device_params["params"]
  head = model.head
  if head.private_encoding == "embed" and head.private_vocab_sizes:
    blocks, start = [], 0
    for j, v in enumerate(head.private_vocab_sizes):
      blocks.append(p[..., start:start + v] @ params[f"embed_{j}"]["kernel"])
      start += v
    p = jnp.concatenate(blocks + [p[..., start:]], axis=-1)
  return p @ params[_first_layer_name(model)]["kernel"][model.server.cut_dim:]


def head_tail(model: SplitModel, device_params, pre: jax.Array,
              activation=nn.relu) -> jax.Array:
  """The head from its first pre-activation to the logits.

  `activation` lets an attacker evaluate a smoothed surrogate of the ReLU.
  """
  params = device_params["params"]
  if not model.head.hidden:
    return pre
  x = activation(pre)
  for i in range(1, len(model.head.hidden)):
    layer = params[f"hidden_{i}"]
    x = activation(x @ layer["kernel"] + layer["bias"])
  return x @ params["logits"]["kernel"] + params["logits"]["bias"]
