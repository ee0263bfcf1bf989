"""Oracle teacher for the synthetic set: prior maps from rendered ground truth.

The synthetic generator writes, per image, DIR/priors/{split}/<image path
relative to images/{split}/ without .jpg>.npz (a2p_jax/data/synthetic.py):
keypoints (42, 2) px, keypoint_visible (42,), segmentation (H, W) part
labels (0 background, right 1-16, left 17-32), depth (H, W) float16 m (0 on
the background). On the teacher crop (`a2p_jax.teacher.teacher_box`, the
same as the Sapiens backend) and the store grid this gives 57 channels:

  keypoint      0-41   Gaussian heatmaps (sigma SIGMA_CELLS grid cells) at
                       the keypoints, InterHand order (right 0-20, left
                       21-41), weight 1 if visible, OCCLUDED_WEIGHT if the
                       joint is valid but hidden or off-image, 0 if absent
  segmentation  42-54  area fractions (s x s nearest samples per cell, s =
                       image px per cell clipped to [2, 8]) of background,
                       right palm, thumb, index, middle, ring, pinky, then
                       the left hand's six; they sum to 1 in every cell
                       (outside the image counts as background)
  depth         55-56  hand-relative depth: (z - median) / std over the hand
                       samples of the crop, averaged over a cell's hand
                       samples (0 where none), then the hand-mask fraction

Under a horizontal flip right and left channels swap (`flip_permutation`).
"""

import os
from typing import List, Sequence, Tuple

import numpy as np

from a2p_jax import teacher as teacher_lib

SIGMA_CELLS = 1.0
OCCLUDED_WEIGHT = 0.5
PARTS = ('palm', 'thumb', 'index', 'middle', 'ring', 'pinky')
NUM_KEYPOINT, NUM_SEG, NUM_DEPTH = 42, 1 + 2 * len(PARTS), 2


def _part_lut() -> np.ndarray:
  lut = np.zeros(33, np.int64)
  for lab in range(1, 17):
    g = 1 if lab == 1 else 2 + (lab - 2) // 3
    lut[lab] = g
    lut[lab + 16] = g + len(PARTS)
  return lut


PART_GROUP = _part_lut()  # synthetic part label (0..32) -> segmentation channel (0..12)


def channel_names() -> List[str]:
  names = [f'kp_{s}_{j}' for s in ('right', 'left') for j in range(21)]
  names += ['seg_background'] + [f'seg_{s}_{p}' for s in ('right', 'left') for p in PARTS]
  return names + ['depth_rel', 'hand_mask']


def groups() -> dict:
  k, s = NUM_KEYPOINT, NUM_SEG
  return {'keypoint': list(range(k)), 'segmentation': list(range(k, k + s)),
          'depth': list(range(k + s, k + s + NUM_DEPTH))}


def flip_permutation() -> np.ndarray:
  perm = list((np.arange(42) + 21) % 42)
  perm += [42] + [42 + 1 + (i + 6) % 12 for i in range(12)]
  perm += [55, 56]
  return np.asarray(perm, np.int64)


def prior_path(image_path: str) -> str:
  """DIR/images/{split}/X.jpg -> DIR/priors/{split}/X.npz."""
  norm = image_path.replace(os.sep, '/')
  i = ('/' + norm).rfind('/images/')
  if i < 0:
    raise ValueError(f'{image_path}: not under an images/ folder, so its oracle priors '
                     'cannot be found')
  stem = os.path.splitext(norm[i + len('images/'):])[0]
  return norm[:i] + 'priors/' + stem + '.npz'


def load_priors(path: str) -> dict:
  try:
    with np.load(path, allow_pickle=False) as z:
      out = {k: z[k] for k in ('keypoints', 'keypoint_visible', 'segmentation', 'depth')}
  except FileNotFoundError:
    raise FileNotFoundError(f'oracle priors {path} are missing (the oracle teacher needs '
                            'the synthetic set\'s priors/ folder)') from None
  except (KeyError, ValueError, OSError) as e:
    raise ValueError(f'oracle priors {path} are malformed: {e}') from None
  if out['keypoints'].shape != (42, 2) or out['keypoint_visible'].shape != (42,):
    raise ValueError(f'oracle priors {path}: keypoints {out["keypoints"].shape} / '
                     f'keypoint_visible {out["keypoint_visible"].shape}, expected (42, 2) / (42,)')
  if out['segmentation'].shape != out['depth'].shape or out['segmentation'].ndim != 2:
    raise ValueError(f'oracle priors {path}: segmentation {out["segmentation"].shape} and '
                     f'depth {out["depth"].shape} must be the same (H, W)')
  if out['segmentation'].max(initial=0) > 32:
    raise ValueError(f'oracle priors {path}: part label {out["segmentation"].max()} > 32')
  return out


def _subsamples(affine: np.ndarray, grid, s: int):
  """Image (u, v) of s x s sample points per map cell: (gh, gw, s*s) each."""
  gh, gw = grid
  off = (np.arange(s) + 0.5) / s - 0.5
  rows = (np.arange(gh)[:, None] + off[None, :]).reshape(-1)   # gh*s map rows
  cols = (np.arange(gw)[:, None] + off[None, :]).reshape(-1)
  vv, uu = np.meshgrid(rows, cols, indexing='ij')
  inv = np.linalg.inv(np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]
  u = inv[0, 0] * uu + inv[0, 1] * vv + inv[0, 2]
  v = inv[1, 0] * uu + inv[1, 1] * vv + inv[1, 2]

  def cells(a):  # (gh*s, gw*s) -> (gh, gw, s*s)
    return a.reshape(gh, s, gw, s).transpose(0, 2, 1, 3).reshape(gh, gw, s * s)
  return cells(u), cells(v)


def oracle_maps(pri: dict, affine: np.ndarray, grid, joint_valid=None) -> np.ndarray:
  """(gh, gw, 57) float32 maps from one image's rendered priors (see module doc)."""
  gh, gw = grid
  seg = np.asarray(pri['segmentation'])
  depth = np.asarray(pri['depth'], np.float32)
  h, w = seg.shape
  # Keypoints.
  kp = np.asarray(pri['keypoints'], np.float64) @ affine[:, :2].T + affine[:, 2]
  vis = np.asarray(pri['keypoint_visible']) > 0
  weight = np.where(vis, 1.0, 0.0)
  if joint_valid is not None:
    jv = np.asarray(joint_valid, np.float64).reshape(42) > 0
    weight = np.where(~vis & jv, OCCLUDED_WEIGHT, weight)
  ii, jj = np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64)
  gy = np.exp(-(ii[:, None] - kp[None, :, 1]) ** 2 / (2 * SIGMA_CELLS ** 2))  # (gh, 42)
  gx = np.exp(-(jj[:, None] - kp[None, :, 0]) ** 2 / (2 * SIGMA_CELLS ** 2))  # (gw, 42)
  heat = gy[:, None, :] * gx[None, :, :] * weight
  # Segmentation and depth: s x s nearest samples per cell.
  px_per_cell = 1.0 / abs(affine[0, 0])
  s = int(np.clip(np.ceil(px_per_cell), 2, 8))
  u, v = _subsamples(affine, grid, s)
  c, r = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
  inside = (c >= 0) & (c < w) & (r >= 0) & (r < h)
  rc, cc = np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)
  lab = np.where(inside, seg[rc, cc], 0)
  grp = PART_GROUP[lab]
  seg_maps = np.stack([(grp == g).mean(-1) for g in range(NUM_SEG)], -1)
  z = np.where(inside, depth[rc, cc], 0.0).astype(np.float64)
  hand = (lab > 0) & (z > 0)
  rel = np.zeros_like(z)
  if hand.any():
    zh = z[hand]
    rel[hand] = (zh - np.median(zh)) / max(float(np.std(zh)), 1e-6)
  count = hand.sum(-1)
  depth_rel = np.where(count > 0, (rel * hand).sum(-1) / np.maximum(count, 1), 0.0)
  mask = count / float(s * s)
  return np.concatenate([heat, seg_maps, depth_rel[..., None], mask[..., None]],
                        -1).astype(np.float32)


class OracleTeacher:
  """Teacher interface: `teacher(examples) -> [(maps (gh, gw, C) float32,
  affine (2, 3) image px -> map px)]`."""

  name = 'oracle'

  def __init__(self, grid=teacher_lib.GRID, extend: float = teacher_lib.TEACHER_EXTEND):
    self.grid = tuple(int(v) for v in grid)
    self.extend = float(extend)
    self.channel_names = channel_names()
    self.groups = groups()
    self.flip_permutation = flip_permutation()
    self.num_channels = len(self.channel_names)

  def config(self) -> dict:
    return {'teacher': self.name, 'extend': self.extend, 'sigma_cells': SIGMA_CELLS,
            'occluded_weight': OCCLUDED_WEIGHT}

  def one(self, ex: dict) -> Tuple[np.ndarray, np.ndarray]:
    if 'image_path' not in ex:
      raise ValueError(f'annotation {ex.get("annot_id")}: the oracle teacher needs '
                       'image_path to find the rendered priors')
    pri = load_priors(prior_path(ex['image_path']))
    affine = teacher_lib.box_affine(teacher_lib.teacher_box(ex, extend=self.extend), self.grid)
    return oracle_maps(pri, affine, self.grid, ex.get('joint_valid')), affine.astype(np.float32)

  def __call__(self, examples: Sequence[dict]):
    return [self.one(ex) for ex in examples]
