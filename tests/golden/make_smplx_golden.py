"""Records smplx.MANO outputs on the procedural hand as a golden file.

Run by hand (needs torch and smplx, not part of the project's requirements):

    pip install torch==2.13.0 smplx==0.1.28
    python tests/golden/make_smplx_golden.py

The model goes to smplx through an official-format pickle (chumpy objects,
csc_matrix) written by tests/mano_pickle_util.py. tests/test_mano_golden.py
compares mano_jax against the stored outputs without torch.
"""

import hashlib
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import mano_jax  # noqa: E402
from tests import mano_pickle_util  # noqa: E402

OUT = os.path.join(HERE, 'smplx_mano_golden.npz')
N = 2


def model_digest(model):
  h = hashlib.sha256()
  for k in ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights',
            'hands_components', 'hands_mean'):
    h.update(np.ascontiguousarray(np.asarray(getattr(model, k), np.float64)).tobytes())
  return h.hexdigest()


def main():
  import smplx
  import torch
  rng = np.random.default_rng(2026)
  record = {'smplx_version': np.asarray(smplx.__version__ if hasattr(smplx, '__version__') else '0.1.28'),
            'torch_version': np.asarray(torch.__version__)}
  with tempfile.TemporaryDirectory() as tmp:
    for side in ('right', 'left'):
      model = mano_jax.load_procedural(side)
      record[f'{side}_digest'] = np.asarray(model_digest(model))
      for use_pca, ncomp in ((False, 45), (True, 6), (True, 45)):
        for flat in (False, True):
          layer = mano_pickle_util.make_smplx_mano(
              model, tmp, use_pca=use_pca, num_pca_comps=ncomp,
              flat_hand_mean=flat, dtype=torch.float64, batch_size=N)
          go = rng.normal(0, 0.6, (N, 3))
          hand = rng.normal(0, 0.6 if not use_pca else 1.0, (N, ncomp))
          betas = rng.normal(0, 1.0, (N, 10))
          transl = rng.normal(0, 0.2, (N, 3))
          t = lambda x: torch.tensor(x, dtype=torch.float64)
          with torch.no_grad():
            out = layer(betas=t(betas), global_orient=t(go), hand_pose=t(hand),
                        transl=t(transl))
          key = f'{side}_{"pca" if use_pca else "aa"}{ncomp}_{"flat" if flat else "mean"}'
          record[key + '_global_orient'] = go
          record[key + '_hand_pose'] = hand
          record[key + '_betas'] = betas
          record[key + '_transl'] = transl
          record[key + '_vertices'] = out.vertices.numpy()
          record[key + '_joints16'] = out.joints.numpy()
          print(key, out.vertices.shape)
  np.savez_compressed(OUT, **record)
  print(f'wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB)')


if __name__ == '__main__':
  main()
