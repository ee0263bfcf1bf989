"""The pair of hand models every data path uses, in InterHand2.6M's convention."""

import functools
import os
from typing import Optional, Tuple

import mano_jax


@functools.lru_cache(maxsize=8)
def load_hand_models(mano_dir: Optional[str] = None
                     ) -> Tuple[mano_jax.ManoModel, mano_jax.ManoModel]:
  """(right, left) models: MANO from `mano_dir`, else the procedural hand.

  InterHand2.6M's fits use a left model whose shape space mirrors the
  right's. The official MANO_LEFT.pkl gets that with InterHand2.6M's fix
  (shapedirs[:, 0] *= -1); the procedural left hand is built as the exact
  mirror of the right and is used as is. Either way, data made with the
  procedural hand follows the convention of InterHand2.6M's fits and one
  code path reads both.
  """
  if mano_dir is None:
    return mano_jax.load_procedural('right'), mano_jax.load_procedural('left')
  paths = [os.path.join(mano_dir, f'MANO_{s}.pkl') for s in ('RIGHT', 'LEFT')]
  for p in paths:
    if not os.path.exists(p):
      raise FileNotFoundError(f'mano_dir={mano_dir!r}: {os.path.basename(p)} not '
                              'found (MANO is licensed: download it yourself)')
  return (mano_jax.load(paths[0]),
          mano_jax.load(paths[1], fix_left_shapedirs=True))
