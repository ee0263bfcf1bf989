"""What each frame of the synthetic set is, before any geometry or pixels: the
generator's options, the frame plan (split, capture, kind of every frame) and
the random draws of camera rigs, subjects and frames.

Deterministic given the options: every draw comes from its own numpy
Generator seeded by (seed, stream, index...), so a frame does not depend on
how many frames come before it or on the order they are made in.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np

from a2p_jax.data import poses

SPLITS = ('train', 'val', 'test')
SIDES = ('right', 'left')
CAMERA_ID_BASE = 400000
# Skin tones (linear-ish RGB in [0, 1]) from light to dark; a subject's tone
# is a random point on this ramp.
SKIN_RAMP = np.array([[0.97, 0.82, 0.72], [0.91, 0.72, 0.59], [0.80, 0.60, 0.46],
                      [0.67, 0.47, 0.34], [0.53, 0.36, 0.25], [0.38, 0.25, 0.17],
                      [0.27, 0.18, 0.12]])
# Random streams: each draw is seeded by (seed, stream, index...).
PLAN_STREAM, RIG_STREAM, SUBJECT_STREAM, FRAME_STREAM, VIEW_STREAM, NOISE_STREAM = range(6)


RIGS = ('dome', 'capture')


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
  # 'dome': every capture is filmed by the same cameras, as InterHand2.6M's
  # train, val and test captures share its dome (the test split sees the
  # viewpoints training saw). 'capture': each capture has its own rig (the
  # test split sees new viewpoints: a harder, cross-view setting).
  rig: str = 'dome'

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
    if self.rig not in RIGS:
      raise ValueError(f'rig must be one of {RIGS}, got {self.rig!r}')
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


def present_sides(hand_type):
  return SIDES if hand_type == 'interacting' else (hand_type,)


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
  rng = np.random.default_rng([opts.seed, PLAN_STREAM])
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


# ----------------------------------------------------------------------------
# Subjects and frames.

def sample_subject(seed, capture):
  """A subject's skin tone (3,) and skin-texture frequencies (3, 3) 1/m."""
  rng = np.random.default_rng([seed, SUBJECT_STREAM, capture])
  x = rng.uniform(0, len(SKIN_RAMP) - 1)
  i = min(int(x), len(SKIN_RAMP) - 2)
  tone = (1 - (x - i)) * SKIN_RAMP[i] + (x - i) * SKIN_RAMP[i + 1]
  return dict(tone=tone, freqs=rng.normal(0, 60.0, (3, 3)), phases=rng.uniform(0, 6.3, 3))


def sample_frame(seed, spec: FrameSpec, priors, orientation_deg: float = 180.0):
  """Pose, shape and placement draws of one frame (float32-exact values).
  priors: (right, left) `poses.pose_prior`."""
  rng = np.random.default_rng([seed, FRAME_STREAM, spec.index])
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
