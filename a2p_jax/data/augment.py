"""Geometric and photometric augmentation of two-hand examples (numpy).

An example (`Example` keys below) holds an image and everything spatial
that comes with it: 3D joints and MANO fits in camera space, intrinsics,
prior maps. Augmentations act on all of them consistently (numpy, scipy
and PIL only: this runs in data-loader worker processes, which must not
call JAX):

* `flip(ex)`: mirror the whole image (u -> W - 1 - u). In 3D that is the
  reflection x -> -x of camera space with the principal point mirrored too,
  which swaps the hands: right <-> left slots of joints and MANO fits, each
  MANO fit mirrored (`mano_jax.mirror_pose`; translation chosen so the
  mirrored fit's wrist lands on the mirrored wrist). Exact: flipping twice
  is the identity.
* `rotate_3d(ex, R)`: rotate camera space (the MANO global orientation,
  translation about the wrist, joints); `crop_affine(..., rot_rad=a)` goes
  with R = rot_z(a) about the optical axis.
* `crop_affine(...)` + `warp_image` / `warp_map`: the 2x3 affine from source
  pixels to the network's input crop, applied to the image, the maps and the
  2D keypoints alike.

Units: joints_cam in mm (as the readers return them), MANO translations in
metres, pixels in the image's own frame.
"""

from typing import Optional

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial.transform import Rotation

import mano_jax  # for the ManoModel type only: this module never calls JAX

HANDS = ('right', 'left')
NUM_JOINTS = 21  # per hand; two-hand arrays are right 0-20, left 21-41


def rot_z(angle_rad: float) -> np.ndarray:
  """(3, 3) rotation about the camera's optical (z) axis."""
  c, s = np.cos(angle_rad), np.sin(angle_rad)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def wrist_of(model: mano_jax.ManoModel, shape) -> np.ndarray:
  """Rest-pose wrist joint (3,) m of `model` with betas `shape`."""
  jr = np.asarray(model.J_regressor[0], np.float64)
  sd = np.asarray(model.shapedirs, np.float64)[:, :, :len(shape)]
  return jr @ (np.asarray(model.v_template, np.float64) + sd @ np.asarray(shape, np.float64))


def rotate_fit(fit: dict, rot: np.ndarray, wrist: np.ndarray) -> dict:
  """A MANO fit (pose (48,), shape (10,), trans (3,) m) under x -> rot @ x.

  MANO's global orientation turns the hand about its wrist `wrist`, so the
  translation changes by rot @ (wrist + t) - wrist, as for a camera change.
  """
  pose = np.array(fit['pose'], np.float64)
  r_go = Rotation.from_rotvec(pose[:3]).as_matrix()
  pose[:3] = Rotation.from_matrix(rot @ r_go).as_rotvec()
  trans = rot @ (wrist + np.asarray(fit['trans'], np.float64)) - wrist
  return {'pose': pose, 'shape': np.array(fit['shape'], np.float64), 'trans': trans}


def rotate_3d(ex: dict, rot: np.ndarray, models) -> dict:
  """Rotates camera space: joints_cam and MANO fits (models: (right, left))."""
  out = dict(ex)
  out['joints_cam'] = np.asarray(ex['joints_cam'], np.float64) @ rot.T
  mano = {}
  for side, model in zip(HANDS, models):
    fit = ex['mano'][side]
    mano[side] = None if fit is None else rotate_fit(fit, rot, wrist_of(model, fit['shape']))
  out['mano'] = mano
  return out


def _swap_hands(a: np.ndarray) -> np.ndarray:
  return np.concatenate([a[NUM_JOINTS:], a[:NUM_JOINTS]])


_MIRROR = np.diag([-1.0, 1.0, 1.0])


def mirror_pose_np(pose) -> np.ndarray:
  """numpy twin of mano_jax.mirror_pose: (a, b, c) -> (a, -b, -c) per joint.

  The data pipeline runs in worker processes and stays free of JAX calls.
  """
  pose = np.asarray(pose, np.float64)
  return pose * np.tile([1.0, -1.0, -1.0], pose.shape[-1] // 3)
_FLIP_HAND_TYPE = {'right': 'left', 'left': 'right', 'interacting': 'interacting'}


def flip(ex: dict, models, image_width: int) -> dict:
  """Horizontal flip of the whole image, exactly mirrored in 3D (see module doc).

  Does not touch pixels (the image is warped once, later, with
  `crop_affine(..., flip=True)`); updates everything else.
  """
  out = dict(ex)
  out['joints_cam'] = _swap_hands(np.asarray(ex['joints_cam'], np.float64) * np.diag(_MIRROR))
  out['joint_valid'] = _swap_hands(np.asarray(ex['joint_valid']))
  if ex.get('joints_img') is not None:
    uv = np.array(ex['joints_img'], np.float64).reshape(2 * NUM_JOINTS, 2)
    uv[:, 0] = image_width - 1 - uv[:, 0]
    out['joints_img'] = _swap_hands(uv)
    out['joints_img_valid'] = _swap_hands(np.asarray(ex['joints_img_valid']).reshape(-1))
  out['hand_type'] = _FLIP_HAND_TYPE[ex['hand_type']]
  cam = dict(ex['camera'])
  princpt = np.array(cam['princpt'], np.float64)
  princpt[0] = image_width - 1 - princpt[0]
  cam['princpt'] = princpt
  out['camera'] = cam
  if 'bbox' in ex and ex['bbox'] is not None:
    x, y, w, h = np.asarray(ex['bbox'], np.float64)
    out['bbox'] = np.array([image_width - 1 - (x + w), y, w, h])
  mano = {}
  for src, dst in (('right', 'left'), ('left', 'right')):
    fit = ex['mano'][src]
    if fit is None:
      mano[dst] = None
      continue
    m_src, m_dst = models[HANDS.index(src)], models[HANDS.index(dst)]
    j_src, j_dst = wrist_of(m_src, fit['shape']), wrist_of(m_dst, fit['shape'])
    pose = mirror_pose_np(fit['pose'])
    # The mirrored wrist must land on the mirror of the original wrist.
    trans = _MIRROR @ (j_src + np.asarray(fit['trans'], np.float64)) - j_dst
    mano[dst] = {'pose': pose, 'shape': np.array(fit['shape'], np.float64), 'trans': trans}
  out['mano'] = mano
  return out


def hands_box(joints_2d: np.ndarray, valid: np.ndarray, *, extend: float = 1.3,
              min_size: float = 16.0) -> Optional[np.ndarray]:
  """Square box (cx, cy, side) px around the valid 2D joints of both hands.

  Like InterWild's two-hand crop: the union of the hands' joint boxes,
  enlarged by `extend`; None when no joint is valid.
  """
  pts = joints_2d[np.asarray(valid) > 0]
  if len(pts) == 0:
    return None
  lo, hi = pts.min(0), pts.max(0)
  side = max(float(np.max(hi - lo)) * extend, min_size)
  c = (lo + hi) / 2
  return np.array([c[0], c[1], side])


def crop_affine(center, side: float, out_hw, *, rot_rad: float = 0.0,
                flip: bool = False, image_width: Optional[int] = None) -> np.ndarray:
  """(2, 3) affine: source pixel (u, v, 1) -> output crop pixel.

  The square of size `side` around `center` (in the source image, after
  the optional full-image flip) is scaled to `out_hw` and its content
  rotated by `rot_rad` about the crop centre, in pixel coordinates (u right,
  v down: clockwise on screen). Its 3D counterpart is
  `rotate_3d(ex, rot_z(rot_rad))` (exact when the crop is centred on the
  principal point and fx = fy).
  """
  h, w = out_hw
  a = np.eye(3)
  if flip:
    if image_width is None:
      raise ValueError('crop_affine: flip=True needs image_width')
    a = np.array([[-1.0, 0, image_width - 1], [0, 1.0, 0], [0, 0, 1.0]])
  t0 = np.array([[1.0, 0, -center[0]], [0, 1.0, -center[1]], [0, 0, 1.0]])
  s = min(w, h) / float(side)
  c, sn = np.cos(rot_rad), np.sin(rot_rad)
  r = np.array([[c * s, -sn * s, 0], [sn * s, c * s, 0], [0, 0, 1.0]])
  t1 = np.array([[1.0, 0, (w - 1) / 2], [0, 1.0, (h - 1) / 2], [0, 0, 1.0]])
  return (t1 @ r @ t0 @ a)[:2]


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
  """(2, 3) affine on (..., 2) points."""
  return points @ affine[:, :2].T + affine[:, 2]


def _inverse(affine: np.ndarray) -> np.ndarray:
  full = np.vstack([affine, [0.0, 0.0, 1.0]])
  return np.linalg.inv(full)[:2]


def warp_image(image: np.ndarray, affine: np.ndarray, out_hw) -> np.ndarray:
  """(H, W, 3) uint8 -> (h, w, 3) uint8, bilinear, black outside."""
  # PIL samples at pixel corners + 0.5 (its pixel centres), our affines map
  # pixel centres: conjugate by a half-pixel shift.
  half = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])
  inv = (half @ np.vstack([_inverse(affine), [0, 0, 1.0]]) @ np.linalg.inv(half))[:2].ravel()
  img = Image.fromarray(np.ascontiguousarray(image))
  out = img.transform((out_hw[1], out_hw[0]), Image.Transform.AFFINE, data=tuple(inv),
                      resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
  return np.asarray(out)


def warp_map(m: np.ndarray, affine: np.ndarray, out_hw, *, nearest: bool = False,
             fill: float = 0.0) -> np.ndarray:
  """(H', W'[, C]) map -> (h, w[, C]); `affine` maps source image pixels.

  A map at another resolution than its image (e.g. a 64 x 48 feature map)
  is handled by scaling: pass the map and the affine of the image, with
  the map's pixel centres placed on the image's grid.
  """
  m = np.asarray(m)
  squeeze = m.ndim == 2
  if squeeze:
    m = m[..., None]
  inv = _inverse(affine)  # output (u, v) -> source (u, v)
  rows = []
  h, w = out_hw
  vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                       indexing='ij')
  src_u = inv[0, 0] * uu + inv[0, 1] * vv + inv[0, 2]
  src_v = inv[1, 0] * uu + inv[1, 1] * vv + inv[1, 2]
  for c in range(m.shape[-1]):
    rows.append(ndimage.map_coordinates(
        m[..., c].astype(np.float64 if not nearest else m.dtype), [src_v, src_u],
        order=0 if nearest else 1, mode='constant', cval=fill))
  out = np.stack(rows, -1).astype(m.dtype)
  return out[..., 0] if squeeze else out


def scale_affine(affine: np.ndarray, src_scale: float, dst_scale: float = 1.0) -> np.ndarray:
  """The same crop for maps whose pixels are `src_scale` image pixels (in)
  and `dst_scale` crop pixels (out), pixel centres aligned."""
  # map pixel p <-> image pixel (p + 0.5) * s - 0.5
  to_img = np.array([[src_scale, 0, 0.5 * src_scale - 0.5],
                     [0, src_scale, 0.5 * src_scale - 0.5], [0, 0, 1.0]])
  from_out = np.array([[1 / dst_scale, 0, 0.5 / dst_scale - 0.5],
                       [0, 1 / dst_scale, 0.5 / dst_scale - 0.5], [0, 0, 1.0]])
  return (from_out @ np.vstack([affine, [0, 0, 1.0]]) @ to_img)[:2]


def color_jitter(image: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """Per-channel gain (3,) on a uint8 image, clipped."""
  return np.clip(image.astype(np.float32) * scale[None, None, :], 0, 255).astype(np.uint8)
