"""Small Re:InterHand data sets in the official layout, written by the tests
from world-space MANO fits and Mugsy cameras chosen here (procedural hand,
float64), with the release's quirks: 24 keypoints per hand file (Thumb_0,
Pinky_0 and a forearm stub besides the 21 joints), keypoint and image names
zero-padded to 6 digits but MANO file names not, camera translations in mm
and MANO translations in m, 5 fps image folders next to a 30 fps
frame_list.txt whose extra frames have no files, a camera with parameters
but no images, an image folder without camera parameters, a camera missing
one frame's render, images of odd sizes.

World keypoints are mano_jax's joints of the world fits (mm), so fits and
keypoints agree exactly.
"""

import json
import os
import shutil
import tempfile

import jax
import numpy as np
from PIL import Image

import mano_jax
from a2p_jax.data import reinterhand
from tests.mano_like import mano_like

# Two test captures and one train capture (real capture ids).
TEST = (reinterhand.TEST_CAPTURES[0], reinterhand.TEST_CAPTURES[2])
TRAIN = ('m--20221007--1215--HIR112--pilot--ProjectGoliathScript--Hands--two-hands',)
# 5 fps frames (every 6th 30 fps frame); 9012 checks the zero padding.
FRAMES = (9012, 9018, 161415)
# Camera name -> what it sees; image size (height, width).
CAMERAS = {'400262': 'both', '400263': 'right', '400264': 'none', '400265': 'no images'}
SIZES = {'400262': (1024, 667), '400263': (512, 335), '400264': (600, 400)}
NO_RENDER = ('400263', 161415)          # a camera missing one frame's image
STRAY_FOLDER = '400299'                 # an image folder without camera parameters
HANDS_CENTRE_MM = np.array([0.0, 0.0, 1000.0])




def look_at(campos, target):
  """World->camera R (rows: camera x, y, z axes) of a camera at campos looking at target."""
  z = np.asarray(target, np.float64) - campos
  z /= np.linalg.norm(z)
  x = np.cross(z, [0.0, 0.0, 1.0])
  x /= np.linalg.norm(x)
  return np.stack([x, np.cross(z, x), z])


def _unit(v):
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v)


def cameras_for(right_wrist_mm, rng):
  """cam_params.json entries {cam: {R, t (mm), focal, princpt}} of one capture."""
  views = {
      '400262': (HANDS_CENTRE_MM + 1500.0 * _unit([0.3, -0.8, 0.5]), HANDS_CENTRE_MM),
      '400263': (right_wrist_mm + 500.0 * _unit([0.0, -0.6, 0.8]), right_wrist_mm),
      # 45 degrees off the hands: both hands far outside the image.
      '400264': (HANDS_CENTRE_MM + [0.0, -1000.0, 0.0],
                 HANDS_CENTRE_MM + [1000.0, 0.0, 0.0]),
      '400265': (HANDS_CENTRE_MM + 1000.0 * _unit([-0.5, 0.5, 0.5]), HANDS_CENTRE_MM),
  }
  focal = {'400262': 1000.0, '400263': 900.0, '400264': 1000.0, '400265': 1100.0}
  out = {}
  for cam, (campos, target) in views.items():
    rot = look_at(campos, target)
    h, w = SIZES.get(cam, (500, 500))
    out[cam] = {'R': rot, 't': -rot @ campos,
                'focal': focal[cam] + rng.uniform(-20, 20, 2),
                'princpt': np.array([w / 2.0, h / 2.0]) + rng.normal(0, 3, 2)}
  return out


def world_fits(models, rng, n):
  """n frames of both hands: fits {side: (pose (n, 48), shape, trans)}, joints
  (n, 42, 3) mm InterHand order, vertices {side: (n, V, 3) m}."""
  fits, joints, verts = {}, np.zeros((n, 42, 3)), {}
  for k, side in enumerate(reinterhand.SIDES):
    pose = rng.normal(0, 0.3, (n, 48))
    pose[:, :3] = rng.normal(0, 1.5, (n, 3))
    shape = rng.normal(0, 1, (n, 10))
    trans = np.array([0.2 if side == 'right' else -0.2, 0.0, 1.0]) + rng.normal(0, 0.01,
                                                                                   (n, 3))
    with jax.enable_x64(True):
      out = mano_jax.forward(models[k], pose, shape, trans, joint_order='interhand')
    joints[:, 21 * k:21 * k + 21] = np.asarray(out.joints) * 1000.0
    verts[side] = np.asarray(out.vertices)
    fits[side] = (pose, shape, trans)
  return fits, joints, verts


# A keypoint file's rows (InterWild's ReInterHand joint set, one hand).
FILE_JOINTS = ('Wrist', 'Thumb_0', 'Thumb_1', 'Thumb_2', 'Thumb_3', 'Thumb_4', 'Index_1',
               'Index_2', 'Index_3', 'Index_4', 'Middle_1', 'Middle_2', 'Middle_3', 'Middle_4',
               'Ring_1', 'Ring_2', 'Ring_3', 'Ring_4', 'Pinky_0', 'Pinky_1', 'Pinky_2',
               'Pinky_3', 'Pinky_4', 'Forearm_Stub')
# InterHand order (thumb4..1, index4..1, middle, ring, pinky, wrist) by name.
INTERHAND_JOINTS = tuple(f'{f}_{k}' for f in ('Thumb', 'Index', 'Middle', 'Ring', 'Pinky')
                         for k in (4, 3, 2, 1)) + ('Wrist',)


def keypoint_file_rows(joints_ih, rng):
  """(21, 3) InterHand-order joints -> the file's 24 rows, placed by name, with
  Thumb_0, Pinky_0 and the forearm stub away from every joint."""
  rows = {name: joints_ih[i] for i, name in enumerate(INTERHAND_JOINTS)}
  wrist = rows['Wrist']
  rows['Thumb_0'] = wrist + 0.5 * (rows['Thumb_1'] - wrist) + rng.normal(0, 5, 3)
  rows['Pinky_0'] = wrist + 0.5 * (rows['Pinky_1'] - wrist) + rng.normal(0, 5, 3)
  rows['Forearm_Stub'] = wrist - 0.8 * (rows['Index_1'] - wrist)
  return np.stack([rows[name] for name in FILE_JOINTS])


def _dump(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as fh:
    json.dump(obj, fh)


def _write_png(path, size):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new('RGB', (size[1], size[0]), (90, 80, 70)).save(path)


def write_capture(root, capture, hands, rng, truth):
  """One capture folder; hands: (fits, joints, verts) of its frames (`world_fits`)."""
  fits, joints, verts = hands
  cams = cameras_for(joints[0, 20], rng)
  base = os.path.join(root, capture)
  _dump(os.path.join(base, reinterhand.CAMERA_FILE),
        {cam: {k: np.asarray(v).tolist() for k, v in p.items()} for cam, p in cams.items()})
  for cam, p in cams.items():
    truth['cameras'][(capture, cam)] = dict(p, size=SIZES.get(cam))
  for f, frame in enumerate(FRAMES):
    truth['joints'][(capture, frame)] = joints[f]
    truth['fits'][(capture, frame)] = {}
    for k, side in enumerate(reinterhand.SIDES):
      rows = keypoint_file_rows(joints[f, 21 * k:21 * k + 21], rng)
      _dump(os.path.join(root, reinterhand.keypoint_file(capture, side, frame)), rows.tolist())
      pose, shape, trans = (x[f] for x in fits[side])
      _dump(os.path.join(root, reinterhand.mano_file(capture, side, frame)),
            {'pose': pose.tolist(), 'shape': shape.tolist(), 'trans': trans.tolist()})
      truth['fits'][(capture, frame)][side] = dict(pose=pose, shape=shape, trans=trans,
                                                   verts=verts[side][f])
      truth['extra'][(capture, frame, side)] = rows[[FILE_JOINTS.index(n) for n in (
          'Thumb_0', 'Pinky_0', 'Forearm_Stub')]]
    for cam in SIZES:
      if (cam, frame) == NO_RENDER:
        continue
      _write_png(os.path.join(root, reinterhand.image_file(capture, cam, frame)), SIZES[cam])
      truth['images'].append((capture, cam, frame))
  _write_png(os.path.join(root, reinterhand.image_file(capture, STRAY_FOLDER, FRAMES[0])),
             (64, 48))
  # Masks live beside the images; the 30 fps frame list names frames with no files.
  _write_png(os.path.join(base, 'Mugsy_cameras', 'envmap_per_frame', 'masks', '400262',
                          f'{FRAMES[0]:06d}.png'), (8, 8))
  with open(os.path.join(base, 'frame_list.txt'), 'w') as fh:
    for frame in FRAMES:
      for d in range(6):
        fh.write(f'0001_two_hands {frame + d}\n')


def write(root, models, *, seed=0, captures=TEST + TRAIN):
  """Writes the capture folders under root with `mano_like(models)`
  (read them back with those); returns the truth:
  {'cameras': {(capture, cam): {R, t, focal, princpt, size}},
   'fits': {(capture, frame): {side: {pose, shape, trans, verts (m)}}},
   'joints': {(capture, frame): (42, 3) world mm}, 'images': [(capture, cam, frame)],
   'extra': {(capture, frame, side): (3, 3) the dropped rows}}."""
  rng = np.random.default_rng(seed)
  models = mano_like(models)
  truth = {'cameras': {}, 'fits': {}, 'joints': {}, 'images': [], 'extra': {}}
  n = len(FRAMES)
  fits, joints, verts = world_fits(models, rng, n * len(captures))   # one batch: one compile
  for c, capture in enumerate(captures):
    part = slice(c * n, c * n + n)
    write_capture(root, capture, ({s: tuple(x[part] for x in f) for s, f in fits.items()},
                                  joints[part], {s: v[part] for s, v in verts.items()}),
                  rng, truth)
  # What the download folder also holds: scripts and a non-capture folder.
  open(os.path.join(root, 'download_mano_fits.py'), 'w').close()
  os.makedirs(os.path.join(root, 'logs'), exist_ok=True)
  return truth


def rewrite(root, rel, edit):
  """Loads one JSON file (path relative to root), applies edit(obj) (in
  place) and replaces the file (a new file: copies share unchanged ones)."""
  path = os.path.join(root, rel)
  with open(path) as fh:
    obj = json.load(fh)
  edit(obj)
  replace_text(path, json.dumps(obj))
  return path


def replace_text(path, text):
  """Writes `text` as a new file at path (never into a hard-linked original)."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
  with os.fdopen(fd, 'w') as fh:
    fh.write(text)
  os.replace(tmp, path)


def private_copy(base, tmp_path):
  """(root, truth) of a copy of a written set `base` = (root, truth) under
  tmp_path, free to edit with `rewrite`/`replace_text`/removal: its files
  are hard links to the original's, so never write into one in place."""
  root = str(tmp_path / 'reih')
  shutil.copytree(base[0], root, copy_function=os.link)
  return root, base[1]
