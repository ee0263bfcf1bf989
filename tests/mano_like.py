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


MANO_NUM_VERTICES = 778


def mano_sized(model):
  """The procedural hand cut to MANO's 778 vertices (its regressor's
  vertices kept, rows renormalised; faces among the kept vertices), so that
  the protocols' MANO vertex ids (fingertips 745, 317, 444/445, ...) apply
  to it. NOT MANO: only for tests of code that switches on the vertex count."""
  jr = np.asarray(model.J_regressor, np.float64)
  nv = jr.shape[1]
  support = np.flatnonzero(np.abs(jr).sum(0) > 0)
  rest = np.setdiff1d(np.arange(nv), support)
  keep = np.sort(np.concatenate([support, rest[:MANO_NUM_VERTICES - len(support)]]))
  new_id = np.full(nv, -1)
  new_id[keep] = np.arange(len(keep))
  faces = new_id[np.asarray(model.faces)]
  faces = faces[(faces >= 0).all(1)].astype(np.int32)
  jr = jr[:, keep]
  jr /= jr.sum(1, keepdims=True)
  return model.replace(
      v_template=np.asarray(model.v_template)[keep],
      shapedirs=np.asarray(model.shapedirs)[keep], posedirs=np.asarray(model.posedirs)[keep],
      J_regressor=jr, weights=np.asarray(model.weights)[keep], faces=faces,
      tip_ids=(745, 317, 445, 556, 673))
