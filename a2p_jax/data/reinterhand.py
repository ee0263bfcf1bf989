"""Re:InterHand (Moon et al., NeurIPS 2023 Datasets and Benchmarks) reader: the
Mugsy (third-person) cameras, 5 fps relit images, read as InterWild reads it.

    ds = ReInterHand('/data/ReInterHand/data', 'test', mano_dir='/data/mano')
    ex = ds[0]

Layout read (`root` is InterWild's data/ReInterHand/data: the capture folders
as the release's download scripts leave them):

  root/
    m--20221215--0949--RNS217--pilot--ProjectGoliathScript--Hands--two-hands/
      Mugsy_cameras/
        cam_params.json          {cam: {'R': 3x3, 't': 3, 'focal': 2, 'princpt': 2}}
        envmap_per_frame/
          images/<cam>/<frame:06d>.png           the 5 fps relit renders
      orig_fits/{right,left}/Keypoints/keypoint-<frame:06d>.json
      mano_fits/params/<frame>_{right,left}.json   (frame not zero-padded)
      frame_list.txt             30 fps frames: NOT used (see below)
    m--...                       one folder per capture

Facts and where they come from (facebookresearch/InterWild
data/ReInterHand/ReInterHand.py `load_data`/`__getitem__`, common/utils/
preprocessing.py `get_bbox`/`get_mano_data`, common/utils/transforms.py
`world2cam`/`cam2pixel`, tool/ReInterHand/render/reih_render_mano_3rd.py,
tool/ReInterHand/download/*.py):

- Split: the test split is the three captures
  m--20221215--0949--RNS217--..., m--20221216--0953--NKC880--...,
  m--20230317--1130--QZX685--... (`TEST_CAPTURES`); train is every other
  capture folder under root (folders named m--*, InterWild globs root/*).
- Frames: Mugsy_cameras + envmap_per_frame is rendered at 5 fps, so the
  frames are the images that exist, listed per camera (InterWild says the
  30 fps frame_list.txt "cannot" be used here). Cameras are the keys of
  cam_params.json; an image folder of a camera without parameters is
  ignored, a camera without an image folder has no examples.
- cam_params.json, per camera: 'R' (3, 3) world->camera rotation, 't' (3,)
  world->camera translation in mm (InterWild divides it by 1000 to get m),
  'focal' (2,) and 'princpt' (2,) px; X_cam = R X_world + t. Mugsy images
  are pinhole (the render script draws them with a distortion-free
  PerspectiveCamera); a 'D' (fisheye, InterWild's Ego_cameras) that is not
  all zeros is refused rather than ignored.
- keypoint-*.json: a list of 24 [x, y, z] world points in mm per hand:
  Wrist, Thumb_0..4, Index_1..4, Middle_1..4, Ring_1..4, Pinky_0..4,
  Forearm_Stub. InterWild maps them by name onto its 21-joint hand, which
  drops Thumb_0 (1), Pinky_0 (18) and Forearm_Stub (23). In InterHand order
  the kept file indices are `KEYPOINT_TO_INTERHAND` =
  [5, 4, 3, 2, 9, 8, 7, 6, 13, 12, 11, 10, 17, 16, 15, 14, 22, 21, 20, 19, 0]
  (thumb4..1, index4..1, middle, ring, pinky, wrist). Only the kept joints
  must be finite.
- <frame>_{right,left}.json: {'pose' (48,) axis-angle rad, root first,
  flat_hand_mean=False; 'shape' (10,); 'trans' (3,) m}, world space (the
  render script poses smplx MANO with them and then applies R and t / 1000;
  the left model with the shapedirs fix, as `load_hand_models` gives it).
- Camera-space fits: InterWild turns the root pose by R and then moves the
  mesh about its wrist: mesh - root + R root + t. Done exactly about the
  shape's rest root joint J0(shape): pose_root' = R pose_root,
  trans' = R (J0 + trans) + t / 1000 - J0 (`camera.mano_fit_to_camera`
  with campos = -R^-1 t). (InterWild takes `root` from the wrist regressed
  from the posed mesh, which differs slightly from the kinematic root (pose
  blend shapes, skinning), so its meshes can differ from R mesh_world + t by
  (R - I) times that difference; ours are exactly R mesh_world + t.)
- joints_img: cam2pixel of joints_cam (u = fx x / z + px). joints_img_valid
  is InterWild's `joint_trunc`: valid and 0 <= u < width, 0 <= v < height
  (and, here, z > 0).
- A hand "exists" in a view when one of its joints is in the image
  (InterWild's rhand_exist / lhand_exist): hand_type 'interacting' when both
  do, the one side otherwise; hand_type_valid 0 when neither does.
- hand_bbox per hand: InterWild's get_bbox(extend_ratio=1.2) of the in-image
  joints (centre kept, width and height x 1.2). bbox: the same of both
  hands' in-image joints together; the whole image when there are none.

Examples (one per existing image, i.e. camera view of a 5 fps frame):

  image_path     str, root/<capture>/Mugsy_cameras/envmap_per_frame/images/
                 <cam>/<frame:06d>.png
  image_size     (height, width) px, read from the first image of the camera
                 (every render of a camera has the camera's size)
  joints_cam     (42, 3) float64 mm camera space, InterHand order (right
                 0-20, left 21-41)
  joint_valid    (42,) float32, 1 (every kept keypoint is valid, InterWild)
  joints_img     (42, 2) float64 px;  joints_img_valid (42,) float32
  hand_type      'right' | 'left' | 'interacting';  hand_type_valid int 0/1
  bbox           (4,) float64 [x, y, w, h] px;  hand_bbox {'right'|'left':
                 (4,) [x, y, w, h] or None (hand not in the image)}
  camera         {'focal' (2,), 'princpt' (2,)} float64 px
  mano           {'right'|'left': {'pose' (48,), 'shape' (10,), 'trans' (3,)}}
                 camera space (pose rad, trans m): mano_jax.forward(model,
                 pose, shape, trans) is the camera-space mesh in m. Given for
                 both hands, also one outside the view (hand_type says which
                 hands the view shows).
  annot_id       int, stable: 63 bits of sha1('<capture>/<cam>/<frame>')
  capture_id, camera_id (str), frame_idx (int)

Memory and speed: the index (cameras, per-frame world joints and fits, one
row per image) is built once from the per-frame JSON files into flat numpy
arrays, cached as .npy files in root/.a2p_jax_index/ (or ~/.cache/a2p_jax
when root is read-only) and memory-mapped on later runs. The cache is
rebuilt when cam_params.json or a per-frame folder (added or removed files)
changes, or when an image folder holds images the index lacks; editing a
per-frame JSON file in place is not detected (delete the cache).

Errors: a missing or malformed cam_params.json / keypoint / MANO file raises
AnnotationError naming the file and the key. An image in the cached index
that is no longer on disk is skipped, counted and logged (`summary`), or
raises with strict=True (with a fresh index nothing can be missing: the
images are the frame list).
"""

import hashlib
import json
import logging
import os
from typing import Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from a2p_jax.data import camera as cam_lib
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import (
    AnnotationError, MANO_SIZES, MappedIndex, NUM_JOINTS, SIDES, _field, _floats, cache_places,
    cached_index, path_tag)
from a2p_jax.geometry.camera import project

log = logging.getLogger(__name__)

SPLITS = ('train', 'test')
TEST_CAPTURES = (
    'm--20221215--0949--RNS217--pilot--ProjectGoliathScript--Hands--two-hands',
    'm--20221216--0953--NKC880--pilot--ProjectGoliathScript--Hands--two-hands',
    'm--20230317--1130--QZX685--pilot--ProjectGoliath--Hands--two-hands',
)
KEYPOINT_NAMES = (
    'Wrist', 'Thumb_0', 'Thumb_1', 'Thumb_2', 'Thumb_3', 'Thumb_4', 'Index_1', 'Index_2',
    'Index_3', 'Index_4', 'Middle_1', 'Middle_2', 'Middle_3', 'Middle_4', 'Ring_1', 'Ring_2',
    'Ring_3', 'Ring_4', 'Pinky_0', 'Pinky_1', 'Pinky_2', 'Pinky_3', 'Pinky_4', 'Forearm_Stub')
# Per hand, InterHand order (thumb4..1, index4..1, middle, ring, pinky, wrist)
# -> index into a keypoint file; Thumb_0, Pinky_0 and Forearm_Stub are dropped.
KEYPOINT_TO_INTERHAND = (5, 4, 3, 2, 9, 8, 7, 6, 13, 12, 11, 10, 17, 16, 15, 14,
                         22, 21, 20, 19, 0)
BBOX_EXTEND = 1.2            # InterWild's get_bbox(extend_ratio=1.2) for hand boxes

CAMERA_FILE = os.path.join('Mugsy_cameras', 'cam_params.json')
IMAGE_DIR = os.path.join('Mugsy_cameras', 'envmap_per_frame', 'images')
MANO_DIR = os.path.join('mano_fits', 'params')
_KEYPOINT_DIRS = {s: os.path.join('orig_fits', s, 'Keypoints') for s in SIDES}
_MANO_DIM = sum(n for _, n in MANO_SIZES)
_INDEX_VERSION = 1


def keypoint_file(capture: str, side: str, frame: int) -> str:
  return os.path.join(capture, _KEYPOINT_DIRS[side], f'keypoint-{frame:06d}.json')


def mano_file(capture: str, side: str, frame: int) -> str:
  return os.path.join(capture, MANO_DIR, f'{frame}_{side}.json')


def image_file(capture: str, camera: str, frame: int) -> str:
  return os.path.join(capture, IMAGE_DIR, camera, f'{frame:06d}.png')


# ----------------------------------------------------------------------------
# Listing the captures and images.

def split_captures(root: str, split: str) -> list:
  """Sorted capture folders (m--*) of `split` under root."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if not os.path.isdir(root):
    raise FileNotFoundError(f'Re:InterHand root {root!r} is not a directory')
  names = sorted(d for d in os.listdir(root)
                 if d.startswith('m--') and os.path.isdir(os.path.join(root, d)))
  chosen = [c for c in names if (c in TEST_CAPTURES) == (split == 'test')]
  if not chosen:
    raise FileNotFoundError(f'Re:InterHand {split}: no capture folder (m--*) of the split '
                            f'under {root}')
  if split == 'test' and len(chosen) < len(TEST_CAPTURES):
    log.warning('Re:InterHand test: capture(s) missing under %s: %s', root,
                ', '.join(sorted(set(TEST_CAPTURES) - set(chosen))))
  return chosen


def _frames_in(folder: str) -> np.ndarray:
  """Sorted frame numbers of the <frame:06d>.png files of one camera folder."""
  frames = []
  for name in os.listdir(folder):
    stem = name[:-4]
    if name.endswith('.png') and stem.isdigit() and f'{int(stem):06d}' == stem:
      frames.append(int(stem))
  return np.array(sorted(frames), np.int64)


def list_images(root: str, capture: str) -> dict:
  """{camera: sorted frames (n,)} of a capture's image folders (one listdir each)."""
  image_dir = os.path.join(root, capture, IMAGE_DIR)
  if not os.path.isdir(image_dir):
    return {}
  return {cam: _frames_in(os.path.join(image_dir, cam)) for cam in sorted(os.listdir(image_dir))
          if os.path.isdir(os.path.join(image_dir, cam))}


# ----------------------------------------------------------------------------
# The annotation files.

def _load_json(root, rel):
  try:
    with open(os.path.join(root, rel), 'r', encoding='utf-8') as fh:
      return json.load(fh)
  except FileNotFoundError:
    raise AnnotationError(f'{rel}: file not found under {root}') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise AnnotationError(f'{rel}: invalid JSON: {e}') from None


def read_cameras(root: str, capture: str) -> dict:
  """cam_params.json -> {camera: {'R' (3, 3), 't' (3,) mm, 'focal', 'princpt' (2,)}}."""
  rel = os.path.join(capture, CAMERA_FILE)
  data = _load_json(root, rel)
  if not isinstance(data, dict) or not data:
    raise AnnotationError(f'{rel}: expected an object keyed by camera name')
  out = {}
  for cam, entry in data.items():
    where = f'[{cam!r}]'
    cam_out = {key: _floats(_field(entry, key, rel, where), shape, rel, f'{where}[{key!r}]')
               for key, shape in (('R', (3, 3)), ('t', (3,)), ('focal', (2,)),
                                  ('princpt', (2,)))}
    err = cam_lib.rotation_error(cam_out['R'])
    if err > cam_lib.ROTATION_TOL:
      raise AnnotationError(f"{rel}: {where}['R'] is not a rotation (max |R R^T - I| = "
                            f'{err:.3g}, det = {np.linalg.det(cam_out["R"]):.3g})')
    if np.any(cam_out['focal'] <= 0):
      raise AnnotationError(f"{rel}: {where}['focal'] must be positive")
    if 'D' in entry and np.any(np.asarray(entry['D'], np.float64) != 0):
      raise AnnotationError(f"{rel}: {where}['D']: lens distortion is not supported (Mugsy "
                            'images are pinhole; D belongs to the Ego cameras)')
    out[cam] = cam_out
  return out


def read_keypoints(root: str, rel: str) -> np.ndarray:
  """keypoint-*.json (24 world points, mm) -> (21, 3) in InterHand order."""
  points = _floats(_load_json(root, rel), (len(KEYPOINT_NAMES), 3), rel, 'keypoints',
                   finite=False)
  kept = points[list(KEYPOINT_TO_INTERHAND)]
  bad = np.nonzero(~np.isfinite(kept).all(-1))[0]
  if len(bad):
    name = KEYPOINT_NAMES[KEYPOINT_TO_INTERHAND[bad[0]]]
    raise AnnotationError(f'{rel}: keypoint {name!r} contains NaN or Inf')
  return kept


def read_mano(root: str, rel: str) -> np.ndarray:
  """<frame>_<side>.json -> (61,) [pose 48 | shape 10 | trans 3 (m)], world space."""
  fit = _load_json(root, rel)
  return np.concatenate([_floats(_field(fit, key, rel, 'top level'), (n,), rel, f'[{key!r}]')
                         for key, n in MANO_SIZES])


def _image_size(root, rel):
  """(height, width) from the image header."""
  try:
    with Image.open(os.path.join(root, rel)) as im:
      width, height = im.size
  except OSError as e:
    raise AnnotationError(f'{rel}: cannot read the image size ({e})') from None
  return height, width


def annot_id(capture: str, camera: str, frame: int) -> int:
  """A stable 63-bit id of one image."""
  digest = hashlib.sha1(f'{capture}/{camera}/{frame}'.encode()).digest()
  return int.from_bytes(digest[:8], 'big') >> 1


# ----------------------------------------------------------------------------
# Building the index.

def _camera_arrays(root, captures, listing):
  """Camera rows of every capture (sorted by capture, camera name)."""
  names, rows = [], {k: [] for k in ('capture', 'rot', 't', 'campos', 'focal', 'princpt',
                                     'size')}
  for c, cap in enumerate(captures):
    for cam, p in sorted(read_cameras(root, cap).items()):
      frames = listing[cap].get(cam, ())
      size = _image_size(root, image_file(cap, cam, int(frames[0]))) if len(frames) else (0, 0)
      names.append([cap, cam])
      rows['capture'].append(c)
      rows['rot'].append(p['R'])
      rows['t'].append(p['t'])
      # X_cam = R X + t = R (X - campos) with campos = -R^-1 t (exact for any R).
      rows['campos'].append(-np.linalg.solve(p['R'], p['t']))
      rows['focal'].append(p['focal'])
      rows['princpt'].append(p['princpt'])
      rows['size'].append(size)
  arrays = {f'cam_{k}': np.asarray(v, np.int64 if k in ('capture', 'size') else np.float64)
            for k, v in rows.items()}
  return arrays, names


def _examples(cam_names, listing):
  """(camera row, frame) of every image of a camera with parameters, and the frames."""
  ex_cam, ex_frame = [], []
  for row, (cap, cam) in enumerate(cam_names):
    frames = listing[cap].get(cam, np.zeros(0, np.int64))
    ex_cam.append(np.full(len(frames), row, np.int64))
    ex_frame.append(frames)
  return np.concatenate(ex_cam), np.concatenate(ex_frame)


def build_index(root: str, split: str, listing: dict, *, progress: bool = True) -> dict:
  """Reads cam_params.json of each capture and the per-frame files of every
  frame that has an image into flat arrays. listing: {capture: list_images()}."""
  captures = sorted(listing)
  cams, cam_names = _camera_arrays(root, captures, listing)
  ex_cam, ex_frame = _examples(cam_names, listing)
  # Frames: unique (capture, frame) over the capture's cameras.
  keys = np.stack([cams['cam_capture'][ex_cam], ex_frame], -1).reshape(-1, 2)
  frame_keys, ex_frame_row = np.unique(keys, axis=0, return_inverse=True)
  n = len(frame_keys)
  world = np.zeros((n, NUM_JOINTS, 3))
  mano = np.zeros((n, 2, _MANO_DIM))
  bar = tqdm(frame_keys, desc=f'index Re:InterHand {split}', unit='frame',
             disable=not progress)
  for row, (c, frame) in enumerate(bar):
    cap, frame = captures[c], int(frame)
    for k, side in enumerate(SIDES):
      world[row, 21 * k:21 * k + 21] = read_keypoints(root, keypoint_file(cap, side, frame))
      mano[row, k] = read_mano(root, mano_file(cap, side, frame))
  ids = np.array([annot_id(*cam_names[r], int(f)) for r, f in zip(ex_cam, ex_frame)], np.int64)
  if len(np.unique(ids)) != len(ids):
    raise AnnotationError(f'Re:InterHand {split}: two images share an annotation id')
  arrays = dict(cams, frame_capture=frame_keys[:, 0], frame_idx=frame_keys[:, 1],
                frame_world=world, frame_mano=mano, ex_cam=ex_cam, ex_frame=ex_frame,
                ex_frame_row=ex_frame_row.reshape(-1), ex_annot_id=ids)
  return {'arrays': arrays, 'names': {'captures': captures, 'cameras': cam_names}}


# ----------------------------------------------------------------------------
# The on-disk cache of the index.

def _source_stamp(root, captures):
  """Sizes and mtimes of cam_params.json and of the per-frame folders."""
  stamp = {'version': _INDEX_VERSION, 'captures': {}}
  for cap in captures:
    entry = {}
    for rel in (CAMERA_FILE, MANO_DIR, *_KEYPOINT_DIRS.values()):
      try:
        st = os.stat(os.path.join(root, cap, rel))
        entry[rel] = [st.st_size, st.st_mtime_ns]
      except OSError:
        entry[rel] = None
    stamp['captures'][cap] = entry
  return stamp


def _cache_dirs(root, split, cache_dir):
  """Where the index cache may live, in order of preference."""
  return cache_places(os.path.join(root, '.a2p_jax_index', f'reinterhand_{split}'),
                      path_tag(f'reinterhand_{split}', root), cache_dir)


def _image_keys(arrays, names, listing):
  """(index keys (N,), listed keys (M,)) as camera row * 2^32 + frame."""
  rows = {tuple(c): r for r, c in enumerate(names['cameras'])}
  listed = [r * (1 << 32) + listing[cap][cam] for (cap, cam), r in rows.items()
            if cap in listing and cam in listing[cap]]
  index = np.asarray(arrays['ex_cam']) * (1 << 32) + np.asarray(arrays['ex_frame'])
  return index, (np.concatenate(listed) if listed else np.zeros(0, np.int64))


def load_index(root, split, listing, *, cache=True, cache_dir=None, progress=True):
  """The index from its cache when up to date, else built (and cached)."""
  build = lambda: build_index(root, split, listing, progress=progress)
  if not cache:
    return dict(build(), path=None, stamp=None)

  def covers_the_images(found):
    indexed, listed = _image_keys(found['arrays'], found['names'], listing)
    if np.isin(listed, indexed).all():
      return True
    log.info('Re:InterHand %s: images were added since the index at %s was built; '
             'rebuilding', split, found['path'])
    return False

  return cached_index(_cache_dirs(root, split, cache_dir), _source_stamp(root, sorted(listing)),
                      build, what='Re:InterHand', accept=covers_the_images)


# ----------------------------------------------------------------------------
# Per-example geometry.

def extended_box(uv, valid, ratio=BBOX_EXTEND):
  """InterWild's get_bbox: [x, y, w, h] of the valid points, scaled about its
  centre by `ratio`; None without valid points."""
  box = cam_lib.bbox_of_points(uv, valid)
  if box is None:
    return None
  centre, size = box[:2] + box[2:] / 2.0, box[2:] * ratio
  return np.concatenate([centre - size / 2.0, size])


def image_joints(joints_cam, joint_valid, focal, princpt, image_size):
  """(joints_img (J, 2) px, joints_img_valid (J,)): projected, in the image."""
  z = joints_cam[:, 2]
  front = z > 0
  safe = np.where(front[:, None], joints_cam, [0.0, 0.0, 1.0])
  uv = np.where(front[:, None], project(safe, focal, princpt), 0.0)
  height, width = image_size
  inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
  return uv, (joint_valid * inside).astype(np.float32)


# ----------------------------------------------------------------------------
# The data set.

class ReInterHand(MappedIndex):
  """Re:InterHand (Mugsy cameras, envmap_per_frame) as camera-space examples.

  root: the folder of the capture folders (InterWild's data/ReInterHand/data).
  split: 'train' | 'test' (InterWild's capture split). mano_dir: MANO_RIGHT.pkl
  / MANO_LEFT.pkl (None: the procedural hand, NOT MANO; real fits need MANO
  for the root joint). strict: raise when an indexed image is gone instead of
  a counted, logged skip. cache / cache_dir: keep the index as .npy files
  (default root/.a2p_jax_index, else ~/.cache/a2p_jax).
  """

  def __init__(self, root: str, split: str, *, mano_dir: Optional[str] = None,
               strict: bool = False, cache: bool = True, cache_dir: Optional[str] = None,
               progress: bool = True):
    captures = split_captures(root, split)
    self.root, self.split, self.mano_dir = root, split, mano_dir
    listing = {cap: list_images(root, cap) for cap in captures}
    index = load_index(root, split, listing, cache=cache, cache_dir=cache_dir,
                       progress=progress)
    self._arrays, self._names, self._index_path = index['arrays'], index['names'], index['path']
    self._stamp = index['stamp']
    indexed, listed = _image_keys(self._arrays, self._names, listing)
    present = np.isin(indexed, listed)
    cam_set = {tuple(c) for c in self._names['cameras']}
    summary = {'captures': len(captures), 'cameras': len(cam_set),
               'frames': len(self._arrays['frame_idx']), 'images': len(indexed),
               'image_folders_without_camera': sum(
                   (cap, cam) not in cam_set for cap in listing for cam in listing[cap]),
               'missing_images': int((~present).sum())}
    if not present.all():
      first = int(np.nonzero(~present)[0][0])
      path = self._image_path(first)
      msg = (f'Re:InterHand {split}: {summary["missing_images"]} indexed images are no longer '
             f'on disk, e.g. {path}')
      if strict:
        raise FileNotFoundError(msg)
      log.warning('%s; skipped', msg)
    self._rows = np.nonzero(present)[0]
    summary['examples'] = len(self._rows)
    self.summary = summary
    log.info('Re:InterHand %s: %s', split, summary)
    self._models = None

  # Worker processes reopen the memory-mapped cache instead of copying it
  # (the same state handling as the InterHand2.6M reader).

  def _hand_models(self):
    if self._models is None:
      if self.mano_dir is None:
        log.warning('Re:InterHand: no mano_dir, so camera-space MANO fits use the '
                    'procedural hand (NOT MANO); pass mano_dir for real Re:InterHand')
      self._models = load_hand_models(self.mano_dir)
    return self._models

  def _image_path(self, row):
    cap, cam = self._names['cameras'][int(self._arrays['ex_cam'][row])]
    return os.path.join(self.root, image_file(cap, cam, int(self._arrays['ex_frame'][row])))

  def __len__(self) -> int:
    return len(self._rows)

  @property
  def annot_ids(self) -> np.ndarray:
    """int64 (N,) annotation ids in example order, from the index alone."""
    return np.asarray(self._arrays['ex_annot_id'], np.int64)[self._rows]

  def _camera_fits(self, frame, cam):
    """Both hands' world fits moved into the camera of row `cam`."""
    a, models = self._arrays, self._hand_models()
    campos, rot = np.array(a['cam_campos'][cam]), np.array(a['cam_rot'][cam])
    mano = {}
    for k, side in enumerate(SIDES):
      p = np.array(a['frame_mano'][frame, k])
      pose, shape, trans = p[:48], p[48:58], p[58:]
      j0 = cam_lib.root_joint(models[k], shape)
      pose, trans = cam_lib.mano_fit_to_camera(pose, trans, j0, campos, rot)
      mano[side] = {'pose': pose, 'shape': shape, 'trans': trans}
    return mano

  def __getitem__(self, i: int) -> dict:
    n = len(self._rows)
    if not -n <= i < n:
      raise IndexError(f'index {i} out of range for {n} examples')
    a = self._arrays
    row = int(self._rows[i])
    cam, frame = int(a['ex_cam'][row]), int(a['ex_frame_row'][row])
    capture, camera = self._names['cameras'][cam]
    focal, princpt = np.array(a['cam_focal'][cam]), np.array(a['cam_princpt'][cam])
    image_size = tuple(int(s) for s in a['cam_size'][cam])
    joints_cam = cam_lib.world_to_camera(a['frame_world'][frame], a['cam_campos'][cam],
                                         a['cam_rot'][cam])
    joint_valid = np.ones(NUM_JOINTS, np.float32)
    joints_img, img_valid = image_joints(joints_cam, joint_valid, focal, princpt, image_size)
    hand_bbox = {side: extended_box(joints_img[21 * k:21 * k + 21], img_valid[21 * k:21 * k + 21])
                 for k, side in enumerate(SIDES)}
    seen = [side for side in SIDES if hand_bbox[side] is not None]
    bbox = extended_box(joints_img, img_valid)
    if bbox is None:
      bbox = np.array([0.0, 0.0, image_size[1], image_size[0]])
    return {
        'image_path': os.path.join(self.root, image_file(capture, camera,
                                                         int(a['ex_frame'][row]))),
        'image_size': image_size,
        'hand_type': seen[0] if len(seen) == 1 else 'interacting',
        'hand_type_valid': int(bool(seen)),
        'joints_cam': joints_cam,
        'joint_valid': joint_valid,
        'joints_img': joints_img,
        'joints_img_valid': img_valid,
        'bbox': bbox,
        'hand_bbox': hand_bbox,
        'camera': {'focal': focal, 'princpt': princpt},
        'mano': self._camera_fits(frame, cam),
        'annot_id': int(a['ex_annot_id'][row]),
        'capture_id': capture,
        'camera_id': camera,
        'frame_idx': int(a['ex_frame'][row]),
    }
