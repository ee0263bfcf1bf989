"""grain input pipeline: reader examples -> augmented, batched training arrays.

    source (random access: InterHand26M, HIC, the synthetic set, a TFDS
    data source) -> per-process shard -> [shuffle, repeat] -> random_map
    (load image, flip, rotate, crop, colour) -> batch -> [multiprocess prefetch]

Deterministic given the seed: the augmentation of element i of the (sharded,
shuffled, repeated) sequence depends only on (seed, i), and the iterator's
state (`get_state`/`set_state`) restores the exact position, so training
resumes exactly. The per-example work is numpy/PIL only (no JAX), so it runs
in grain's worker processes.

Output arrays per example (batched with a leading axis):
  image        (H, W, 3) uint8 crop (the model normalises on device)
  joints_2d    (42, 2) float32 crop pixels (right 0-20, left 21-41, InterHand order):
               the reader's `joints_img` where `joints_img_valid`, else the
               projected 3D joints
  joints_2d_valid (42,) float32: the 2D target's validity (a 2D-only source
               such as COCO-WholeBody has 2D targets and no 3D ones)
  joints_rel   (42, 3) float32 m, camera space, relative to each hand's wrist
  depth_rel    (42,) float32 m, z minus the own hand's wrist z (2.5D target)
  joint_valid  (42,) float32, 0 for missing joints or missing hands
  hand_valid   (2,) float32 [right, left]
  mano_pose    (2, 48), mano_shape (2, 10), mano_trans (2, 3) m camera space
  mano_valid   (2,) float32
  rel_root     (3,) float32 m, left wrist minus right wrist; rel_root_valid ()
  affine       (2, 3) float32 source pixel -> crop pixel of the (possibly
               mirrored) example, flip excluded, rotation included: with
               focal/princpt the crop's camera (a2p_jax.models.camera)
  focal, princpt (2,) float32 (princpt after any flip)
  flipped      () int32
  priors       (prior_h, prior_w, C) float32 with `make_dataset(..., join=teacher.join_priors(store))`:
               the teacher's maps of the example (store.get(annot_id)) warped with
               the image's own pixel affine (flip and rotation included) onto
               cfg.prior_hw cells over the crop, channels @ flip_matrix when
               flipped (see `prior_maps`)
"""

import dataclasses
import io
from typing import Callable, Optional, Sequence, Tuple

import grain
import numpy as np
from absl import flags
from PIL import Image

from a2p_jax.data import augment
from a2p_jax.geometry.camera import project

WRIST = (20, 41)  # wrist rows of the right and left hand (InterHand order)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Training-time augmentation ranges (InterWild-like defaults)."""
  input_hw: Tuple[int, int] = (256, 256)
  scale: float = 0.25          # crop side x U(1 - s, 1 + s)
  rotation_deg: float = 30.0   # U(-r, r), applied with probability rotation_prob
  rotation_prob: float = 0.6
  shift: float = 0.1           # centre moved by U(-t, t) x side
  color: float = 0.2           # per-channel gain U(1 - c, 1 + c)
  flip_prob: float = 0.5
  box_extend: float = 1.3
  prior_hw: Optional[Tuple[int, int]] = None  # output size of prior maps


def load_image(ex: dict) -> np.ndarray:
  """(H, W, 3) uint8 RGB from `image` (array or encoded bytes) or `image_path`."""
  img = ex.get('image')
  if isinstance(img, np.ndarray) and img.ndim == 3:
    return img
  try:
    if isinstance(img, (bytes, bytearray)):
      pil = Image.open(io.BytesIO(img))
    else:
      pil = Image.open(ex['image_path'])
    return np.asarray(pil.convert('RGB'))
  except (OSError, KeyError) as e:
    where = ex.get('image_path', f'annotation {ex.get("annot_id")}')
    raise OSError(f'cannot read image {where}: {e}') from None


def _hand_valid(valid: np.ndarray) -> np.ndarray:
  return np.array([valid[:21].max(), valid[21:].max()], np.float32)


def keypoints_2d(ex: dict, uv_3d: np.ndarray, valid_3d: np.ndarray):
  """(uv (42, 2), valid (42,)): the reader's 2D annotation `joints_img`
  where `joints_img_valid` > 0, else the projection `uv_3d` of the valid 3D
  joints. Readers without `joints_img` (InterHand2.6M, HIC, the synthetic
  set) supervise 2D with their projected 3D joints."""
  if ex.get('joints_img') is None:
    return uv_3d, valid_3d
  img = np.asarray(ex['joints_img'], np.float64).reshape(42, 2)
  img_valid = np.asarray(ex['joints_img_valid'], np.float32).reshape(42) > 0
  uv = np.where(img_valid[:, None], img, uv_3d)
  return uv, np.maximum(valid_3d, img_valid.astype(np.float32))


def _aug_params(cfg: AugmentConfig, rng: np.random.Generator, training: bool):
  if not training:
    return dict(scale=1.0, rot=0.0, shift=np.zeros(2), color=np.ones(3), flip=False)
  rot = 0.0
  if rng.random() < cfg.rotation_prob:
    rot = np.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
  return dict(scale=rng.uniform(1 - cfg.scale, 1 + cfg.scale), rot=rot,
              shift=rng.uniform(-cfg.shift, cfg.shift, 2),
              color=rng.uniform(1 - cfg.color, 1 + cfg.color, 3),
              flip=bool(rng.random() < cfg.flip_prob))


def process(ex: dict, rng: np.random.Generator, *, cfg: AugmentConfig, models,
            training: bool) -> dict:
  """One reader example -> one training example (see the module docstring)."""
  image = load_image(ex)
  width = image.shape[1]
  p = _aug_params(cfg, rng, training)
  if p['flip']:
    ex = augment.flip(ex, models, width)
  focal = np.asarray(ex['camera']['focal'], np.float64)
  princpt = np.asarray(ex['camera']['princpt'], np.float64)
  joints_cam = np.asarray(ex['joints_cam'], np.float64).reshape(42, 3)
  joint_valid = np.asarray(ex['joint_valid'], np.float32).reshape(42)
  # A joint counts only if its own hand's wrist does (root-relative targets;
  # InterWild applies the same rule to its 2D targets).
  wrist_valid = joint_valid[list(WRIST)]
  jv = joint_valid * np.repeat(wrist_valid, 21)
  with np.errstate(divide='ignore', invalid='ignore'):   # absent 3D joints may be zeros
    uv_3d = project(joints_cam, focal, princpt)
  uv, valid_2d = keypoints_2d(ex, np.where(np.isfinite(uv_3d), uv_3d, 0.0), jv)
  box = augment.hands_box(uv, np.maximum(joint_valid, valid_2d), extend=cfg.box_extend)
  if box is None:  # no valid joint: fall back to the annotated box
    x, y, w, h = np.asarray(ex['bbox'], np.float64)
    box = np.array([x + w / 2, y + h / 2, max(w, h) * cfg.box_extend])
  side = box[2] * p['scale']
  centre = box[:2] + p['shift'] * box[2]
  # Pixels are warped with `pixel_affine` (it contains the flip); the example
  # was already mirrored in 3D above, so its keypoints, and the `affine` we
  # return (the crop of the mirrored camera's image, consistent with focal,
  # princpt and the 3D targets), do not contain the flip.
  pixel_affine = augment.crop_affine(centre, side, cfg.input_hw, rot_rad=p['rot'],
                                     flip=p['flip'], image_width=width)
  affine = augment.crop_affine(centre, side, cfg.input_hw, rot_rad=p['rot'])
  joints_2d = augment.apply_affine(affine, uv)
  if p['rot']:
    # 3D targets turn with the crop about the optical axis (exact for a crop
    # centred on the principal point; the 2D targets above are exact always).
    ex = augment.rotate_3d(ex, augment.rot_z(p['rot']), models)
    joints_cam = np.asarray(ex['joints_cam'], np.float64).reshape(42, 3)
  crop = augment.warp_image(image, pixel_affine, cfg.input_hw)
  if training:
    crop = augment.color_jitter(crop, p['color'])
  hand_valid = _hand_valid(np.maximum(joint_valid, valid_2d))
  wrists = joints_cam[list(WRIST)]
  joints_rel = joints_cam.copy()
  joints_rel[:21] -= wrists[0]
  joints_rel[21:] -= wrists[1]
  mano_pose = np.zeros((2, 48), np.float32)
  mano_shape = np.zeros((2, 10), np.float32)
  mano_trans = np.zeros((2, 3), np.float32)
  mano_valid = np.zeros(2, np.float32)
  for k, s in enumerate(augment.HANDS):
    fit = ex['mano'].get(s) if ex.get('mano') else None
    if fit is not None:
      mano_pose[k], mano_shape[k], mano_trans[k] = fit['pose'], fit['shape'], fit['trans']
      mano_valid[k] = 1.0
  out = {
      'image': crop,
      'joints_2d': joints_2d.astype(np.float32),
      'joints_2d_valid': valid_2d.astype(np.float32),
      'joints_rel': (joints_rel / 1000.0).astype(np.float32),
      'depth_rel': (joints_rel[:, 2] / 1000.0).astype(np.float32),
      'joint_valid': jv.astype(np.float32),
      'hand_valid': hand_valid,
      'mano_pose': mano_pose, 'mano_shape': mano_shape, 'mano_trans': mano_trans,
      'mano_valid': mano_valid,
      'rel_root': ((wrists[1] - wrists[0]) / 1000.0).astype(np.float32),
      'rel_root_valid': np.float32(wrist_valid.min()),
      'affine': affine.astype(np.float32),
      'focal': focal.astype(np.float32), 'princpt': princpt.astype(np.float32),
      'flipped': np.int32(p['flip']),
  }
  if 'priors' in ex:
    if cfg.prior_hw is None:
      raise ValueError(f'annotation {ex.get("annot_id")}: the example has prior maps but '
                       f'AugmentConfig.prior_hw is None (the size to warp them to)')
    if 'priors_affine' not in ex:
      raise KeyError(f'annotation {ex.get("annot_id")}: priors without priors_affine '
                     f'(image px -> map px; join a prior store with make_dataset(join=...))')
    out['priors'] = prior_maps(ex['priors'], ex['priors_affine'], pixel_affine, cfg,
                               ex.get('priors_flip') if p['flip'] else None)
  return out


PRIOR_SUPERSAMPLE = 4  # samples per output cell side (area pooling of the warp)


def prior_maps(maps: np.ndarray, map_affine: np.ndarray, pixel_affine: np.ndarray,
               cfg: AugmentConfig, flip_matrix: Optional[np.ndarray] = None) -> np.ndarray:
  """Teacher maps (h', w', C) -> (prior_h, prior_w, C) float32 over the crop.

  map_affine: source image px -> map px (the store's); pixel_affine: source
  image px -> crop px, the one that warps the image (flip and rotation
  included). Output cell q covers crop pixels [q s - 1/2, (q + 1) s - 1/2),
  s = input/prior size; it is the mean of PRIOR_SUPERSAMPLE^2 bilinear samples
  of the maps over the cell (zero outside the maps). Under a flip, the maps
  (which describe the unmirrored image) have their channels mixed by
  `flip_matrix` (C, C): out @ flip_matrix, e.g. right/left heatmaps swap.
  """
  maps = np.asarray(maps)
  mh, mw, c = maps.shape
  ph, pw = cfg.prior_hw
  k = PRIOR_SUPERSAMPLE
  sy, sx = cfg.input_hw[0] / ph, cfg.input_hw[1] / pw
  full = lambda a: np.vstack([np.asarray(a, np.float64), [0.0, 0.0, 1.0]])
  crop_to_map = (full(map_affine) @ np.linalg.inv(full(pixel_affine)))[:2]
  sub = (np.arange(k) + 0.5) / k
  ys = ((np.arange(ph)[:, None] + sub[None, :]) * sy - 0.5).reshape(-1)  # (ph*k,)
  xs = ((np.arange(pw)[:, None] + sub[None, :]) * sx - 0.5).reshape(-1)
  vv, uu = np.meshgrid(ys, xs, indexing='ij')
  mu = crop_to_map[0, 0] * uu + crop_to_map[0, 1] * vv + crop_to_map[0, 2]
  mv = crop_to_map[1, 0] * uu + crop_to_map[1, 1] * vv + crop_to_map[1, 2]
  u0, v0 = np.floor(mu), np.floor(mv)
  fu, fv = (mu - u0)[..., None], (mv - v0)[..., None]
  u0, v0 = u0.astype(np.int32), v0.astype(np.int32)
  flat = maps.reshape(mh * mw, c).astype(np.float32)
  acc = np.zeros(mu.shape + (c,), np.float64)
  for du, dv, wgt in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)),
                      (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
    uu_, vv_ = u0 + du, v0 + dv
    ok = (uu_ >= 0) & (uu_ < mw) & (vv_ >= 0) & (vv_ < mh)
    idx = np.where(ok, vv_ * mw + uu_, 0).astype(np.int32)
    acc += flat[idx] * (wgt * ok[..., None])
  out = acc.reshape(ph, k, pw, k, c).mean((1, 3))
  if flip_matrix is not None:
    out = out @ np.asarray(flip_matrix, np.float64)
  return out.astype(np.float32)


class _Process:
  """Picklable per-example transform for grain workers."""

  def __init__(self, cfg, models, training):
    self.cfg, self.models, self.training = cfg, models, training

  def __call__(self, ex, rng):
    return process(ex, rng, cfg=self.cfg, models=self.models, training=self.training)


def shard_for_process(num_examples: int, process_index: int, process_count: int):
  """Contiguous index range of this process (equal sizes; remainder dropped)."""
  per = num_examples // process_count
  if per == 0:
    raise ValueError(f'{num_examples} examples cannot be split over '
                     f'{process_count} processes')
  return process_index * per, (process_index + 1) * per


def make_dataset(source: Sequence, *, cfg: AugmentConfig, models, batch_size: int,
                 seed: int, training: bool, num_epochs: Optional[int] = None,
                 process_index: int = 0, process_count: int = 1,
                 num_workers: int = 0, drop_remainder: bool = True,
                 join: Optional[Callable[[dict], dict]] = None):
  """A grain IterDataset of batches from a random-access `source`.

  `models`: (right, left) ManoModel, numpy leaves (for flips/rotations of
  MANO fits). Training: shuffled each epoch, repeated `num_epochs` times
  (None: forever), augmented. Evaluation: in order, once, centred crops.
  Each process gets its own contiguous shard of the source.
  join: a function adding fields to each reader example before the
  augmentation, e.g. the teacher's prior maps (`a2p_jax.teacher.join_priors`:
  'priors', 'priors_affine', 'priors_flip'; batch['priors'] then holds
  them warped like the image). Picklable when num_workers > 0.
  """
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  ds = _examples(source, seed=seed, training=training, num_epochs=num_epochs,
                 process_index=process_index, process_count=process_count, join=join)
  return _batched(ds, cfg=cfg, models=models, batch_size=batch_size, seed=seed,
                  training=training, num_workers=num_workers, drop_remainder=drop_remainder)


def _examples(source, *, seed, training, num_epochs, process_index, process_count, join):
  lo, hi = shard_for_process(len(source), process_index, process_count)
  ds = grain.MapDataset.source(source)[lo:hi]
  if training:
    ds = ds.shuffle(seed=seed).repeat(num_epochs)
  elif num_epochs not in (None, 1):
    ds = ds.repeat(num_epochs)
  if join is not None:
    ds = ds.map(join)
  return ds


def _batched(ds, *, cfg, models, batch_size, seed, training, num_workers, drop_remainder):
  ds = ds.random_map(_Process(cfg, models, training), seed=seed)
  it = ds.to_iter_dataset().batch(batch_size, drop_remainder=drop_remainder)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


@dataclasses.dataclass(frozen=True)
class MixPart:
  """One source of a training mix: examples, the share of draws it gets,
  and an optional join (its own prior store)."""
  source: Sequence
  probability: float
  join: Optional[Callable[[dict], dict]] = None
  name: str = ''


def mixture_probabilities(sizes: Sequence[int], groups: Sequence[str],
                          weights: Sequence[float]) -> np.ndarray:
  """Draw probabilities of the sources of a mix, InterWild's rule generalised.

  InterWild (common/base.py `_make_batch_generator`, data/dataset.py
  `MultipleDatasets`) concatenates its 3D sets (InterHand2.6M, Re:InterHand:
  each drawn in proportion to its size) and its 2D sets (COCO) into two
  groups, then makes the groups the same length: each group gets an equal
  share of the draws. Here: every group gets 1 / number of groups; within a
  group, a source gets its share in proportion to weight x size (weight 1:
  InterWild's concatenation).
  """
  sizes = np.asarray(sizes, np.float64)
  weights = np.asarray(weights, np.float64)
  if len(sizes) == 0 or not (len(sizes) == len(groups) == len(weights)):
    raise ValueError(f'mixture_probabilities: need one size, group and weight per source, '
                     f'got {len(sizes)}, {len(groups)}, {len(weights)}')
  if np.any(sizes <= 0) or np.any(weights < 0) or not np.all(np.isfinite(weights)):
    raise ValueError(f'mixture_probabilities: sizes must be > 0 and weights >= 0, got sizes '
                     f'{sizes.tolist()}, weights {weights.tolist()}')
  names = sorted(set(groups))
  probs = np.zeros(len(sizes))
  for g in names:
    member = np.array([x == g for x in groups])
    mass = weights[member] * sizes[member]
    if mass.sum() <= 0:
      raise ValueError(f'mixture_probabilities: group {g!r} has zero total weight')
    probs[member] = mass / mass.sum() / len(names)
  return probs


def make_mixed_dataset(parts: Sequence[MixPart], *, cfg: AugmentConfig, models,
                       batch_size: int, seed: int, process_index: int = 0,
                       process_count: int = 1, num_workers: int = 0):
  """Training batches drawn from several sources (`MixPart`s), forever.

  Each source is sharded over processes, shuffled (its own seed) and repeated
  like `make_dataset`'s, joined with its own `join`, then grain mixes them
  with the parts' probabilities; augmentation and batching follow as in
  `make_dataset`. Deterministic given the seed, and the iterator's state
  restores the exact position (resume).
  """
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  if not parts:
    raise ValueError('make_mixed_dataset: no sources')
  streams = [_examples(p.source, seed=seed + 1009 * k, training=True, num_epochs=None,
                       process_index=process_index, process_count=process_count, join=p.join)
             for k, p in enumerate(parts)]
  mixed = grain.MapDataset.mix(streams, [float(p.probability) for p in parts])
  return _batched(mixed, cfg=cfg, models=models, batch_size=batch_size, seed=seed,
                  training=True, num_workers=num_workers, drop_remainder=True)
