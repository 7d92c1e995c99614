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
