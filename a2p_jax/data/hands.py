"""The pair of hand models every data path uses, in InterHand2.6M's convention."""

import functools
import os
from typing import Optional, Tuple

import mano_jax


@functools.lru_cache(maxsize=8)
def load_hand_models(mano_dir: Optional[str] = None
                     ) -> Tuple[mano_jax.ManoModel, mano_jax.ManoModel]:
  """(right, left) models: MANO from `mano_dir`, else the procedural hand.

  The left model gets InterHand2.6M's shapedirs fix (shapedirs[:, 0] *= -1)
  in both cases, so that data made with the procedural hand follows exactly
  the convention of InterHand2.6M's MANO fits and one code path reads both.
  """
  if mano_dir is None:
    return (mano_jax.load_procedural('right'),
            mano_jax.load_procedural('left', fix_left_shapedirs=True))
  paths = [os.path.join(mano_dir, f'MANO_{s}.pkl') for s in ('RIGHT', 'LEFT')]
  for p in paths:
    if not os.path.exists(p):
      raise FileNotFoundError(f'mano_dir={mano_dir!r}: {os.path.basename(p)} not '
                              'found (MANO is licensed: download it yourself)')
  return (mano_jax.load(paths[0]),
          mano_jax.load(paths[1], fix_left_shapedirs=True))
