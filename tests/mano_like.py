"""The procedural hand (NOT MANO) moved so that its rest-pose wrist sits
where MANO's does, ~10 cm from the origin.

The procedural hand's rest wrist is at the origin, so a camera or flip
transform that forgets the MANO root joint J0 (trans' = R (J0 + trans) + t
- J0) is wrong by ~0 on it and no test notices. Readers' tests use these
models for their fixtures and, patched in, for the reader.
"""

import numpy as np

# MANO's right rest wrist (J_regressor[0] @ v_template), m; the left hand's
# is its mirror in x.
WRIST_M = np.array([0.0957, 0.0064, 0.0062])
_MIRROR_X = np.array([-1.0, 1.0, 1.0])


def mano_like_hand(model, side: str = 'right'):
  """One hand model with its rest pose moved by WRIST_M (mirrored for 'left')."""
  offset = WRIST_M if side == 'right' else WRIST_M * _MIRROR_X
  return model.replace(v_template=np.asarray(model.v_template) + offset)


def mano_like(models):
  """(right, left) moved like MANO's."""
  return mano_like_hand(models[0], 'right'), mano_like_hand(models[1], 'left')
