"""experiments/exit_vs_error.py's noising: moved pairs penetrate, their
truth is the clear pair they came from, and the error it reports is the
left hand's move (procedural hand, NOT MANO)."""

import importlib.util
import os

import numpy as np
import pytest

from a2p_jax.data.hands import load_hand_models
from tests import diffusion_fixtures as fx

_PATH = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'exit_vs_error.py')


@pytest.fixture(scope='module')
def xve():
  spec = importlib.util.spec_from_file_location('exit_vs_error', _PATH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_noised_pairs_penetrate_and_their_error_is_the_move(xve):
  models = load_hand_models(None)
  gt = fx.touching(models, np.random.default_rng(3), 4)
  gt = dict(gt, focal=np.full((4, 2), 500.0, np.float32), princpt=np.full((4, 2), 128.0,
                                                                             np.float32))
  depth = xve.depth_fn(models)   # (fx.touching checked that gt does not penetrate)
  moved, truth = xve.noised(gt, 40.0, 6, np.random.default_rng(0), depth, 0.001)
  n = len(moved['betas'])
  assert 0 < n <= 6
  assert np.all(depth(moved) > 0.001)
  # Each truth is one of the clear pairs, the moved pair its copy but for the left root.
  for i in range(n):
    j = int(np.argmin(np.abs(gt['root_cam'] - truth['root_cam'][i]).sum((1, 2))))
    for k in gt:
      np.testing.assert_array_equal(truth[k][i], gt[k][j])
      if k != 'root_cam':
        np.testing.assert_array_equal(moved[k][i], gt[k][j])
    np.testing.assert_array_equal(moved['root_cam'][i, 0], gt['root_cam'][j, 0])
  want = 1000.0 * np.linalg.norm(moved['root_cam'][:, 1].astype(np.float64)
                                 - truth['root_cam'][:, 1], axis=-1)
  np.testing.assert_allclose(xve.rel_error_mm(moved, truth), want, rtol=1e-5)
