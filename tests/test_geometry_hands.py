"""A penetrating pair of procedural MANO-format hands (not MANO)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from a2p_jax import geometry

try:
  from tests import geometry_meshes as meshes
except ImportError:
  import geometry_meshes as meshes



@pytest.fixture(scope='module')
def hands():
  right, left = mano_jax.load_procedural('right'), mano_jax.load_procedural('left')
  vr = np.asarray(mano_jax.forward(right, jnp.zeros(48)).vertices)
  vl = np.asarray(mano_jax.forward(left, jnp.zeros(48)).vertices)
  return vr, np.asarray(right.faces), vl, np.asarray(left.faces)


@pytest.mark.parametrize('offset', [(0.1, 0.0, 0.07), (0.1, 0.0, 0.0725), (0.0, 0.0, 0.062)])
def test_hand_pair_volume_vs_reference(hands, offset):
  vr, fr, vl, fl = hands
  vl = vl + np.float32(offset)  # left hand pushed into the right one from above
  sr, sfr = geometry.seal(jnp.asarray(vr), fr)
  sl, sfl = geometry.seal(jnp.asarray(vl), fl)
  ref = meshes.boolean_volume(sr, sfr, sl, sfl)
  assert ref > 0.1e-6
  vol = float(geometry.penetration_volume(vr, fr, vl, fl))
  np.testing.assert_allclose(vol, ref, rtol=0.05 if ref >= 1e-6 else 0.10)
  assert bool(geometry.penetrates(vr, fr, vl, fl))
  assert 0.0 < float(geometry.penetration_depth(vr, fr, vl, fl)) < 0.02


def test_hand_pair_collision_loss_pushes_apart(hands):
  vr, fr, vl, fl = hands
  vl = jnp.asarray(vl + np.float32([0.1, 0.0, 0.07]))

  def loss(shift):
    return geometry.collision_loss(vr, fr, vl + shift[None], fl)

  value, grad = jax.value_and_grad(loss)(jnp.zeros(3))
  assert float(value) > 0 and np.all(np.isfinite(grad))
  assert grad[2] < 0  # the left hand is above: descending lifts it
  far = vl + jnp.asarray([0.0, 0.0, 0.2])[None]
  assert float(geometry.collision_loss(vr, fr, far, fl)) == 0.0
  assert float(geometry.penetration_volume(vr, fr, far, fl)) == 0.0
  assert not bool(geometry.penetrates(vr, fr, far, fl))
