"""Joints regressed from hand meshes, as each published protocol defines them.

The papers do not score MANO's 16 forward-kinematics joints: they apply
MANO's J_regressor (16 rows) to the posed mesh and take five fingertip
vertices. The tips differ by protocol (vertex ids on MANO's 778-vertex
mesh, thumb..pinky):

- InterWild (common/utils/mano.py `sh_joint_regressor`): 745, 317, 445, 556,
  673 (= mano_jax's tip_ids, so `mano_jax.forward(..., joints='regressed')`
  gives these joints); the RIGHT hand's J_regressor for both hands.
- IntagHand (apps/eval_interhand.py `Jr`): 745, 317, 444, 556, 673, each
  hand's own J_regressor.
- FreiHAND (its toolbox): 744, 320, 443, 555, 672.

A mesh that is not MANO-sized (the procedural hand, NOT MANO) has no such
vertex ids: its own model.tip_ids are used for every protocol.
"""

from typing import Sequence

import numpy as np

from mano_jax import joints as joints_lib

MANO_NUM_VERTICES = 778
INTERWILD_TIPS = (745, 317, 445, 556, 673)
INTAGHAND_TIPS = (745, 317, 444, 556, 673)
FREIHAND_TIPS = (744, 320, 443, 555, 672)


def tips_for(model, tips: Sequence[int]) -> tuple:
  """The protocol's tip vertices on a MANO-sized mesh, else the model's own."""
  nv = int(np.asarray(model.J_regressor).shape[1])
  return tuple(tips) if nv == MANO_NUM_VERTICES else tuple(model.tip_ids)


def mesh_joints(model, verts_NxVx3, tips: Sequence[int], *, order: str = 'interhand',
                regressor=None) -> np.ndarray:
  """21 joints of meshes (..., V, 3) -> (..., 21, 3) float64 in `order`
  (a mano_jax joint order; 'interhand': thumb tip..., wrist last): the 16
  rows of `regressor` (default model.J_regressor) on the mesh, then the
  vertices `tips` (see `tips_for`). NaN meshes give NaN joints."""
  verts = np.asarray(verts_NxVx3, np.float64)
  reg = np.asarray(model.J_regressor if regressor is None else regressor, np.float64)
  if verts.ndim < 2 or verts.shape[-2:] != (reg.shape[1], 3):
    raise ValueError(f'mesh_joints: meshes must be (..., {reg.shape[1]}, 3), got {verts.shape}')
  body = np.einsum('jv,...vc->...jc', reg, verts)
  tip = verts[..., np.asarray(tips_for(model, tips), np.int64), :]
  return np.asarray(joints_lib.reorder(np.concatenate([body, tip], -2), order))


def mesh_wrist(verts_NxVx3, regressor) -> np.ndarray:
  """The wrist (J_regressor row 0) of meshes (..., V, 3) -> (..., 3) float64."""
  return np.einsum('v,...vc->...c', np.asarray(regressor, np.float64)[0],
                   np.asarray(verts_NxVx3, np.float64))
