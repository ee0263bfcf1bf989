"""ResNet feature extractors: torchvision's parameter counts, shapes, BN modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from a2p_jax.models.resnet import ResNet, num_params, out_channels


@pytest.mark.parametrize('depth,count', [(18, 11_176_512), (50, 23_508_032)])
def test_param_counts_match_torchvision_without_fc(depth, count):
  model = nnx.eval_shape(lambda: ResNet(depth, 64, rngs=nnx.Rngs(0)))
  assert num_params(model) == count


def test_resnet50_feature_map_shape():
  model = nnx.eval_shape(lambda: ResNet(50, 4, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  y = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                     jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32))
  assert y.shape == (2, 2, 3, 128) and out_channels(50, 4) == 128


def test_feature_map_shape_and_batchnorm_modes(depth=18):
  model = ResNet(depth, 4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))
  fwd = nnx.jit(lambda m, x: m(x))
  y = fwd(model, x)
  assert y.shape == (2, 2, 3, out_channels(depth, 4)) == (2, 2, 3, model.out_channels)
  assert np.all(np.isfinite(np.asarray(y)))
  # train(): batch statistics, running averages move; eval(): they are used, frozen.
  stats0 = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
  model.eval()
  y_eval = fwd(model, x)
  stats1 = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
  assert all(np.array_equal(a, b) for a, b in zip(stats0, stats1))
  assert not np.allclose(y, y_eval)


def test_bad_depth_is_refused():
  with pytest.raises(ValueError, match='depth'):
    ResNet(101, rngs=nnx.Rngs(0))
