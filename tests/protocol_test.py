"""The message protocol: messages are per-record dl_i/dh_i; the server's
backward of their mean is the true gradient of the mean loss."""

import jax
import jax.numpy as jnp
import numpy as np

from splitjax import data, models, protocol
from conftest import small_config


def _setup():
  c = small_config()
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  sp, dp = model.init(jax.random.key(0), ds.train.x_s_num.shape[1])
  x = jax.tree.map(lambda a: a[:32], ds.train)
  return model, sp, dp, x


def test_messages_are_per_record_gradients_not_divided_by_batch():
  model, sp, dp, x = _setup()
  h, _ = protocol.server_forward(model, sp, x.x_s_cat, x.x_s_num)
  p = model.encode_private(x.x_p_cat, x.x_p_num)
  out = protocol.device_step(model, dp, h, p, x.y)
  for i in (0, 5, 31):
    g_i = jax.grad(protocol.record_loss, argnums=2)(model, dp, h[i], p[i], x.y[i])
    np.testing.assert_allclose(out.messages[i], g_i, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(out.messages).max()) > 1e-4


def test_device_grads_and_server_backward_match_end_to_end_gradient():
  model, sp, dp, x = _setup()
  p = model.encode_private(x.x_p_cat, x.x_p_num)

  def mean_loss(sp, dp):
    h = model.server.apply(sp, x.x_s_cat, x.x_s_num)
    return model.loss(model.head.apply(dp, h, p), x.y).mean()

  want_s, want_d = jax.grad(mean_loss, argnums=(0, 1))(sp, dp)
  h, backward = protocol.server_forward(model, sp, x.x_s_cat, x.x_s_num)
  out = protocol.device_step(model, dp, h, p, x.y)
  got_s = backward(out.messages)
  for got, want in ((got_s, want_s), (out.grads, want_d)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 got, want)


def test_server_view_has_no_private_field():
  fields = set(protocol.ServerView._fields)
  assert fields == {"ids", "h", "messages", "step", "epoch", "param_index",
                    "device_params"}
