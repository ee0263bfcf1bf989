"""Small HO-3D data sets in the official release layout, written by the tests.

    <root>/{train,evaluation}.txt             'SEQ/frame' lines
    <root>/{train,evaluation}/<SEQ>/rgb/<frame>.jpg|.png
    <root>/{train,evaluation}/<SEQ>/meta/<frame>.pkl

Metas are python-2 style pickles (protocol 2, 8-bit strings as BINSTRING,
numpy arrays through numpy.core.multiarray._reconstruct, array bytes as an
8-bit string), so they load only with encoding='latin1', like the real ones.
Their content follows shreyashampali/ho3d: train frames hold handPose (48,
MANO full pose with the hand mean included, i.e. flat_hand_mean=True),
handBeta, handTrans (m), handJoints3D (21, 3) m in MANO order + tips
thumb..pinky (forward kinematics), camMat and the object keys; evaluation
frames hold the wrist (handJoints3D (3,)), handBoundingBox [x1, y1, x2, y2]
and camMat; frames without annotation have every value None (v3). All in
OpenGL camera axes (the hand at negative z).

The hand is the procedural one (NOT MANO), moved so its rest wrist sits
where MANO's does (`tests.mano_like.mano_like_hand`); joints are computed by mano_jax in
float64 from the stored (float32) parameters, so parameters and joints agree
exactly. v3 sequences use .jpg, v2 sequences .png (one set holds both here).
"""

import os
import struct

import jax
import numpy as np
from PIL import Image

import mano_jax

# MANO_RIGHT.pkl's rest wrist is about here (m); the procedural hand's is at
# the origin, where rotating about the wrist and about the origin agree.
CAM = np.array([[617.343, 0.0, 312.42], [0.0, 617.343, 241.42], [0.0, 0.0, 1.0]])
IMAGE_HW = (6, 8)


# ----------------------------------------------------------------------------
# A python-2 pickler (protocol 2) for dicts of None, int, float, str, ndarray.

def _str2(b: bytes) -> bytes:
  """A python-2 str: SHORT_BINSTRING / BINSTRING."""
  if len(b) < 256:
    return b'U' + bytes([len(b)]) + b
  return b'T' + struct.pack('<i', len(b)) + b


def _int2(v: int) -> bytes:
  return b'K' + bytes([v]) if 0 <= v < 256 else b'J' + struct.pack('<i', v)


def _array2(a: np.ndarray) -> bytes:
  a = np.ascontiguousarray(a)
  order = {'=': '<', '|': '|'}.get(a.dtype.byteorder, a.dtype.byteorder)
  dtype = (b'cnumpy\ndtype\n' + _str2(a.dtype.str[1:].encode()) + b'K\x00K\x01\x87R'
           b'(K\x03' + _str2(order.encode()) + b'NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb')
  shape = b'(' + b''.join(_int2(s) for s in a.shape) + b't'
  return (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85' + _str2(b'b')
          + b'\x87R(K\x01' + shape + dtype + b'\x89' + _str2(a.tobytes()) + b'tb')


def _value2(v) -> bytes:
  if v is None:
    return b'N'
  if isinstance(v, (bool, np.bool_)):
    return b'\x88' if v else b'\x89'
  if isinstance(v, (int, np.integer)):
    return _int2(int(v))
  if isinstance(v, (float, np.floating)):
    return b'G' + struct.pack('>d', float(v))
  if isinstance(v, str):
    return _str2(v.encode('latin1'))
  if isinstance(v, np.ndarray):
    return _array2(v)
  raise TypeError(f'py2 pickle writer: unsupported {type(v).__name__}')


def py2_pickle(obj) -> bytes:
  """A dict (or None) as python 2.7's pickle.dumps(obj, 2) writes it."""
  if obj is None:
    return b'\x80\x02N.'
  items = b''.join(_str2(k.encode('latin1')) + _value2(v) for k, v in obj.items())
  return b'\x80\x02}(' + items + b'u.'




# ----------------------------------------------------------------------------
# Frames.

def _object_keys(rng):
  corners = rng.normal(0, 0.05, (8, 3)).astype(np.float32)
  return {'objRot': rng.normal(0, 1, (3, 1)).astype(np.float32),
          'objTrans': np.array([0.0, 0.0, -0.5], np.float32),
          'objName': '006_mustard_bottle', 'objLabel': 5,
          'objCorners3DRest': corners, 'objCorners3D': corners - [0.0, 0.0, 0.5]}


def train_hand(model, rng):
  """(truth, meta hand keys): a right hand ~0.5 m in front of an OpenGL camera."""
  pose = rng.normal(0, 0.3, 48)
  pose[:3] = rng.normal(0, 0.4, 3)
  pose[3:] += np.asarray(model.hands_mean)          # full pose (flat_hand_mean=True)
  beta = rng.normal(0, 1, 10)
  trans = np.array([0.02, -0.01, -0.5]) + rng.normal(0, 0.02, 3)
  # The stored values are float32; the truth is what the file holds.
  pose, beta, trans = (x.astype(np.float32).astype(np.float64) for x in (pose, beta, trans))
  with jax.enable_x64(True):
    out = mano_jax.forward(model, pose, beta, trans, flat_hand_mean=True)
  # 'mano' order, m, as stored (float32).
  joints = np.asarray(out.joints, np.float64).astype(np.float32).astype(np.float64)
  truth = {'pose': pose, 'beta': beta, 'trans': trans, 'joints': joints,
           'verts': np.asarray(out.vertices, np.float64)}
  meta = {'handPose': pose.astype(np.float32), 'handBeta': beta.astype(np.float32),
          'handTrans': trans.astype(np.float32), 'handJoints3D': joints.astype(np.float32)}
  return truth, meta


def _cam(rng):
  cam = CAM.copy()
  # fx != fy here (HO-3D's are equal) so that swapping them is caught.
  cam[[0, 1], [0, 1]] = 617.343 + rng.normal(0, 5, 2)
  cam[:2, 2] += rng.normal(0, 2, 2)
  return cam


def _write_image(path, hw=IMAGE_HW):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full(hw + (3,), 100, np.uint8)).save(path)


def write_meta(root, split, seq, frame, meta):
  path = os.path.join(root, split, seq, 'meta', frame + '.pkl')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as fh:
    fh.write(py2_pickle(meta))
  return path


# (seq, frame, ext, kind): kind 'hand' annotated; 'none' every value None
# (v3's unannotated frames); 'nometa' the meta pickle is None; 'nokey' no
# handPose key at all.
TRAIN = (('ABF10', '0000', '.jpg', 'hand'), ('ABF10', '0001', '.jpg', 'none'),
         ('ABF10', '0002', '.jpg', 'hand'), ('MC1', '0000', '.png', 'hand'),
         ('MC1', '0001', '.png', 'nometa'), ('MC1', '0002', '.png', 'hand'),
         ('MC1', '0003', '.png', 'nokey'))
EVALUATION = (('SM1', '0000', '.jpg', 'hand'), ('SM1', '0001', '.jpg', 'none'),
              ('MPM10', '0012', '.png', 'hand'))


def write(root, model, split='train', *, frames=None, seed=0):
  """Writes one split; returns {'frames': [dict per listed line, in order]}."""
  frames = frames or (TRAIN if split == 'train' else EVALUATION)
  rng = np.random.default_rng(seed + (split == 'evaluation'))
  truth = []
  for seq, frame, ext, kind in frames:
    t = {'seq': seq, 'frame': frame, 'ext': ext, 'kind': kind,
         'image': os.path.join(root, split, seq, 'rgb', frame + ext)}
    cam = _cam(rng)
    meta = dict(_object_keys(rng), camMat=cam.astype(np.float32))
    if split == 'train':
      hand, keys = train_hand(model, rng)
      meta.update(keys)
      t.update(hand)
    else:
      hand, _ = train_hand(model, rng)
      t['root'] = hand['joints'][0]
      uv = project_gl(hand['joints'], cam)
      box = np.concatenate([uv.min(0) - 10.0, uv.max(0) + 10.0])
      t['hand_bbox'] = box.astype(np.float32).astype(np.float64)
      meta.update(handJoints3D=hand['joints'][0].astype(np.float32),
                  handBoundingBox=box.astype(np.float32))
      t['root'] = t['root'].astype(np.float32).astype(np.float64)
    t['cam'] = cam.astype(np.float32).astype(np.float64)
    if kind == 'none':
      meta = {k: None for k in meta}
    elif kind == 'nometa':
      meta = None
    elif kind == 'nokey':
      meta = {k: v for k, v in meta.items() if not k.startswith('hand')}
    write_meta(root, split, seq, frame, meta)
    _write_image(t['image'])
    truth.append(t)
  with open(os.path.join(root, f'{split}.txt'), 'w') as fh:
    fh.write(''.join(f'{seq}/{frame}\n' for seq, frame, _, _ in frames))
  return {'frames': truth}


def project_gl(points_gl, cam):
  """The toolbox's projection (vis_utils.project_3D_points, OpenGL input)."""
  p = points_gl @ np.diag([1.0, -1.0, -1.0]).T @ cam.T
  return p[:, :2] / p[:, 2:]

