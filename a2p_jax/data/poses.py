"""Natural hand poses: MANO pose-PCA samples clamped to anatomical joint limits.

A finger joint's rotation (axis-angle, in the rest pose's axes, MANO's
convention) is split into a twist about its bone and a swing, and the swing
into flexion and abduction; each part is clamped to the limits below. Axes
come from the model itself (bone = child joint minus joint in the rest pose;
flexion = the direction of the model's mean pose at the finger's middle
joint, which curls toward the palm), so the same code serves MANO and the
procedural hand. Angles in degrees in the tables, radians in the code.
"""

import numpy as np

# MANO joint ids (1..15) of each finger's proximal, middle, distal joint.
FINGER_JOINTS = {'index': (1, 2, 3), 'middle': (4, 5, 6), 'pinky': (7, 8, 9),
                 'ring': (10, 11, 12), 'thumb': (13, 14, 15)}
# model.tip_ids order.
TIP_ORDER = ('thumb', 'index', 'middle', 'ring', 'pinky')
# (twist max, flexion min, flexion max, abduction max) in degrees, for the
# proximal, middle and distal joint. Thumb limits are looser: its CMC joint
# is a saddle with a large range.
LIMITS_DEG = {
    'finger': ((10, -25, 90, 20), (8, -5, 105, 8), (8, -5, 85, 8)),
    'thumb': ((30, -35, 60, 45), (15, -15, 65, 15), (10, -15, 85, 10)),
}
# Pose-PCA samples are truncated here (in units of each coefficient's std).
PCA_TRUNCATION = 2.0


def _quat_from_rotvec(r):
  angle = np.linalg.norm(r, axis=-1, keepdims=True)
  half = 0.5 * angle
  # sin(x/2)/x without dividing by 0 near the identity.
  k = np.where(angle > 1e-8, np.sin(half) / np.maximum(angle, 1e-12), 0.5 - angle**2 / 48)
  return np.concatenate([np.cos(half), r * k], -1)


def _rotvec_from_quat(q):
  q = q * np.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: angle in [0, pi]
  v = q[..., 1:]
  s = np.linalg.norm(v, axis=-1, keepdims=True)
  angle = 2.0 * np.arctan2(s, q[..., :1])
  k = np.where(s > 1e-8, angle / np.maximum(s, 1e-12), 2.0)
  return v * k


def _quat_mul(a, b):
  aw, av = a[..., :1], a[..., 1:]
  bw, bv = b[..., :1], b[..., 1:]
  w = aw * bw - np.sum(av * bv, -1, keepdims=True)
  v = aw * bv + bw * av + np.cross(av, bv)
  return np.concatenate([w, v], -1)


def joint_frames(model):
  """(15, 3, 3) rows [bone, flexion, abduction] unit axes of the 15 finger
  joints (MANO ids 1..15), in the rest pose's axes."""
  j_rest = np.asarray(model.J_regressor) @ np.asarray(model.v_template)
  tips = np.asarray(model.v_template)[np.asarray(model.tip_ids)]
  mean = np.asarray(model.hands_mean, np.float64).reshape(15, 3)
  frames = np.zeros((15, 3, 3))
  for finger, ids in FINGER_JOINTS.items():
    ends = list(ids[1:]) + [None]
    flex_dir = mean[ids[1] - 1]
    for j, child in zip(ids, ends):
      end = tips[TIP_ORDER.index(finger)] if child is None else j_rest[child]
      bone = end - j_rest[j]
      bone /= np.linalg.norm(bone)
      flex = flex_dir - (flex_dir @ bone) * bone
      if np.linalg.norm(flex) < 1e-6:
        raise ValueError(f'{model.name}: hands_mean gives no flexion direction for {finger}')
      flex /= np.linalg.norm(flex)
      frames[j - 1] = np.stack([bone, flex, np.cross(bone, flex)])
  return frames


def _limit_table():
  """(15, 4) radians: twist max, flexion min, flexion max, abduction max."""
  table = np.zeros((15, 4))
  for finger, ids in FINGER_JOINTS.items():
    rows = LIMITS_DEG['thumb' if finger == 'thumb' else 'finger']
    for j, row in zip(ids, rows):
      table[j - 1] = np.radians(row)
  return table


def decompose(rotvec_Jx3, frames_Jx3x3):
  """Twist, flexion, abduction angles (..., J, 3) in radians of joint rotations."""
  q = _quat_from_rotvec(rotvec_Jx3)
  bone = frames_Jx3x3[:, 0]
  along = np.sum(q[..., 1:] * bone, -1, keepdims=True)
  twist_angle = 2.0 * np.arctan2(along[..., 0], q[..., 0])
  twist_angle = (twist_angle + np.pi) % (2 * np.pi) - np.pi
  twist_q = _quat_from_rotvec(twist_angle[..., None] * bone)
  conj = twist_q * np.array([1.0, -1.0, -1.0, -1.0])
  swing = _rotvec_from_quat(_quat_mul(q, conj))
  flex = np.sum(swing * frames_Jx3x3[:, 1], -1)
  abd = np.sum(swing * frames_Jx3x3[:, 2], -1)
  return np.stack([twist_angle, flex, abd], -1)


def compose(angles_Jx3, frames_Jx3x3):
  """Inverse of `decompose`: (..., J, 3) angles -> (..., J, 3) axis-angle."""
  twist = angles_Jx3[..., 0:1] * frames_Jx3x3[:, 0]
  swing = angles_Jx3[..., 1:2] * frames_Jx3x3[:, 1] + angles_Jx3[..., 2:3] * frames_Jx3x3[:, 2]
  q = _quat_mul(_quat_from_rotvec(swing), _quat_from_rotvec(twist))
  return _rotvec_from_quat(q)


def pose_prior(model, coeffs_std_45):
  """What sampling needs from a model, as numpy (computed once per model):
  joint frames, limits (lo, hi) (15, 3) rad, PCA basis and std, hands_mean."""
  table = _limit_table()
  return dict(
      frames=joint_frames(model),
      lo=np.stack([-table[:, 0], table[:, 1], -table[:, 3]], -1),
      hi=np.stack([table[:, 0], table[:, 2], table[:, 3]], -1),
      components=np.asarray(model.hands_components, np.float64),
      std=np.asarray(coeffs_std_45, np.float64),
      mean=np.asarray(model.hands_mean, np.float64))


def apply_limits(hand_pose_45, prior):
  """Clamps flat_hand_mean=False hand poses (..., 45) to the joint limits."""
  full = (np.asarray(hand_pose_45, np.float64) + prior['mean']).reshape(
      np.shape(hand_pose_45)[:-1] + (15, 3))
  ang = np.clip(decompose(full, prior['frames']), prior['lo'], prior['hi'])
  return compose(ang, prior['frames']).reshape(full.shape[:-2] + (45,)) - prior['mean']


def sample_hand_pose(rng, prior, *, spread=1.0):
  """A natural hand pose (45,) (flat_hand_mean=False convention).

  PCA coefficients ~ N(0, (spread * std)^2) truncated at PCA_TRUNCATION std,
  mapped through the model's hands_components, then clamped to the joint
  limits. prior: `pose_prior(model, coeffs_std)`.
  """
  c = rng.standard_normal(45)
  c = np.clip(c, -PCA_TRUNCATION, PCA_TRUNCATION) * spread * prior['std']
  return apply_limits(c @ prior['components'], prior)


def random_rotvec(rng, max_angle: float = np.pi):
  """A rotation (3,) axis-angle: uniform over SO(3) for max_angle >= pi;
  otherwise a uniformly random axis and an angle uniform in [0, max_angle]
  (the same four random draws either way)."""
  q = rng.standard_normal(4)
  if max_angle >= np.pi:
    return _rotvec_from_quat(q / np.linalg.norm(q))
  axis = q[:3] / max(np.linalg.norm(q[:3]), 1e-12)
  angle = max_angle * (0.5 + 0.5 * np.tanh(q[3]))  # a draw in (0, max_angle)
  return axis * angle
