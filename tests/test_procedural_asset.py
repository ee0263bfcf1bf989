"""The shipped procedural hand is what the generator makes, deterministically."""

import os
import subprocess
import sys

import numpy as np
import pytest

import mano_jax
from mano_jax import procedural
from tests.conftest import FAST_COMPILE


def test_generator_pieces_are_deterministic():
  # (The whole asset is checked by the slow test below.)
  p = procedural.HandParams(scale=1.05, finger_length=(1.0, 1.1, 0.95, 1.0))
  v1, j1, _, _ = procedural.shaped_mesh(p)
  v2, j2, chains, _ = procedural.shaped_mesh(p)
  np.testing.assert_array_equal(v1, v2)
  np.testing.assert_array_equal(j1, j2)
  a = procedural.sample_natural_poses(chains, 200, np.random.default_rng(7))
  b = procedural.sample_natural_poses(chains, 200, np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='num_shape_samples'):
    procedural.generate(num_shape_samples=5)


def test_pose_pca_has_a_grasp_synergy():
  # The first pose component moves every finger's flexion the same way.
  m = mano_jax.load_procedural('right')
  comp = np.asarray(m.hands_components[0]).reshape(15, 3)
  _, chains = procedural.skeleton(procedural.HandParams())
  flex = []
  for name in procedural.FINGERS:
    for j in procedural.FINGER_JOINTS[name]:
      flex.append(comp[j - 1] @ chains[name].flex_axis)
  flex = np.array(flex)
  assert np.all(np.sign(flex) == np.sign(flex[0]))
  assert np.min(np.abs(flex)) > 0.05


@pytest.mark.slow
def test_shipped_asset_regenerates_exactly(tmp_path):
  # As `make asset` makes it: its own process, without the test session's
  # XLA flags (they change float64 results by ~1e-10, tests/conftest.py).
  env = dict(os.environ)
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(FAST_COMPILE, '').strip()
  subprocess.run([sys.executable, '-m', 'mano_jax.procedural', '--out', str(tmp_path)],
                 env=env, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  for side in ('right', 'left'):
    fresh = np.load(tmp_path / f'procedural_hand_{side}.npz')
    shipped = np.load(f'{procedural.ASSET_DIR}/procedural_hand_{side}.npz')
    assert sorted(fresh.files) == sorted(shipped.files)
    for k in fresh.files:
      if k == 'hands_components':
        _same_pose_basis(fresh, shipped, side)
      elif fresh[k].dtype.kind == 'f':
        np.testing.assert_allclose(fresh[k], shipped[k], rtol=0, atol=1e-12,
                                   err_msg=f'{side} {k}')
      else:
        np.testing.assert_array_equal(fresh[k], shipped[k], err_msg=f'{side} {k}')


def _same_pose_basis(fresh, shipped, side):
  """The pose PCA: components with variance equal exactly; the sampled poses
  have rank 25 of 45, and the remaining rows are an arbitrary orthonormal
  basis of the null space (which one depends on the LAPACK build), so only
  the subspace they span is compared, through its projector."""
  std = shipped['hands_coeffs_std']
  r = int(np.sum(std > 1e-10 * std[0]))
  assert r == 25, f'{side}: pose PCA rank {r}'
  a, b = fresh['hands_components'], shipped['hands_components']
  np.testing.assert_allclose(a[:r], b[:r], rtol=0, atol=1e-12, err_msg=f'{side} components')
  np.testing.assert_allclose(a @ a.T, np.eye(45), atol=1e-12, err_msg=f'{side} orthonormal')
  np.testing.assert_allclose(a[r:].T @ a[r:], b[r:].T @ b[r:], rtol=0, atol=1e-12,
                             err_msg=f'{side} null-space projector')
