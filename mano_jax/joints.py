"""Joint orders for the 21 hand joints (16 kinematic joints + 5 fingertips).

'mano' is what `forward` computes: the 16 kinematic joints in MANO order
(wrist; index 1-3; middle 1-3; pinky 1-3; ring 1-3; thumb 1-3) followed by the
fingertips (thumb, index, middle, ring, pinky). The other orders are index
arrays into it.
"""

import numpy as np

from mano_jax.model import JOINT_NAMES

MANO_21_NAMES = JOINT_NAMES + (
    'thumb4', 'index4', 'middle4', 'ring4', 'pinky4')

_NAME_TO_MANO = {n: i for i, n in enumerate(MANO_21_NAMES)}
_FINGERS = ('thumb', 'index', 'middle', 'ring', 'pinky')

# OpenPose / FreiHAND / COCO-WholeBody: wrist, then per finger (thumb..pinky)
# from the base joint to the tip.
OPENPOSE_NAMES = ('wrist',) + tuple(
    f'{f}{k}' for f in _FINGERS for k in (1, 2, 3, 4))

# InterHand2.6M (one hand): per finger (thumb..pinky) from the tip to the base
# joint, then the wrist. The two-hand file is right 0-20 then left 21-41.
INTERHAND_NAMES = tuple(
    f'{f}{k}' for f in _FINGERS for k in (4, 3, 2, 1)) + ('wrist',)

JOINT_ORDERS = {
    'mano': np.arange(21, dtype=np.int32),
    'openpose': np.array([_NAME_TO_MANO[n] for n in OPENPOSE_NAMES], np.int32),
    'interhand': np.array([_NAME_TO_MANO[n] for n in INTERHAND_NAMES], np.int32),
}

JOINT_NAMES_BY_ORDER = {
    'mano': MANO_21_NAMES,
    'openpose': OPENPOSE_NAMES,
    'interhand': INTERHAND_NAMES,
}


def reorder(joints_mano, order: str):
  """(..., 21, 3) joints in 'mano' order -> the named order."""
  try:
    idx = JOINT_ORDERS[order]
  except KeyError:
    raise ValueError(f'joint_order must be one of {sorted(JOINT_ORDERS)}, '
                     f'got {order!r}') from None
  return joints_mano[..., idx, :]


def convert(joints, src: str, dst: str):
  """(..., 21, 3) joints from order `src` to order `dst`."""
  for o in (src, dst):
    if o not in JOINT_ORDERS:
      raise ValueError(f'unknown joint order {o!r}; one of {sorted(JOINT_ORDERS)}')
  to_mano = np.argsort(JOINT_ORDERS[src]).astype(np.int32)
  return joints[..., to_mano[JOINT_ORDERS[dst]], :]
