"""mano_jax vs smplx.MANO outputs stored by tests/golden/make_smplx_golden.py."""


import jax
import numpy as np
import pytest

import mano_jax
from tests.golden import make_smplx_golden

GOLDEN = make_smplx_golden.OUT


@pytest.fixture(scope='module')
def golden():
  return dict(np.load(GOLDEN))


@pytest.mark.parametrize('side', ['right', 'left'])
def test_matches_smplx(golden, side):
  model = mano_jax.load_procedural(side)
  assert str(golden[f'{side}_digest']) == make_smplx_golden.model_digest(model), (
      'the procedural asset changed since the golden file was made: rerun '
      'tests/golden/make_smplx_golden.py')
  keys = sorted({k.rsplit('_', 2)[0] + '_' + k.split('_')[2]
                 for k in golden if k.startswith(side + '_') and k.endswith('_vertices')})
  assert len(keys) == 6
  with jax.enable_x64(True):
    for key in keys:
      g = lambda s: golden[f'{key}_{s}']
      flat = key.endswith('flat')
      # smplx silently treats num_pca_comps=45 as axis-angle (use_pca is
      # switched off); mano_jax never switches, so compare those as axis-angle.
      if '_pca' in key and not key.startswith(f'{side}_pca45'):
        pose = np.concatenate([g('global_orient'), g('hand_pose')], -1)
        out = mano_jax.forward(model, pose, g('betas'), g('transl'), pose_repr='pca',
                               flat_hand_mean=flat)
      else:
        pose = np.concatenate([g('global_orient'), g('hand_pose')], -1)
        out = mano_jax.forward(model, pose, g('betas'), g('transl'), flat_hand_mean=flat)
      np.testing.assert_allclose(out.vertices, g('vertices'), rtol=0, atol=1e-7, err_msg=key)
      np.testing.assert_allclose(out.joints[:, :16], g('joints16'), rtol=0, atol=1e-7,
                                 err_msg=key)
