"""Stage-2 training pairs: perturbed ground truth penetrates, prediction
pairs keep only penetrating predictions, the .npz round trip and its errors."""

import numpy as np
import pytest

import mano_jax
from a2p_jax.diffusion import pairs as pairs_lib
from tests import diffusion_fixtures as fx


@pytest.fixture(scope='module')
def gt(models):
  rng = np.random.default_rng(0)
  return fx.placed(fx.random_params(rng, 6), models, rng, np.full(6, 0.25))


@pytest.mark.slow  # ~30 s of exact penetration tests on a loaded 2-core CPU
def test_perturbed_pairs_penetrate_and_targets_do_not(models, gt):
  g, c = pairs_lib.perturbed_pairs(gt, models, 5, seed=1, min_depth_m=0.002, candidates=8,
                                   progress=False)
  assert g['pose_6d'].shape == (5, 2, 16, 6) and c['root_cam'].shape == (5, 2, 3)
  assert np.all(pairs_lib.penetration_depth(c, models) > 0.002)
  assert np.all(pairs_lib.penetration_depth(g, models) <= 0)
  # The right hand's wrist is the anchor: never moved.
  np.testing.assert_array_equal(c['root_cam'][:, 0], g['root_cam'][:, 0])


def _reader_example(params, i, models):
  """A reader-style example (camera-space MANO fits) of parameters row i."""
  mano = {}
  for k, side in enumerate(('right', 'left')):
    rot = mano_jax.rot6d_to_matrix(params['pose_6d'][i, k])
    pose = np.asarray(mano_jax.matrix_to_axis_angle(rot)).reshape(48)
    wrist = np.asarray(mano_jax.forward(models[k], pose, params['betas'][i, k]).joints[0])
    mano[side] = {'pose': pose, 'shape': params['betas'][i, k],
                  'trans': params['root_cam'][i, k] - wrist}
  return {'mano': mano, 'index': i}


def test_prediction_pairs_keep_penetrating_predictions(models, gt):
  data = [_reader_example(gt, i, models) for i in range(4)]
  data.append({'mano': {'right': data[0]['mano']['right'], 'left': None}, 'index': -1})
  pushed = {0, 2}

  def predict(examples):
    assert all(ex['index'] >= 0 for ex in examples)  # one-hand examples are skipped
    out = {k: np.stack([v[ex['index']] for ex in examples]) for k, v in gt.items()}
    for j, ex in enumerate(examples):
      if ex['index'] in pushed:  # left wrist onto the right's: surely penetrating
        out['root_cam'][j, 1] = out['root_cam'][j, 0]
    return out

  g, c = pairs_lib.prediction_pairs(predict, data, models, batch_size=3, progress=False)
  assert len(g['betas']) == 2
  np.testing.assert_allclose(g['root_cam'], gt['root_cam'][[0, 2]], atol=1e-5)
  np.testing.assert_allclose(c['root_cam'][:, 1], gt['root_cam'][[0, 2], 0], atol=1e-6)


def test_save_load_round_trip_and_errors(tmp_path, gt):
  path = str(tmp_path / 'pairs.npz')
  pairs_lib.save(path, gt, gt, source=np.ones(6))
  g, c, src = pairs_lib.load(path)
  for k in pairs_lib.KEYS:
    np.testing.assert_array_equal(g[k], gt[k])
  assert src.tolist() == [1] * 6
  np.savez(str(tmp_path / 'bad.npz'), gt_betas=np.zeros((2, 2, 10)))
  with pytest.raises(ValueError, match='not a stage-2 pair file'):
    pairs_lib.load(str(tmp_path / 'bad.npz'))
  bad = dict(gt, betas=np.full_like(gt['betas'], np.nan))
  pairs_lib.save(str(tmp_path / 'nan.npz'), gt, bad)
  with pytest.raises(ValueError, match='cond_betas has non-finite'):
    pairs_lib.load(str(tmp_path / 'nan.npz'))
