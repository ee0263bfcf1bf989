"""Prior-feature teachers and their feature store.

A teacher maps an example's image to three groups of prior maps (A2P's
F_k, F_s, F_d): keypoint, segmentation, depth. Two backends store the same
kind of record (`store.py`):

  sapiens.py   the user's Sapiens TorchScript checkpoints (pose, seg, depth),
               run at 1024 x 768 on the example's two-hand crop (torch is
               imported lazily; an optional extra)
  oracle.py    the synthetic set's rendered ground truth (DIR/priors/...)

Both look at the same crop (`teacher_box`): the two-hand box of the example
(projected valid joints, else `bbox`), its longer side x `extend`, widened to
aspect H:W = 4:3 around the same centre, and pool their maps to the store
grid (default GRID = (32, 24) cells, H x W). A record holds the maps and the
affine from source image pixels to map pixels (pixel centres at integers).

    python -m a2p_jax.teacher.precompute --teacher oracle --dataset synthetic \
        --root DIR --split train --out STORE
"""

from typing import Iterable, Optional, Sequence, Union

import numpy as np

from a2p_jax.data import augment, pipeline
from a2p_jax.geometry.camera import project
from a2p_jax.teacher.store import open_store  # noqa: F401  (the public entry)

GROUPS = ('keypoint', 'segmentation', 'depth')
GRID = (32, 24)          # default store grid (H, W): 4:3 like Sapiens' input
TEACHER_EXTEND = 2.0     # teacher box side / tight two-hand joint box side
MIN_BOX = 16.0           # px


def teacher_box(ex: dict, *, extend: float = TEACHER_EXTEND) -> np.ndarray:
  """(x0, y0, width, height) px of the teacher crop of `ex` (aspect 4:3 H:W).

  The two-hand box of the valid 2D keypoints (as the pipeline's crop: the
  reader's `joints_img` where valid, else the projected valid 3D joints),
  else the annotated `bbox`; its longer side x `extend` is the width, the
  height is 4/3 of it, both centred on the box centre.
  """
  uv = None
  if 'joints_cam' in ex and 'camera' in ex:
    joints = np.asarray(ex['joints_cam'], np.float64).reshape(42, 3)
    valid = (np.asarray(ex['joint_valid'], np.float64).reshape(42) > 0) & (joints[:, 2] > 1e-6)
    uv_3d = np.zeros((42, 2))
    if valid.any():
      uv_3d[valid] = project(joints[valid], ex['camera']['focal'], ex['camera']['princpt'])
    uv_all, valid_2d = pipeline.keypoints_2d(ex, uv_3d, valid.astype(np.float32))
    if (valid_2d > 0).any():
      uv = uv_all[valid_2d > 0]
  if uv is not None:
    lo, hi = uv.min(0), uv.max(0)
  else:
    if ex.get('bbox') is None:
      raise ValueError(f'annotation {ex.get("annot_id")}: no valid joint and no bbox '
                       'for the teacher crop')
    x, y, w, h = np.asarray(ex['bbox'], np.float64)
    lo, hi = np.array([x, y]), np.array([x + w, y + h])
  centre = (lo + hi) / 2
  side = max(float(np.max(hi - lo)) * extend, MIN_BOX)
  width, height = side, side * 4.0 / 3.0
  return np.array([centre[0] - width / 2, centre[1] - height / 2, width, height])


def box_affine(box, out_hw) -> np.ndarray:
  """(2, 3) affine: image px -> px of `box` resampled to out_hw (H, W).

  Pixel centres sit at integer coordinates on both sides: the box's left
  edge x0 is the left edge of output column 0, whose centre is at 0.
  """
  x0, y0, w, h = (float(v) for v in box)
  sx, sy = out_hw[1] / w, out_hw[0] / h
  return np.array([[sx, 0.0, -x0 * sx - 0.5], [0.0, sy, -y0 * sy - 0.5]])


def teacher_crops(examples, input_hw, grid, *, extend: float, mean, std):
  """The teacher's input for `examples`: each example's teacher crop
  (`teacher_box`) warped to input_hw (H, W), RGB normalised with mean/std
  on the 0-255 scale, float32 (N, H, W, 3); and per example the affine
  image px -> store-grid px (`box_affine(box, grid)`, float32 (2, 3))."""
  crops, affines = [], []
  for ex in examples:
    box = teacher_box(ex, extend=extend)
    img = pipeline.load_image(ex)
    crops.append(augment.warp_image(img, box_affine(box, input_hw), input_hw))
    affines.append(box_affine(box, grid).astype(np.float32))
  x = (np.stack(crops).astype(np.float32) - np.float32(mean)) / np.float32(std)
  return x, affines


def parse_groups(groups: Union[None, str, Iterable[str]]) -> Optional[tuple]:
  """None / '' -> None (all); 'keypoint,depth' or a sequence -> tuple."""
  if groups is None:
    return None
  if isinstance(groups, str):
    groups = [g.strip() for g in groups.split(',') if g.strip()]
  groups = tuple(groups)
  return groups or None


def select_channels(meta: dict, groups=None) -> np.ndarray:
  """int32 indices of the stored channels of `groups` (all when None), in
  the store's channel order."""
  groups = parse_groups(groups)
  have = meta['groups']
  if groups is None:
    groups = tuple(g for g in GROUPS if g in have)
  unknown = [g for g in groups if g not in have]
  if unknown:
    raise ValueError(f'prior groups {unknown} are not in the store (it has {sorted(have)})')
  idx = sorted(i for g in groups for i in have[g])
  return np.asarray(idx, np.int32)


def prior_channels(store, groups=None) -> int:
  """Number of channels `make_dataset(..., join=join_priors(store, groups))`
  puts in batch['priors'] (the model's prior_channels)."""
  return int(len(select_channels(store.meta, groups)))


def flip_permutation_matrix(perm: Sequence[int]) -> np.ndarray:
  """(C, C) P with maps_of_mirrored_image = maps @ P for a channel
  permutation `perm` (channel c of the original becomes channel perm[c])."""
  perm = np.asarray(perm, np.int64)
  p = np.zeros((len(perm), len(perm)), np.float32)
  p[np.arange(len(perm)), perm] = 1.0
  return p


def source_annot_ids(src) -> np.ndarray:
  """int64 annot_ids of a random-access source, in order: its `annot_ids`
  (the readers have them without reading an example), else every example's."""
  if hasattr(src, 'annot_ids'):
    return np.asarray(src.annot_ids, np.int64)
  return np.asarray([src[i]['annot_id'] for i in range(len(src))], np.int64)


class JoinPriors:
  """The prior join the input pipeline takes (`make_dataset(join=...)`):
  adds an example's teacher maps from a prior store (restricted to
  `channels`), the map affine and the channel permutation under a flip.
  Picklable: the store reopens its files lazily in each grain worker."""

  def __init__(self, store, channels):
    self.store = store
    self.channels = np.asarray(channels, np.int32)
    self.flip = np.asarray(store.flip_matrix, np.float32)[np.ix_(self.channels, self.channels)]

  def __call__(self, ex):
    maps, affine = self.store.get(ex['annot_id'])
    return dict(ex, priors=maps[..., self.channels], priors_affine=affine,
                priors_flip=self.flip)


def join_priors(store, groups=None) -> JoinPriors:
  """The join of `store`'s channels of `groups` (names or 'keypoint,depth';
  None: all)."""
  return JoinPriors(store, select_channels(store.meta, groups))
