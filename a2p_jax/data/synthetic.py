"""Synthetic two-hand data set, written in EXACTLY the InterHand2.6M v1.0 layout.

    python -m a2p_jax.data.synthetic --out DIR --num_frames N --seed S \
        [--mano_dir DIR] [--num_cameras C] [--penetrating_fraction F] \
        [--single_hand_fraction F] [--image_size H,W] [--workers K]

Hands come from `a2p_jax.data.hands.load_hand_models` (the procedural hand,
which is NOT MANO, unless --mano_dir points at real MANO files). Each frame
has natural poses (pose-PCA samples within joint limits, `poses.py`; the
coefficients' spread is the procedural asset's `hands_coeffs_std`, used for
real MANO too, where the joint limits keep the poses anatomical), two
hands brought into contact along a random direction with a random relative
rotation (then moved apart by a small gap, or pushed into each other for the
penetrating frames), or a single hand; it is seen by every camera of its
capture's rig and rasterized (`raster.py`) over a cluttered background with
random lighting and a per-subject skin tone. Output, all official files
exactly as InterHand2.6M's:

  DIR/images/{split}/Capture<c>/<seq_name>/cam<camid>/image<frame>.jpg
  DIR/annotations/{split}/InterHand2.6M_{split}_data.json        COCO-like
  DIR/annotations/{split}/InterHand2.6M_{split}_camera.json      mm, camrot
  DIR/annotations/{split}/InterHand2.6M_{split}_joint_3d.json    world mm
  DIR/annotations/{split}/InterHand2.6M_{split}_MANO_NeuralAnnot.json
      world fits: world_vertices = mano_jax.forward(model, pose, shape,
      trans).vertices (trans in m, flat_hand_mean=False); null = absent hand
and the extras (not in InterHand2.6M):

  DIR/annotations/{split}/synthetic_{split}_meta.json   keyed like joint_3d:
      {capture: {frame: {'penetration_volume_cm3', 'penetrating',
                         'contact_offset_mm', 'hand_type'}}}
      penetration volume = a2p_jax.geometry.penetration_volume of the world
      meshes (cm^3); 0 by construction for the other frames (they are moved
      apart until no vertex of either hand crosses the other's surface).
  DIR/priors/{split}/<same path as the image>.npz   oracle 2D priors:
      keypoints (42, 2) float32 px (u, v), InterHand order, right 0-20 then
          left 21-41 (pixel (row i, col j) has its centre at (u, v) = (j, i));
      keypoint_visible (42,) uint8: 1 if the hand is present, the joint
          projects inside the image and the surface seen at its pixel is the
          same hand no more than VISIBLE_DEPTH_M in front of the joint;
      segmentation (H, W) uint8, PART_LABELS below, 0 background;
      depth (H, W) float16 camera z in metres, 0 background.
  DIR/synthetic_config.json: the generator's options.

Part labels (PART_LABELS): 0 background; right hand 1 palm, thumb 2-4,
index 5-7, middle 8-10, ring 11-13, pinky 14-16 (each finger proximal,
middle, distal segment); left hand the same plus 16 (17 palm ... 32 left
pinky distal). A vertex belongs to the segment of its largest skinning
weight, a face to the segment with the largest summed weight.

Splits: the frames are cut into train/val/test (80/10/10, at least one val
and test frame when N >= 3), each split into captures of at most
`frames_per_capture` frames; a capture is one subject (skin tone) and one
camera rig. Deterministic given the options: every frame, rig and image draws
from its own numpy Generator seeded by (seed, stream, index).
"""

import argparse
import concurrent.futures
import dataclasses
import functools
import io
import json
import os
import sys
import zipfile
from typing import Optional, Tuple

import numba
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SPLITS = ('train', 'val', 'test')
SIDES = ('right', 'left')
# Sequence names by frame kind (InterHand2.6M keeps single-hand and
# interacting sequences apart).
SEQ_NAMES = {'interacting': '0000_synthetic_interacting',
             'right': '0001_synthetic_right', 'left': '0002_synthetic_left'}
FINGERS = ('thumb', 'index', 'middle', 'ring', 'pinky')
# MANO joint (0..15) -> part label of the right hand; left = right + 16.
_MANO_JOINT_FINGER = {1: 'index', 2: 'index', 3: 'index', 4: 'middle', 5: 'middle',
                      6: 'middle', 7: 'pinky', 8: 'pinky', 9: 'pinky', 10: 'ring',
                      11: 'ring', 12: 'ring', 13: 'thumb', 14: 'thumb', 15: 'thumb'}
PART_LABELS = {0: 'background'}
for _s, _off in (('right', 0), ('left', 16)):
  PART_LABELS[_off + 1] = f'{_s}_palm'
  for _k, _f in enumerate(FINGERS):
    for _seg, _name in enumerate(('proximal', 'middle', 'distal')):
      PART_LABELS[_off + 2 + 3 * _k + _seg] = f'{_s}_{_f}_{_name}'
NUM_PART_LABELS = len(PART_LABELS)
VISIBLE_DEPTH_M = 0.02
CAMERA_ID_BASE = 400000
# Skin tones (linear-ish RGB in [0, 1]) from light to dark; a subject's tone
# is a random point on this ramp.
_SKIN_RAMP = np.array([[0.97, 0.82, 0.72], [0.91, 0.72, 0.59], [0.80, 0.60, 0.46],
                       [0.67, 0.47, 0.34], [0.53, 0.36, 0.25], [0.38, 0.25, 0.17],
                       [0.27, 0.18, 0.12]])
# Random streams: each draw is seeded by (seed, stream, index...).
_PLAN, _RIG, _SUBJECT, _FRAME, _VIEW, _NOISE = range(6)


@dataclasses.dataclass(frozen=True)
class Options:
  """Generator options; image_size is (height, width) px."""
  num_frames: int = 8
  seed: int = 0
  num_cameras: int = 4
  image_size: Tuple[int, int] = (512, 334)
  penetrating_fraction: float = 0.1
  single_hand_fraction: float = 0.25
  frames_per_capture: int = 100
  mano_dir: Optional[str] = None
  jpeg_quality: int = 90
  workers: int = 2
  chunk_frames: int = 32
  # Spread of the hands' global orientation about the asset's rest pose and
  # of the cameras' azimuth about the +x axis, in degrees; 180: uniform
  # (every orientation, cameras all round). Smaller: an easier, more
  # InterHand2.6M-like distribution for small CPU runs.
  orientation_deg: float = 180.0

  def validate(self):
    h, w = self.image_size
    if self.num_frames < 1:
      raise ValueError(f'num_frames must be >= 1, got {self.num_frames}')
    if self.seed < 0:
      raise ValueError(f'seed must be >= 0, got {self.seed}')
    if self.num_cameras < 1:
      raise ValueError(f'num_cameras must be >= 1, got {self.num_cameras}')
    if h < 16 or w < 16:
      raise ValueError(f'image_size must be at least 16x16, got {self.image_size}')
    for name in ('penetrating_fraction', 'single_hand_fraction'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
    if self.penetrating_fraction + self.single_hand_fraction > 1.0:
      raise ValueError('penetrating_fraction + single_hand_fraction must be <= 1 '
                       '(penetrating frames have two hands)')
    if not 0.0 < self.orientation_deg <= 180.0:
      raise ValueError(f'orientation_deg must be in (0, 180], got {self.orientation_deg}')
    if self.frames_per_capture < 1 or self.workers < 1 or self.chunk_frames < 1:
      raise ValueError('frames_per_capture, workers and chunk_frames must be >= 1')


# ----------------------------------------------------------------------------
# The frame plan: split, capture, sequence, frame index and kind of each frame.

@dataclasses.dataclass(frozen=True)
class FrameSpec:
  index: int          # global frame number (random streams)
  split: str
  capture: int
  frame_idx: int      # unique within the capture
  hand_type: str      # 'interacting' | 'right' | 'left'
  penetrating: bool


def split_sizes(num_frames):
  """(train, val, test) frame counts: 80/10/10, val and test >= 1 from N >= 3."""
  if num_frames < 3:
    return (num_frames, 0, 0)
  val = max(1, int(round(0.1 * num_frames)))
  return (num_frames - 2 * val, val, val)


def plan_frames(opts: Options):
  """The FrameSpecs of all frames; exact counts of penetrating and single-hand
  frames (round(fraction * N)), their positions drawn from the seed."""
  n = opts.num_frames
  rng = np.random.default_rng([opts.seed, _PLAN])
  order = rng.permutation(n)
  n_pen = int(round(opts.penetrating_fraction * n))
  n_single = min(int(round(opts.single_hand_fraction * n)), n - n_pen)
  kind = np.array(['interacting'] * n, dtype=object)
  pen = np.zeros(n, bool)
  pen[order[:n_pen]] = True
  single = order[n_pen:n_pen + n_single]
  kind[single] = np.where(rng.random(len(single)) < 0.5, 'right', 'left')
  specs, start, capture = [], 0, 0
  for split, size in zip(SPLITS, split_sizes(n)):
    for k in range(size):
      if k % opts.frames_per_capture == 0 and k:
        capture += 1
      i = start + k
      specs.append(FrameSpec(i, split, capture, k % opts.frames_per_capture,
                             str(kind[i]), bool(pen[i])))
    if size:
      capture += 1
    start += size
  return specs


# ----------------------------------------------------------------------------
# Cameras.

def look_at(position, target, roll):
  """World -> camera rotation (3, 3) (x right, y down, z forward), z up in the world."""
  fwd = target - position
  fwd /= np.linalg.norm(fwd)
  up = np.array([0.0, 0.0, 1.0])
  if abs(fwd @ up) > 0.99:  # looking straight up/down: any other reference
    up = np.array([0.0, 1.0, 0.0])
  right = np.cross(fwd, up)
  right /= np.linalg.norm(right)
  down = np.cross(fwd, right)
  c, s = np.cos(roll), np.sin(roll)
  return np.stack([c * right + s * down, -s * right + c * down, fwd])


def sample_rig(rng, num_cameras, height, width, azimuth_deg: float = 180.0):
  """A capture's cameras: {camid (str): campos (3,) mm, camrot (3, 3), focal
  (2,), princpt (2,) px}, on a dome 0.8-1.1 m around the world origin with
  InterHand2.6M-like intrinsics (f ~ 1100-1450 px for a 512 px high image)."""
  cams = {}
  scale = height / 512.0
  for c in range(num_cameras):
    z = rng.uniform(-0.5, 1.0)  # elevation mostly above the hands
    phi = rng.uniform(0, 2 * np.pi)
    if azimuth_deg < 180.0:  # the same draw, squeezed into +-azimuth_deg
      phi = (phi / np.pi - 1.0) * np.radians(azimuth_deg)
    direction = np.array([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z])
    pos = direction * rng.uniform(0.8, 1.1)
    target = rng.normal(0, 0.02, 3)
    rot = look_at(pos, target, rng.uniform(-0.35, 0.35))
    f = rng.uniform(1100, 1450) * scale
    cams[str(CAMERA_ID_BASE + c)] = dict(
        campos=pos * 1000.0, camrot=rot,
        focal=np.array([f, f * rng.uniform(0.995, 1.005)]),
        princpt=np.array([width / 2, height / 2]) + rng.normal(0, 3 * scale, 2))
  return cams


def world_to_camera(points_mm, cam):
  """(..., 3) world mm -> camera mm: camrot @ (x - campos)."""
  return (np.asarray(points_mm, np.float64) - cam['campos']) @ cam['camrot'].T


# ----------------------------------------------------------------------------
# Hand meshes: part labels, sealing, contact along a direction.

def part_labels(model, side):
  """Part label (F,) uint8 of each face (PART_LABELS)."""
  w = np.asarray(model.weights)
  joint = np.argmax(w[np.asarray(model.faces)].sum(1), -1)
  right = np.ones(16, np.uint8)  # palm
  for j, finger in _MANO_JOINT_FINGER.items():
    right[j] = 2 + 3 * FINGERS.index(finger) + (j - 1) % 3
  return right[joint] + (16 if side == 'left' else 0)


def seal_fans(faces, num_vertices):
  """Fan faces (K, 3) closing each boundary loop at a new centroid vertex, and
  the loops; the centroid of loop k is vertex num_vertices + k."""
  from a2p_jax.geometry import boundary_loops
  loops = boundary_loops(np.asarray(faces))
  fans = []
  for k, loop in enumerate(loops):
    nxt = np.roll(loop, -1)
    fans.append(np.stack([loop, nxt, np.full_like(loop, num_vertices + k)], 1))
  return (np.concatenate(fans) if fans else np.zeros((0, 3), np.int64)), loops


def sealed(verts_Vx3, faces, fans, loops):
  """Closed copy (vertices, faces) of an open mesh: loop centroids appended."""
  caps = [verts_Vx3[loop].mean(0) for loop in loops]
  v = np.concatenate([verts_Vx3] + [c[None] for c in caps]) if caps else verts_Vx3
  return v, np.concatenate([np.asarray(faces, np.int64), fans])


@numba.njit(cache=True, nogil=True)
def _crossings(p2, pd, t2, td):
  """Over points p (projected (P, 2) on the plane normal to d, pd (P,) along
  d) and triangles (F, 3, 2) / (F, 3): (max, min) of s such that p + s d is on
  a triangle; (-inf, inf) if no line meets one."""
  hi, lo = -np.inf, np.inf
  for f in range(t2.shape[0]):
    xa, ya = t2[f, 0, 0], t2[f, 0, 1]
    xb, yb = t2[f, 1, 0], t2[f, 1, 1]
    xc, yc = t2[f, 2, 0], t2[f, 2, 1]
    area = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
    if area == 0.0:
      continue
    x0, x1 = min(xa, min(xb, xc)), max(xa, max(xb, xc))
    y0, y1 = min(ya, min(yb, yc)), max(ya, max(yb, yc))
    for p in range(p2.shape[0]):
      x, y = p2[p, 0], p2[p, 1]
      if x < x0 or x > x1 or y < y0 or y > y1:
        continue
      wb = ((x - xa) * (yc - ya) - (y - ya) * (xc - xa)) / area
      wc = ((xb - xa) * (y - ya) - (yb - ya) * (x - xa)) / area
      wa = 1.0 - wb - wc
      if wa < 0.0 or wb < 0.0 or wc < 0.0:
        continue
      s = wa * td[f, 0] + wb * td[f, 1] + wc * td[f, 2] - pd[p]
      hi = max(hi, s)
      lo = min(lo, s)
  return hi, lo


def contact_distance(verts_a, faces_a, verts_b, faces_b, direction):
  """Smallest t (m) such that moving closed mesh B by t' * direction, for every
  t' > t, puts no vertex of either mesh across the other's surface: B moved by
  t + gap touches nothing, by t - depth it is pushed in. Vertices only (edge
  crossings between vertices are not seen; they are sub-millimetre here)."""
  d = np.asarray(direction, np.float64)
  d /= np.linalg.norm(d)
  e1 = np.cross(d, [1.0, 0, 0] if abs(d[0]) < 0.9 else [0, 1.0, 0])
  e1 /= np.linalg.norm(e1)
  basis = np.stack([e1, np.cross(d, e1)], 1)
  a = np.asarray(verts_a, np.float64)
  b = np.asarray(verts_b, np.float64)
  ta, tb = a[faces_a], b[faces_b]
  # B's vertices moving +d hit A; A's vertices moving -d (relative) hit B.
  hi_b, _ = _crossings(b @ basis, b @ d, ta @ basis, ta @ d)
  _, lo_a = _crossings(a @ basis, a @ d, tb @ basis, tb @ d)
  t = max(hi_b, -lo_a)
  return 0.0 if not np.isfinite(t) else float(t)


# ----------------------------------------------------------------------------
# Frame sampling and the 3D solve (MANO, placement, penetration volume).

def sample_subject(seed, capture):
  """A subject's skin tone (3,) and skin-texture frequencies (3, 3) 1/m."""
  rng = np.random.default_rng([seed, _SUBJECT, capture])
  x = rng.uniform(0, len(_SKIN_RAMP) - 1)
  i = min(int(x), len(_SKIN_RAMP) - 2)
  tone = (1 - (x - i)) * _SKIN_RAMP[i] + (x - i) * _SKIN_RAMP[i + 1]
  return dict(tone=tone, freqs=rng.normal(0, 60.0, (3, 3)), phases=rng.uniform(0, 6.3, 3))


def sample_frame(seed, spec: FrameSpec, priors, orientation_deg: float = 180.0):
  """Pose, shape and placement draws of one frame (float32-exact values).
  priors: (right, left) `poses.pose_prior`."""
  from a2p_jax.data import poses
  rng = np.random.default_rng([seed, _FRAME, spec.index])
  f32 = lambda x: np.asarray(x, np.float32)
  out = dict(pose={}, shape={})
  for side, prior in zip(SIDES, priors):
    hand = poses.sample_hand_pose(rng, prior)
    orient = poses.random_rotvec(rng, np.radians(orientation_deg))
    out['pose'][side] = f32(np.concatenate([orient, hand]))
    out['shape'][side] = f32(np.clip(rng.standard_normal(10), -2, 2) * 0.8)
  d = rng.standard_normal(3)
  out['direction'] = d / np.linalg.norm(d)
  if spec.penetrating:
    out['offset_m'] = -rng.uniform(0.004, 0.015)
  elif rng.random() < 0.5:  # touching or nearly: contact and occlusion
    out['offset_m'] = rng.uniform(0.0005, 0.005)
  else:
    out['offset_m'] = rng.uniform(0.005, 0.04)
  out['center'] = rng.normal(0, 0.02, 3)
  light = rng.standard_normal(3)
  light[2] = abs(light[2]) + 0.3  # mostly from above
  out['light_dir'] = light / np.linalg.norm(light)
  out['light_color'] = rng.uniform(0.85, 1.15, 3) * rng.uniform(0.7, 1.1)
  out['ambient'] = rng.uniform(0.2, 0.45)
  out['skin_jitter'] = rng.uniform(0.95, 1.05, (2, 3))
  return out


@functools.lru_cache(maxsize=None)
def _normals_fn():
  import jax
  import mano_jax
  return jax.jit(mano_jax.vertex_normals)


class _Mano:
  """Batched MANO forward padded to a fixed batch size (compiled once: the
  jitted forward is cached by the model pytree and shapes)."""

  def __init__(self, models, batch):
    self.models, self.batch = models, batch

  def __call__(self, k, pose, shape, trans):
    """Model k on (n, 48), (n, 10), (n, 3) -> vertices, joints, normals numpy."""
    import mano_jax
    n = len(pose)
    pad = lambda x: np.concatenate([x, np.repeat(x[-1:], self.batch - n, 0)])
    m = self.models[k]
    out = mano_jax.forward(m, pad(pose), pad(shape), pad(trans), joint_order='interhand')
    normals = _normals_fn()(out.vertices, m.faces)
    return (np.asarray(out.vertices)[:n], np.asarray(out.joints)[:n],
            np.asarray(normals)[:n])


# Pairs per penetration_volume call: one compiled shape whatever the chunk.
_VOLUME_BATCH = 4


def penetration_volumes_m3(pairs, faces):
  """penetration_volume (m^3) of [(verts_right, verts_left)] pairs, in
  batches of _VOLUME_BATCH (padded: one compile)."""
  from a2p_jax import geometry
  vols = []
  for start in range(0, len(pairs), _VOLUME_BATCH):
    part = pairs[start:start + _VOLUME_BATCH]
    part = part + [part[-1]] * (_VOLUME_BATCH - len(part))
    vr, vl = np.stack([p[0] for p in part]), np.stack([p[1] for p in part])
    vols.append(np.asarray(geometry.penetration_volume(vr, faces[0], vl, faces[1])))
  return np.concatenate(vols)[:len(pairs)] if vols else np.zeros(0)


def solve_chunk(specs, draws, mano: _Mano, seal_info, pool=None):
  """World MANO fits, meshes and penetration volumes of a chunk of frames.

  Returns per frame a dict: 'trans' {side: (3,) float32}, 'verts' / 'joints'
  / 'normals' {side: array}, 'volume_cm3', 'offset_m' (final gap, < 0 when
  pushed in).
  """
  n = len(specs)
  stack = lambda key, side: np.stack([d[key][side] for d in draws])
  zero = np.zeros((n, 3), np.float32)
  rest = [mano(k, stack('pose', s), stack('shape', s), zero) for k, s in enumerate(SIDES)]
  faces = [m.faces for m in mano.models]
  centroids = [r[0].mean(1).astype(np.float64) for r in rest]

  def contact(i):
    if specs[i].hand_type != 'interacting':
      return 0.0
    va = sealed(rest[0][0][i].astype(np.float64), faces[0], *seal_info[0])
    # B at t = 0: its centroid on A's, so it is surely inside.
    vb = rest[1][0][i].astype(np.float64) + (centroids[0][i] - centroids[1][i])
    vb = sealed(vb, faces[1], *seal_info[1])
    return contact_distance(va[0], va[1], vb[0], vb[1], draws[i]['direction'])

  t_contact = list(pool.map(contact, range(n)) if pool else map(contact, range(n)))
  offsets = np.array([d['offset_m'] for d in draws])

  def place(offsets):
    trans = np.zeros((2, n, 3))
    for i, (spec, d) in enumerate(zip(specs, draws)):
      if spec.hand_type == 'interacting':
        shift_l = centroids[0][i] - centroids[1][i] + (t_contact[i] + offsets[i]) * d['direction']
        mid = 0.5 * (centroids[0][i] + centroids[1][i] + shift_l)
        trans[0, i] = d['center'] - mid
        trans[1, i] = shift_l + d['center'] - mid
      else:
        k = SIDES.index(spec.hand_type)
        trans[k, i] = d['center'] - centroids[k][i]
    return trans.astype(np.float32)

  todo = [i for i, s in enumerate(specs) if s.penetrating]
  volumes = np.zeros(n)
  for attempt in range(6):
    trans = place(offsets)
    world = [mano(k, stack('pose', s), stack('shape', s), trans[k])
             for k, s in enumerate(SIDES)]
    if not todo:
      break
    vol = penetration_volumes_m3([(world[0][0][i], world[1][0][i]) for i in todo], faces)
    volumes[todo] = vol
    # Rarely the chosen depth only grazes a thin part: push further in.
    todo = [i for i, v in zip(todo, vol) if not v > 0]
    if todo and attempt == 5:
      raise RuntimeError(f'frames {[specs[i].index for i in todo]}: hands pushed '
                         'together but no penetration volume')
    offsets[todo] -= 0.01
  results = []
  for i in range(n):
    r = dict(trans={}, verts={}, joints={}, normals={}, volume_cm3=float(volumes[i] * 1e6),
             offset_m=float(offsets[i]) if specs[i].hand_type == 'interacting' else None)
    for k, side in enumerate(SIDES):
      r['trans'][side] = trans[k, i]
      r['verts'][side] = world[k][0][i]
      r['joints'][side] = world[k][1][i]
      r['normals'][side] = world[k][2][i]
    results.append(r)
  return results


def present_sides(hand_type):
  return SIDES if hand_type == 'interacting' else (hand_type,)


# ----------------------------------------------------------------------------
# Rendering one view.

def background(rng, height, width):
  """A cluttered, textured background (H, W, 3) uint8.

  Drawn at half resolution (cheaper, and slightly soft like an out-of-focus
  studio): a smooth colour field of muted colours, 6-24 random shapes (some
  skin-coloured distractors), a mid-frequency texture.
  """
  h, w = max(height // 2, 8), max(width // 2, 8)
  gh, gw = rng.integers(2, 6, 2)
  grey = rng.uniform(0.1, 0.7)
  colors = grey + rng.uniform(0.2, 0.8) * (rng.random((gh, gw, 3)) - grey)
  img = Image.fromarray((np.clip(colors, 0, 1) * 255).astype(np.uint8)).resize(
      (w, h), Image.BICUBIC)
  draw = ImageDraw.Draw(img)
  for _ in range(rng.integers(6, 25)):
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.15:
      color = tuple(int(c) for c in (_SKIN_RAMP[rng.integers(len(_SKIN_RAMP))] * 255))
    x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
    x1, y1 = x0 + rng.uniform(0.05, 0.6) * w, y0 + rng.uniform(0.05, 0.6) * h
    kind = rng.integers(4)
    if kind == 0:
      draw.rectangle([x0, y0, x1, y1], fill=color)
    elif kind == 1:
      draw.ellipse([x0, y0, x1, y1], fill=color)
    elif kind == 2:
      pts = rng.uniform([x0, y0], [x1, y1], (rng.integers(3, 7), 2))
      draw.polygon([tuple(p) for p in pts], fill=color)
    else:
      draw.line([x0, y0, x1, y1], fill=color, width=int(rng.integers(1, 6)))
  tex = Image.fromarray(rng.integers(150, 256, (max(h // 6, 2), max(w // 6, 2)), np.uint8))
  img = Image.composite(img, Image.new('RGB', (w, h)), tex.resize((w, h), Image.BILINEAR))
  return np.asarray(img.resize((width, height), Image.BILINEAR))


def noise_field(seed, height, width):
  """A fixed (2H, 2W, 3) float32 N(0, 1) field; images take random windows
  of it (sensor noise without drawing H*W*3 normals per image)."""
  rng = np.random.default_rng([seed, _NOISE])
  return rng.standard_normal((2 * height, 2 * width, 3), dtype=np.float32)


def skin_albedo(subject, model, jitter):
  """Per-vertex albedo (V, 3): the subject's tone with a smooth mottling fixed
  on the rest-pose surface (the same skin in every frame and view)."""
  rest = np.asarray(model.v_template)
  wave = np.sin(rest @ subject['freqs'].T + subject['phases']).mean(-1)
  return subject['tone'][None] * jitter[None] * (1.0 + 0.07 * wave[:, None])


@numba.njit(cache=True, nogil=True)
def _shade(face, bary, faces, attrs, labels, focal, princpt, light, light_color, ambient,
           bg, gain, noise, sigma, rgb, seg):
  """Shades the covered pixels over the background, applies the camera
  response and writes rgb (H, W, 3) uint8 and seg (H, W) uint8 in one pass.

  attrs (N, 6): camera-space vertex normal and albedo. Lambert + Blinn-Phong;
  normals are flipped toward the viewer (the open wrist shows the inside).
  """
  height, width = face.shape
  color = np.empty(3, np.float32)
  for i in range(height):
    for j in range(width):
      f = face[i, j]
      if f < 0:
        for ch in range(3):
          color[ch] = bg[i, j, ch] * np.float32(1.0 / 255.0)
      else:
        b1, b2 = bary[i, j, 0], bary[i, j, 1]
        b0 = 1.0 - b1 - b2
        va, vb, vc = faces[f, 0], faces[f, 1], faces[f, 2]
        nx = b0 * attrs[va, 0] + b1 * attrs[vb, 0] + b2 * attrs[vc, 0]
        ny = b0 * attrs[va, 1] + b1 * attrs[vb, 1] + b2 * attrs[vc, 1]
        nz = b0 * attrs[va, 2] + b1 * attrs[vb, 2] + b2 * attrs[vc, 2]
        inv = 1.0 / max(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-9)
        nx, ny, nz = nx * inv, ny * inv, nz * inv
        rx, ry = (j - princpt[0]) / focal[0], (i - princpt[1]) / focal[1]
        inv = 1.0 / np.sqrt(rx * rx + ry * ry + 1.0)
        wx, wy, wz = -rx * inv, -ry * inv, -inv
        if nx * wx + ny * wy + nz * wz < 0:
          nx, ny, nz = -nx, -ny, -nz
        diffuse = max(nx * light[0] + ny * light[1] + nz * light[2], 0.0)
        hx, hy, hz = wx + light[0], wy + light[1], wz + light[2]
        inv = 1.0 / max(np.sqrt(hx * hx + hy * hy + hz * hz), 1e-9)
        spec = 0.12 * max((nx * hx + ny * hy + nz * hz) * inv, 0.0) ** 24
        for ch in range(3):
          alb = b0 * attrs[va, 3 + ch] + b1 * attrs[vb, 3 + ch] + b2 * attrs[vc, 3 + ch]
          color[ch] = (alb * (ambient + 0.8 * diffuse * light_color[ch])
                       + spec * light_color[ch])
        seg[i, j] = labels[f]
      for ch in range(3):
        x = color[ch] * gain[ch] + sigma * noise[i, j, ch]
        rgb[i, j, ch] = np.uint8(min(max(x, 0.0), 1.0) * 255.0 + 0.5)


def render_view(frame, albedo, cam, height, width, rng, part_faces, noise):
  """Image (H, W, 3) uint8 and priors of one frame seen by one camera.

  frame: a solve_chunk result plus 'hand_type', 'joints_mm' {side: (21, 3)}
  and the lighting draws; albedo {side: (V, 3)}; noise: `noise_field`.
  Returns (rgb, priors dict, bbox [x, y, w, h] px).
  """
  from a2p_jax.data import raster
  sides = present_sides(frame['hand_type'])
  rot = cam['camrot']
  uv, z, faces, attrs, labels = [], [], [], [], []
  offset = 0
  for side in sides:
    v_cam = world_to_camera(frame['verts'][side].astype(np.float64) * 1000.0, cam) / 1000.0
    uv.append(raster.project(v_cam, cam['focal'], cam['princpt']))
    z.append(v_cam[:, 2])
    f, lab = part_faces[side]
    faces.append(f + offset)
    labels.append(lab)
    attrs.append(np.concatenate([frame['normals'][side] @ rot.T, albedo[side]], 1))
    offset += len(v_cam)
  uv, z = np.concatenate(uv), np.concatenate(z)
  faces, labels = np.concatenate(faces), np.concatenate(labels)
  depth, face, bary = raster.rasterize(uv, z, faces, height, width)
  attrs = np.ascontiguousarray(np.concatenate(attrs), np.float32)
  bg = background(rng, height, width)
  # Camera response: exposure and white balance, sensor noise (a window of
  # the fixed noise field), sometimes defocus.
  gain = (rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
  dy, dx = rng.integers(0, height), rng.integers(0, width)
  sigma = np.float32(rng.uniform(0.0, 0.02))
  rgb = np.empty((height, width, 3), np.uint8)
  seg = np.zeros((height, width), np.uint8)
  light = np.asarray(rot @ frame['light_dir'], np.float32)
  _shade(face, bary, faces, attrs, labels, np.asarray(cam['focal'], np.float32),
         np.asarray(cam['princpt'], np.float32), light,
         np.asarray(frame['light_color'], np.float32), np.float32(frame['ambient']),
         bg, gain, noise[dy:dy + height, dx:dx + width], sigma, rgb, seg)
  if rng.random() < 0.3:
    rgb = np.asarray(Image.fromarray(rgb).filter(ImageFilter.BoxBlur(rng.uniform(0.5, 1.2))))
  kp, vis = keypoints_and_visibility(frame['joints_mm'], sides, cam, depth, seg)
  bbox = hands_bbox(uv, height, width)
  priors = dict(keypoints=kp, keypoint_visible=vis, segmentation=seg,
                depth=np.where(face >= 0, depth, np.float32(0)).astype(np.float16))
  return rgb, priors, bbox


def keypoints_and_visibility(joints_mm, sides, cam, depth, seg):
  """(42, 2) float32 px and (42,) uint8 visibility (see the module docstring)."""
  from a2p_jax.data import raster
  h, w = depth.shape
  kp = np.zeros((42, 2), np.float32)
  vis = np.zeros(42, np.uint8)
  for side in sides:
    sl = slice(0, 21) if side == 'right' else slice(21, 42)
    j_cam = world_to_camera(joints_mm[side], cam) / 1000.0
    uv = raster.project(j_cam, cam['focal'], cam['princpt'])
    kp[sl] = uv
    col, row = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    r, c = np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)
    lab = seg[r, c]
    same = (lab >= 1) & (lab <= 16) if side == 'right' else (lab >= 17)
    vis[sl] = inside & same & (depth[r, c] > j_cam[:, 2] - VISIBLE_DEPTH_M)
  return kp, vis


def hands_bbox(uv_Nx2, height, width):
  """[x, y, w, h] px of the projected hand vertices, clipped to the image."""
  lo = np.clip(uv_Nx2.min(0), 0, [width - 1, height - 1])
  hi = np.clip(uv_Nx2.max(0), 0, [width - 1, height - 1])
  return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def encode_jpeg(rgb, quality):
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def encode_priors(priors):
  """An .npz (np.load reads it) with fast deflate and fixed timestamps."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
    for key, value in priors.items():
      arr = io.BytesIO()
      np.lib.format.write_array(arr, np.asarray(value), allow_pickle=False)
      zf.writestr(zipfile.ZipInfo(key + '.npy', date_time=(1980, 1, 1, 0, 0, 0)),
                  arr.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
  return buf.getvalue()


# ----------------------------------------------------------------------------
# JSON records.

def _floats(x):
  return np.asarray(x, np.float64).tolist()


def joint_3d_record(result, hand_type):
  """joint_3d.json entry: world_coord 42x3 mm, joint_valid 42x1, hand_type."""
  coord = np.zeros((42, 3))
  valid = np.zeros((42, 1))
  for side in present_sides(hand_type):
    sl = slice(0, 21) if side == 'right' else slice(21, 42)
    coord[sl] = result['joints_mm'][side]
    valid[sl] = 1.0
  return dict(world_coord=_floats(coord), joint_valid=_floats(valid),
              hand_type=hand_type, hand_type_valid=1)


def mano_record(result, draw, hand_type):
  sides = present_sides(hand_type)
  return {s: (dict(pose=_floats(draw['pose'][s]), shape=_floats(draw['shape'][s]),
                   trans=_floats(result['trans'][s])) if s in sides else None)
          for s in SIDES}


def camera_record(rig):
  keys = ('campos', 'camrot', 'focal', 'princpt')
  return {k: {cid: _floats(cam[k]) for cid, cam in rig.items()} for k in keys}


def image_path(split, capture, hand_type, camid, frame_idx):
  """Path relative to images/{split}/ (and priors/{split}/ without .jpg)."""
  return (f'Capture{capture}/{SEQ_NAMES[hand_type]}/cam{camid}/'
          f'image{frame_idx}.jpg')


def read_camera(cam_json_entry, camid):
  """One camera of camera.json back as the arrays render_view uses."""
  return {k: np.asarray(cam_json_entry[k][camid], np.float64)
          for k in ('campos', 'camrot', 'focal', 'princpt')}


# ----------------------------------------------------------------------------
# The generator.

def generate(out_dir, opts: Options, *, progress=True):
  """Writes the data set to out_dir; returns a summary dict (counts, timings)."""
  import time
  import mano_jax
  from tqdm import tqdm
  from a2p_jax.data import hands
  from a2p_jax.data import poses
  opts.validate()
  t_start = time.perf_counter()
  height, width = opts.image_size
  models = hands.load_hand_models(opts.mano_dir)
  coeffs_std = np.load(os.path.join(mano_jax.io.ASSET_DIR, 'procedural_hand_right.npz'))[
      'hands_coeffs_std']
  priors = [poses.pose_prior(m, coeffs_std) for m in models]
  part_faces = {s: (np.asarray(m.faces, np.int64), part_labels(m, s))
                for s, m in zip(SIDES, models)}
  seal_info = [seal_fans(m.faces, m.num_vertices) for m in models]
  specs = plan_frames(opts)
  captures = sorted({s.capture for s in specs})
  rigs = {c: sample_rig(np.random.default_rng([opts.seed, _RIG, c]), opts.num_cameras,
                        height, width, opts.orientation_deg) for c in captures}
  # The rig as written: JSON floats round-trip exactly, so render with them.
  rigs = {c: {cid: read_camera(camera_record(rig), cid) for cid in rig}
          for c, rig in rigs.items()}
  subjects = {c: sample_subject(opts.seed, c) for c in captures}
  mano = _Mano(models, min(opts.chunk_frames, len(specs)))
  noise = noise_field(opts.seed, height, width)

  out = {split: dict(images=[], annotations=[], joint_3d={}, mano={}, meta={},
                     camera={}) for split in SPLITS}
  for spec in specs:
    out[spec.split]['camera'][str(spec.capture)] = camera_record(rigs[spec.capture])
  total_images = len(specs) * opts.num_cameras
  bar = tqdm(total=total_images, unit='img', disable=not progress, desc='synthetic')
  pool = concurrent.futures.ThreadPoolExecutor(opts.workers)
  pending = []

  def finish(job):
    spec, camid, fut, image_id = job
    bbox = fut.result()
    out[spec.split]['annotations'][image_id]['bbox'] = bbox
    bar.update(1)

  try:
    for start in range(0, len(specs), opts.chunk_frames):
      chunk = specs[start:start + opts.chunk_frames]
      draws = [sample_frame(opts.seed, s, priors, opts.orientation_deg) for s in chunk]
      # Contacts in this thread: the pool is busy rendering the previous chunk.
      results = solve_chunk(chunk, draws, mano, seal_info)
      # Views of the previous chunk rendered while this one was solved.
      for job in pending:
        finish(job)
      pending = []
      for spec, draw, res in zip(chunk, draws, results):
        res.update(hand_type=spec.hand_type, light_dir=draw['light_dir'],
                   light_color=draw['light_color'], ambient=draw['ambient'],
                   joints_mm={s: res['joints'][s].astype(np.float64) * 1000.0 for s in SIDES})
        subject = subjects[spec.capture]
        albedo = {s: skin_albedo(subject, m, draw['skin_jitter'][k])
                  for k, (s, m) in enumerate(zip(SIDES, models))}
        split = out[spec.split]
        cap, fr = str(spec.capture), str(spec.frame_idx)
        split['joint_3d'].setdefault(cap, {})[fr] = joint_3d_record(res, spec.hand_type)
        split['mano'].setdefault(cap, {})[fr] = mano_record(res, draw, spec.hand_type)
        split['meta'].setdefault(cap, {})[fr] = dict(
            penetration_volume_cm3=res['volume_cm3'], penetrating=spec.penetrating,
            contact_offset_mm=None if res['offset_m'] is None else res['offset_m'] * 1000.0,
            hand_type=spec.hand_type)
        for c, (camid, cam) in enumerate(rigs[spec.capture].items()):
          rel = image_path(spec.split, spec.capture, spec.hand_type, camid, spec.frame_idx)
          image_id = len(split['images'])
          split['images'].append(dict(
              id=image_id, file_name=rel, width=width, height=height, capture=spec.capture,
              subject=spec.capture, seq_name=SEQ_NAMES[spec.hand_type], camera=camid,
              frame_idx=spec.frame_idx))
          split['annotations'].append(dict(
              id=image_id, image_id=image_id, bbox=None,
              joint_valid=joint_3d_record(res, spec.hand_type)['joint_valid'],
              hand_type=spec.hand_type, hand_type_valid=1))
          rng = np.random.default_rng([opts.seed, _VIEW, spec.index, c])
          fut = pool.submit(_render_and_write, out_dir, spec.split, rel, res, albedo, cam,
                            height, width, rng, part_faces, noise, opts.jpeg_quality)
          pending.append((spec, camid, fut, image_id))
    for job in pending:
      finish(job)
  finally:
    pool.shutdown(wait=True)
    bar.close()

  for split in SPLITS:
    if not out[split]['images']:
      continue
    _write_split(out_dir, split, out[split])
  with open(os.path.join(out_dir, 'synthetic_config.json'), 'w') as f:
    json.dump(dict(dataclasses.asdict(opts), generator='a2p_jax.data.synthetic',
                   hand_model=models[0].name, part_labels=PART_LABELS), f, indent=1)
  elapsed = time.perf_counter() - t_start
  return dict(frames=len(specs), images=total_images, seconds=elapsed,
              images_per_second=total_images / elapsed,
              penetrating=sum(s.penetrating for s in specs))


def _render_and_write(out_dir, split, rel, res, albedo, cam, height, width, rng,
                      part_faces, noise, quality):
  rgb, priors, bbox = render_view(res, albedo, cam, height, width, rng, part_faces, noise)
  img_path = os.path.join(out_dir, 'images', split, rel)
  prior_path = os.path.join(out_dir, 'priors', split, rel[:-len('.jpg')] + '.npz')
  for path, data in ((img_path, encode_jpeg(rgb, quality)), (prior_path, encode_priors(priors))):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(data)
  return bbox


def _write_split(out_dir, split, rec):
  ann_dir = os.path.join(out_dir, 'annotations', split)
  os.makedirs(ann_dir, exist_ok=True)
  files = {
      f'InterHand2.6M_{split}_data.json': dict(images=rec['images'],
                                               annotations=rec['annotations']),
      f'InterHand2.6M_{split}_camera.json': rec['camera'],
      f'InterHand2.6M_{split}_joint_3d.json': rec['joint_3d'],
      f'InterHand2.6M_{split}_MANO_NeuralAnnot.json': rec['mano'],
      f'synthetic_{split}_meta.json': rec['meta'],
  }
  for name, obj in files.items():
    with open(os.path.join(ann_dir, name), 'w') as f:
      json.dump(obj, f)


def _parse_size(text):
  try:
    h, w = (int(x) for x in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'--image_size must be H,W (ints), got {text!r}')
  return (h, w)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', required=True, help='output directory (InterHand2.6M layout)')
  p.add_argument('--num_frames', type=int, required=True)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--mano_dir', default=None,
                 help='folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (default: procedural hand, not MANO)')
  p.add_argument('--num_cameras', type=int, default=Options.num_cameras)
  p.add_argument('--penetrating_fraction', type=float, default=Options.penetrating_fraction)
  p.add_argument('--single_hand_fraction', type=float, default=Options.single_hand_fraction)
  p.add_argument('--image_size', type=_parse_size, default=Options.image_size,
                 help='H,W in pixels (default 512,334 like InterHand2.6M)')
  p.add_argument('--frames_per_capture', type=int, default=Options.frames_per_capture)
  p.add_argument('--workers', type=int, default=Options.workers)
  p.add_argument('--orientation_deg', type=float, default=Options.orientation_deg,
                 help='spread of hand orientations and camera azimuths (180: uniform)')
  args = p.parse_args(argv)
  opts = Options(num_frames=args.num_frames, seed=args.seed, num_cameras=args.num_cameras,
                 image_size=args.image_size, penetrating_fraction=args.penetrating_fraction,
                 single_hand_fraction=args.single_hand_fraction,
                 frames_per_capture=args.frames_per_capture, mano_dir=args.mano_dir,
                 workers=args.workers, orientation_deg=args.orientation_deg)
  try:
    opts.validate()
  except ValueError as e:
    p.error(str(e))
  summary = generate(args.out, opts)
  print(json.dumps(summary))
  return 0


if __name__ == '__main__':
  sys.exit(main())
