"""The split model and its first-layer decomposition used by the attacks."""

import jax
import numpy as np
import pytest

from splitjax import data, models
from conftest import small_config


@pytest.mark.parametrize("encoding,hidden", [("one_hot", (8,)), ("embed", (8, 6)),
                                             ("one_hot", ())])
def test_head_decomposition_matches_head(encoding, hidden):
  c = small_config(model__private_encoding=encoding, model__device_hidden=hidden,
                   data__private_features=("p_cat_0", "p_cat_1", "p_num_0"),
                   data__synthetic__num_private_numeric=1)
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  _, dp = model.init(jax.random.key(0), ds.train.x_s_num.shape[1])
  h = jax.random.normal(jax.random.key(1), (16, c.model.cut_dim))
  p = model.encode_private(ds.train.x_p_cat[:16], ds.train.x_p_num[:16])
  want = model.head.apply(dp, h, p)
  pre = models.head_record_pre(model, dp, h) + models.head_private_pre(model, dp, p)
  np.testing.assert_allclose(models.head_tail(model, dp, pre), want, rtol=1e-5,
                             atol=1e-6)
  assert model.private_dim == p.shape[1] == 3 + 3 + 1


def test_server_tower_shapes():
  c = small_config()
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  sp, _ = model.init(jax.random.key(0), ds.train.x_s_num.shape[1])
  h = model.server.apply(sp, ds.train.x_s_cat[:5], ds.train.x_s_num[:5])
  assert h.shape == (5, c.model.cut_dim)


def test_cut_layer_norm_fixes_each_records_h_length():
  # Known answer: normalised over its d coordinates, every h has mean 0,
  # variance 1 (up to LayerNorm's epsilon 1e-6) and so ||h|| = sqrt(d),
  # however large the cut layer's weights; the params are the plain
  # tower's, and its h is that h normalised.
  ds = data.load(small_config().data)
  x = (ds.train.x_s_cat[:7], ds.train.x_s_num[:7])
  plain = models.make_model(ds.schema, small_config().model)
  normed = models.make_model(ds.schema, small_config(model__cut_layer_norm=True).model)
  sp, _ = plain.init(jax.random.key(0), ds.train.x_s_num.shape[1])
  sp_n, _ = normed.init(jax.random.key(0), ds.train.x_s_num.shape[1])
  assert jax.tree.structure(sp) == jax.tree.structure(sp_n)
  sp = jax.tree.map(lambda a: 1e3 * a, sp)  # a tower whose h is long
  raw = np.asarray(plain.server.apply(sp, *x), np.float64)
  h = np.asarray(normed.server.apply(sp, *x), np.float64)
  d = h.shape[1]
  assert np.linalg.norm(raw, axis=1).min() > 10 * np.sqrt(d)
  np.testing.assert_allclose(h.mean(1), 0.0, atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(h, axis=1), np.sqrt(d), rtol=1e-4)
  want = (raw - raw.mean(1, keepdims=True)) / raw.std(1, keepdims=True)
  np.testing.assert_allclose(h, want, rtol=1e-3, atol=1e-4)
