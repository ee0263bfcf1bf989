"""Each protocol scored by the library equals a line-by-line transcription of
the peer's own scoring code, written here in plain numpy from the raw
annotation files (not the reader, not a2p_jax.eval):

- InterWild, data/InterHand26M/InterHand26M.py: `load_data` (test rules),
  `evaluate`, `print_eval_result`; common/utils/mano.py (sh_joint_regressor).
- IntagHand, dataset/interhand.py `cut_inter_img` (frame selection) and
  apps/eval_interhand.py (Jr regressor, middle-MCP alignment, scale).

The hand model is the procedural hand cut to MANO's 778 vertices, so the
protocols' MANO vertex ids (tips 745, 317, 445 vs 444, 556, 673) apply. The
fixture has the cases the rules are about: a joint_3d.json joint marked
invalid (read as 1 mm), a hand whose box leaves the image, a frame without
fits, hand_type_valid 0, a dark image. Predictions are scored both as MANO
parameters and as the same hands' joints + vertices: equal numbers.
"""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

import mano_jax
from a2p_jax.data import interhand26m
from a2p_jax.data.hands import load_hand_models
from a2p_jax.eval import run
from tests import interhand_fixtures as fx
from tests.mano_like import mano_like, mano_sized

SPLIT = 'test'
FRAMES = ((0, 10, 'interacting'), (0, 11, 'interacting'), (0, 12, 'right'), (0, 7, 'left'),
          (1, 31, 'interacting'), (1, 32, 'interacting'), (1, 33, 'interacting'))

# InterWild's names (common/utils/mano.py; InterHand26M.py joints_name).
ORIG = ('Wrist', 'Index_1', 'Index_2', 'Index_3', 'Middle_1', 'Middle_2', 'Middle_3', 'Pinky_1',
        'Pinky_2', 'Pinky_3', 'Ring_1', 'Ring_2', 'Ring_3', 'Thumb_1', 'Thumb_2', 'Thumb_3')
SH = ('Wrist',) + tuple(f'{f}_{i}' for f in ('Thumb', 'Index', 'Middle', 'Ring', 'Pinky')
                        for i in (1, 2, 3, 4))
TH = tuple('R_' + n for n in SH) + tuple('L_' + n for n in SH)
IH_NAMES = tuple(n for side in ('R', 'L') for n in
                 [f'{side}_{f}_{i}' for f in ('Thumb', 'Index', 'Middle', 'Ring', 'Pinky')
                  for i in (4, 3, 2, 1)] + [f'{side}_Wrist'])


def _models():
  return tuple(mano_sized(m) for m in mano_like(load_hand_models(None)))


def _load(root, key):
  with open(os.path.join(root, 'annotations', SPLIT, f'InterHand2.6M_{SPLIT}_{key}.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  models = _models()
  root = str(tmp_path_factory.mktemp('protocols') / 'ih')
  fx.write(root, models, split=SPLIT, seed=5, frames=FRAMES, no_mano=((1, 31),),
           hand_type_valid_0=(11,))
  # The single-hand frames' hands fully valid, so that every joint has values
  # in SH frames (InterWild's mean over per-joint means is NaN otherwise).
  sh = {12: slice(0, 21), 7: slice(21, 42)}

  def full_valid(v, frame):
    if frame in sh:
      for j in range(42)[sh[frame]]:
        v[j] = [1.0]

  def edit_annots(obj):
    frames = {im['id']: im['frame_idx'] for im in obj['images']}
    for ann in obj['annotations']:
      full_valid(ann['joint_valid'], frames[ann['image_id']])
  fx.rewrite(root, SPLIT, 'data', edit_annots)
  fx.rewrite(root, SPLIT, 'joint_3d', lambda obj: [full_valid(obj['0'][str(f)]['joint_valid'], f)
                                                   for f in sh])
  # joint_3d.json marks a valid index joint of frame 10 invalid (data.json keeps it).
  def edit_3d(obj):
    v = obj['0']['10']['joint_valid']
    j = next(j for j in (5, 6, 7, 26, 27) if v[j][0] == 1 and v[20][0] and v[41][0])
    v[j] = [0.0]
  fx.rewrite(root, SPLIT, 'joint_3d', edit_3d)
  # A dark image: frame 32, first camera (IntagHand drops it).
  doc = _load(root, 'data')
  dark = next(im for im in doc['images'] if im['frame_idx'] == 32)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
      os.path.join(root, 'images', SPLIT, dark['file_name']))
  # Frame 33, first camera: the image made so narrow that the hand further
  # right loses its box (InterWild drops its joints and fit).
  im33 = next(im for im in doc['images'] if im['frame_idx'] == 33)
  cams = _load(root, 'camera')[str(im33['capture'])]
  world = np.asarray(_load(root, 'joint_3d')['1']['33']['world_coord'])
  R = np.asarray(cams['camrot'][im33['camera']])
  cam = (world - np.asarray(cams['campos'][im33['camera']])) @ R.T
  u = cam[:, 0] / cam[:, 2] * cams['focal'][im33['camera']][0] + \
      cams['princpt'][im33['camera']][0]
  left_edges = []
  for k in range(2):
    lo, hi = u[21 * k:21 * k + 21].min(), u[21 * k:21 * k + 21].max()
    left_edges.append((lo + hi) / 2 - 0.6 * (hi - lo))
  assert abs(left_edges[0] - left_edges[1]) > 5, 'fixture: hands not apart in u'
  width = int(max(left_edges))  # x1 = box left >= width - 1: that box is empty

  def edit_data(obj):
    for im in obj['images']:
      if im['id'] == im33['id']:
        im['width'] = width
  fx.rewrite(root, SPLIT, 'data', edit_data)
  return root, models


def _examples(root, models, monkeypatch):
  monkeypatch.setattr(interhand26m, 'load_hand_models', lambda mano_dir=None: models)
  monkeypatch.setattr(run, 'load_hand_models', lambda mano_dir=None: models)
  ds = interhand26m.InterHand26M(root, SPLIT, cache=False, progress=False)
  return [ds[i] for i in range(len(ds))]


def _predictions(examples, models, seed=0):
  """Per annotation: MANO parameters in camera space near the ground truth
  (a default hand at the GT wrist where the frame has no fit)."""
  rng = np.random.default_rng(seed)
  preds = {}
  for e in examples:
    entry = {}
    for k, side in enumerate(('right', 'left')):
      fit = e['mano'][side]
      if fit is not None:
        pose = np.asarray(fit['pose']) + rng.normal(0, 0.08, 48)
        shape = np.asarray(fit['shape']) + rng.normal(0, 0.3, 10)
        trans = np.asarray(fit['trans']) + rng.normal(0, 0.006, 3)
      else:
        pose, shape = rng.normal(0, 0.2, 48), np.zeros(10)
        j0 = np.asarray(models[k].J_template)[0]
        trans = np.asarray(e['joints_cam'])[21 * k + 20] / 1000 - j0 + rng.normal(0, 0.01, 3)
      entry[side] = {'pose': pose.tolist(), 'shape': shape.tolist(), 'trans': trans.tolist()}
    preds[str(e['annot_id'])] = entry
  return preds


def _meshes(preds, models):
  """{aid: (verts (2, V, 3), joints (2, 21, 3) kinematic, InterHand order)} m."""
  out = {}
  for aid, entry in preds.items():
    vs, js = [], []
    for k, side in enumerate(('right', 'left')):
      h = entry[side]
      fw = mano_jax.forward(models[k], np.asarray(h['pose'], np.float32),
                            np.asarray(h['shape'], np.float32),
                            np.asarray(h['trans'], np.float32), joint_order='interhand')
      vs.append(np.asarray(fw.vertices, np.float64))
      js.append(np.asarray(fw.joints, np.float64))
    out[int(aid)] = (np.stack(vs), np.stack(js))
  return out


def _write(path, preds):
  with open(path, 'w') as f:
    json.dump({'units': 'm', 'predictions': preds}, f)
  return str(path)


def _joints_file(path, meshes):
  preds = {str(aid): {side: {'joints': j[k].tolist(), 'vertices': v[k].tolist()}
                      for k, side in enumerate(('right', 'left'))}
           for aid, (v, j) in meshes.items()}
  return _write(path, preds)


# ----------------------------------------------------------------------------
# The transcriptions.

def _gt_mesh_cam(models, k, fit, cam, cam_id):
  """NeuralAnnot world fit -> camera-space mesh (m), float64."""
  with jax.enable_x64(True):
    v = np.asarray(mano_jax.forward(models[k], np.asarray(fit['pose'], np.float64),
                                    np.asarray(fit['shape'], np.float64),
                                    np.asarray(fit['trans'], np.float64)).vertices)
  R = np.asarray(cam['camrot'][cam_id], np.float64)
  t = -R @ np.asarray(cam['campos'][cam_id], np.float64)
  return (v * 1000 @ R.T + t) / 1000


def _sh_joint_regressor(models, tips):
  """InterWild's sh_joint_regressor (21, V) in SH order, from the RIGHT model."""
  reg = np.asarray(models[0].J_regressor, np.float64)
  out = np.zeros((21, reg.shape[1]))
  for i, name in enumerate(SH):
    if name in ORIG:
      out[i] = reg[ORIG.index(name)]
  for name, v in zip(('Thumb_4', 'Index_4', 'Middle_4', 'Ring_4', 'Pinky_4'), tips):
    out[SH.index(name)] = 0
    out[SH.index(name), v] = 1
  return out


def interwild_reference(root, models, meshes):
  data, cams = _load(root, 'data'), _load(root, 'camera')
  j3d, fits = _load(root, 'joint_3d'), _load(root, 'MANO_NeuralAnnot')
  imgs = {im['id']: im for im in data['images']}
  jt = {'right': np.arange(0, 21), 'left': np.arange(21, 42)}
  root_idx = {'right': IH_NAMES.index('R_Wrist'), 'left': IH_NAMES.index('L_Wrist')}
  sh_reg = _sh_joint_regressor(models, (745, 317, 445, 556, 673))
  V = sh_reg.shape[1]

  def get_bbox(joint_img, joint_valid, extend_ratio=1.2):
    x_img, y_img = joint_img[:, 0][joint_valid == 1], joint_img[:, 1][joint_valid == 1]
    xmin, ymin, xmax, ymax = min(x_img), min(y_img), max(x_img), max(y_img)
    xc, w = (xmin + xmax) / 2., xmax - xmin
    xmin, xmax = xc - 0.5 * w * extend_ratio, xc + 0.5 * w * extend_ratio
    yc, h = (ymin + ymax) / 2., ymax - ymin
    ymin, ymax = yc - 0.5 * h * extend_ratio, yc + 0.5 * h * extend_ratio
    return np.array([xmin, ymin, xmax - xmin, ymax - ymin])

  def sanitize_bbox(bbox, img_width, img_height):
    x, y, w, h = bbox
    x1, y1 = np.max((0, x)), np.max((0, y))
    x2 = np.min((img_width - 1, x1 + np.max((0, w - 1))))
    y2 = np.min((img_height - 1, y1 + np.max((0, h - 1))))
    if w * h > 0 and x2 > x1 and y2 > y1:
      return np.array([x1, y1, x2 - x1, y2 - y1])
    return None

  # load_data
  datalist = []
  for ann in data['annotations']:
    img = imgs[ann['image_id']]
    cap, cam_id, frame = str(img['capture']), str(img['camera']), str(img['frame_idx'])
    R = np.array(cams[cap]['camrot'][cam_id]).reshape(3, 3)
    t = -R @ np.array(cams[cap]['campos'][cam_id]).reshape(3)
    focal, princpt = np.array(cams[cap]['focal'][cam_id]), np.array(cams[cap]['princpt'][cam_id])
    joint_trunc = np.array(ann['joint_valid'], np.float64).reshape(-1, 1)
    joint_trunc[jt['right']] *= joint_trunc[root_idx['right']]
    joint_trunc[jt['left']] *= joint_trunc[root_idx['left']]
    if np.sum(joint_trunc) == 0:
      continue
    joint_valid = np.array(j3d[cap][frame]['joint_valid'], np.float64).reshape(-1, 1)
    joint_valid[jt['right']] *= joint_valid[root_idx['right']]
    joint_valid[jt['left']] *= joint_valid[root_idx['left']]
    if np.sum(joint_valid) == 0:
      continue
    joint_world = np.array(j3d[cap][frame]['world_coord']).reshape(-1, 3)
    joint_cam = joint_world @ R.T + t
    joint_cam[np.tile(joint_valid == 0, (1, 3))] = 1.
    joint_img = joint_cam[:, :2] / joint_cam[:, 2:] * focal + princpt
    boxes = {}
    for h in ('left', 'right'):
      if np.sum(joint_trunc[jt[h]]) == 0:
        boxes[h] = None
      else:
        boxes[h] = sanitize_bbox(get_bbox(joint_img[jt[h]], joint_trunc[jt[h], 0]),
                                 img['width'], img['height'])
      if boxes[h] is None:
        joint_valid[jt[h]] = 0
        joint_trunc[jt[h]] = 0
    if boxes['left'] is None and boxes['right'] is None:
      continue
    try:
      mano_param = dict(fits[cap][frame])
      for h in ('left', 'right'):
        if boxes[h] is None:
          mano_param[h] = None
    except KeyError:
      mano_param = {'right': None, 'left': None}
    datalist.append(dict(aid=ann['id'], joint_cam=joint_cam, joint_trunc=joint_trunc,
                         mano_param=mano_param, hand_type=ann['hand_type'], cap=cap,
                         cam_id=cam_id))

  # evaluate
  n_s = len(datalist)
  ev = {'mpjpe_sh': [[None] * 42 for _ in range(n_s)], 'mpjpe_ih': [[None] * 42 for _ in range(n_s)],
        'mpvpe_sh': [None] * n_s, 'mpvpe_ih': [None] * (2 * n_s), 'rrve': [None] * n_s,
        'mrrpe': [None] * n_s}
  for n, annot in enumerate(datalist):
    joint_gt = annot['joint_cam'].copy()
    joint_valid = annot['joint_trunc'].reshape(-1)
    verts, _ = meshes[annot['aid']]
    mesh_out = np.concatenate([verts[0], verts[1]]) * 1000
    th_out = np.concatenate([sh_reg @ verts[0], sh_reg @ verts[1]]) * 1000   # TH order
    joint_out = np.stack([th_out[TH.index(name)] for name in IH_NAMES])
    mesh_gt = np.zeros((2 * V, 3))
    for k, h in enumerate(('right', 'left')):
      if annot['mano_param'][h] is not None:
        mesh_gt[k * V:(k + 1) * V] = _gt_mesh_cam(models, k, annot['mano_param'][h],
                                                  cams[annot['cap']], annot['cam_id']) * 1000
    rel_trans_gt = joint_gt[root_idx['left']] - joint_gt[root_idx['right']]
    rel_trans_out = joint_out[root_idx['left']] - joint_out[root_idx['right']]
    if joint_valid[root_idx['right']] * joint_valid[root_idx['left']]:
      ev['mrrpe'][n] = np.sqrt(np.sum((rel_trans_gt - rel_trans_out) ** 2))
    for h in ('right', 'left'):
      vm = np.arange(0, V) if h == 'right' else np.arange(V, 2 * V)
      mesh_gt[vm] = mesh_gt[vm] - np.dot(sh_reg, mesh_gt[vm])[0, None, :]
      mesh_out[vm] = mesh_out[vm] - np.dot(sh_reg, mesh_out[vm])[0, None, :]
      joint_gt[jt[h]] = joint_gt[jt[h]] - joint_gt[root_idx[h], None, :]
      joint_out[jt[h]] = joint_out[jt[h]] - joint_out[root_idx[h], None, :]
    for j in range(42):
      if joint_valid[j]:
        key = 'mpjpe_sh' if annot['hand_type'] in ('right', 'left') else 'mpjpe_ih'
        ev[key][n][j] = np.sqrt(np.sum((joint_out[j] - joint_gt[j]) ** 2))
    err = lambda a, b: np.sqrt(np.sum((mesh_gt[a:b] - mesh_out[a:b]) ** 2, 1)).mean()
    mp = annot['mano_param']
    if annot['hand_type'] == 'right' and mp['right'] is not None:
      ev['mpvpe_sh'][n] = err(0, V)
    elif annot['hand_type'] == 'left' and mp['left'] is not None:
      ev['mpvpe_sh'][n] = err(V, 2 * V)
    elif annot['hand_type'] == 'interacting':
      if mp['right'] is not None:
        ev['mpvpe_ih'][2 * n] = err(0, V)
      if mp['left'] is not None:
        ev['mpvpe_ih'][2 * n + 1] = err(V, 2 * V)
    if annot['hand_type'] == 'interacting' and mp['right'] is not None and \
        mp['left'] is not None:
      mesh_gt[V:] = mesh_gt[V:] + rel_trans_gt
      mesh_out[V:] = mesh_out[V:] + rel_trans_out
      ev['rrve'][n] = np.sqrt(np.sum((mesh_gt - mesh_out) ** 2, 1)).mean()

  # print_eval_result
  tot = {}
  for key in ('mpjpe_sh', 'mpjpe_ih'):
    per = [[] for _ in range(42)]
    for row in ev[key]:
      for j in range(42):
        if row[j] is not None:
          per[j].append(row[j])
    tot[key] = [np.mean(r) for r in per]
  for key in ('mpvpe_sh', 'mpvpe_ih', 'rrve', 'mrrpe'):
    tot[key] = [x for x in ev[key] if x is not None]
  return {'mrrpe': np.mean(tot['mrrpe']),
          'interwild/mpvpe_all': np.mean(tot['mpvpe_sh'] + tot['mpvpe_ih']),
          'interwild/mpvpe_sh': np.mean(tot['mpvpe_sh']),
          'interwild/mpvpe_ih': np.mean(tot['mpvpe_ih']),
          'rrve': np.mean(tot['rrve']),
          'interwild/mpjpe_all': np.mean(tot['mpjpe_sh'] + tot['mpjpe_ih']),
          'interwild/mpjpe_sh': np.mean(tot['mpjpe_sh']),
          'interwild/mpjpe_ih': np.mean(tot['mpjpe_ih']),
          '_count': len(datalist)}


def intaghand_reference(root, models, meshes):
  data, cams = _load(root, 'data'), _load(root, 'camera')
  fits = _load(root, 'MANO_NeuralAnnot')

  def jr(model):
    J = np.asarray(model.J_regressor, np.float64)
    tip = np.zeros_like(J[:5])
    for row, v in enumerate((745, 317, 444, 556, 673)):
      tip[row, v] = 1.0
    J = np.concatenate([J, tip], 0)
    new_order = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
    return J[new_order]

  J = {'right': jr(models[0]), 'left': jr(models[1])}
  joints_loss = {'left': [], 'right': []}
  verts_loss = {'left': [], 'right': []}
  for i in range(len(data['images'])):
    annotation, img_info = data['annotations'][i], data['images'][i]
    if not (annotation['hand_type'] == 'interacting' and annotation['hand_type_valid']):
      continue
    cap, frame = str(img_info['capture']), str(img_info['frame_idx'])
    try:
      fit = {h: fits[cap][frame][h] for h in ('left', 'right')}
      if fit['left'] is None or fit['right'] is None:
        continue
    except KeyError:
      continue
    img = np.asarray(Image.open(os.path.join(root, 'images', SPLIT, img_info['file_name'])))
    if img.mean() < 10:
      continue
    verts, _ = meshes[annotation['id']]
    for k, h in ((1, 'left'), (0, 'right')):
      v_gt = _gt_mesh_cam(models, k, fit[h], cams[cap], str(img_info['camera']))
      j_gt = J[h] @ v_gt
      root_gt, length_gt = j_gt[9:10], np.linalg.norm(j_gt[9] - j_gt[0])
      j_gt, v_gt = j_gt - root_gt, v_gt - root_gt
      v_pred = verts[k]
      j_pred = J[h] @ v_pred
      root_pred, length_pred = j_pred[9:10], np.linalg.norm(j_pred[9] - j_pred[0])
      scale = length_gt / length_pred
      j_pred, v_pred = (j_pred - root_pred) * scale, (v_pred - root_pred) * scale
      joints_loss[h].append(np.linalg.norm(j_pred - j_gt, axis=-1))
      verts_loss[h].append(np.linalg.norm(v_pred - v_gt, axis=-1))
  out = {'_count': len(joints_loss['left'])}
  for key, loss in (('mpjpe', joints_loss), ('mpvpe', verts_loss)):
    left, right = np.stack(loss['left']).mean() * 1000, np.stack(loss['right']).mean() * 1000
    out.update({f'intaghand/{key}': (left + right) / 2, f'intaghand/{key}_left': left,
                f'intaghand/{key}_right': right})
  return out


# ----------------------------------------------------------------------------

def test_fixture_has_the_cases(data, monkeypatch):
  root, models = data
  examples = _examples(root, models, monkeypatch)
  doc = _load(root, 'data')
  assert len(examples) == len(doc['annotations']) == 2 * len(FRAMES)


def test_interwild_and_intaghand_equal_their_transcriptions_for_both_input_kinds(
    data, monkeypatch, tmp_path):
  root, models = data
  examples = _examples(root, models, monkeypatch)
  preds = _predictions(examples, models)
  meshes = _meshes(preds, models)
  want_iw = interwild_reference(root, models, meshes)
  want_ia = intaghand_reference(root, models, meshes)
  # The rules bite: 14 annotations, the frame-33 narrow image keeps one hand,
  # IntagHand keeps interacting frames with hand_type_valid, both fits, not dark.
  assert want_iw['_count'] == 14
  assert want_ia['_count'] == 5   # frames 10 (2), 32 (1 of 2: dark), 33 (2)
  got = {}
  for kind, path in (('mano', _write(tmp_path / 'mano.json', preds)),
                     ('joints', _joints_file(tmp_path / 'joints.json', meshes))):
    got[kind] = run.evaluate_predictions(path, 'interhand26m', root, SPLIT,
                                         str(tmp_path / f'out_{kind}'), penetration=False)
  for key, want in list(want_iw.items()) + list(want_ia.items()):
    if key.startswith('_'):
      continue
    for kind in ('mano', 'joints'):
      np.testing.assert_allclose(got[kind][key], want, rtol=1e-6, err_msg=f'{kind} {key}')
  assert got['mano']['count_intaghand'] == want_ia['_count']
  assert got['mano']['count'] == want_iw['_count']
  for key in want_iw:
    if not key.startswith('_'):
      # The same hands: equal up to float32 MANO run batched vs one by one.
      np.testing.assert_allclose(got['mano'][key], got['joints'][key], rtol=1e-7, atol=1e-6)


def test_kinematic_joints_score_differently_from_regressed_ones(data, monkeypatch, tmp_path):
  """The protocol regresses from the mesh: a joints-only file (kinematic
  joints, no vertices) is scored with its own joints and differs."""
  root, models = data
  examples = _examples(root, models, monkeypatch)
  meshes = _meshes(_predictions(examples, models), models)
  only_joints = {str(aid): {side: {'joints': j[k].tolist()}
                            for k, side in enumerate(('right', 'left'))}
                 for aid, (v, j) in meshes.items()}
  s = run.evaluate_predictions(_write(tmp_path / 'j.json', only_joints), 'interhand26m', root,
                               SPLIT, str(tmp_path / 'out'), penetration=False)
  want = interwild_reference(root, models, meshes)
  assert abs(s['interwild/mpjpe_all'] - want['interwild/mpjpe_all']) > 0.1
  assert np.isnan(s['intaghand/mpjpe'])   # IntagHand needs meshes


# ----------------------------------------------------------------------------
# HIC, as InterWild's data/HIC/HIC.py `evaluate` scores it (+ A2P's MPJPE).

def hic_reference(root, models, meshes, truth):
  """InterWild's HIC evaluate + print_eval_result, and the MPJPE on joints
  regressed from the GT meshes (wrist-aligned, per-joint means over SH and
  IH frames as InterWild's InterHand2.6M MPJPE)."""
  with open(os.path.join(root, 'HIC.json')) as f:
    doc = json.load(f)
  sh_reg = _sh_joint_regressor(models, (745, 317, 445, 556, 673))
  V = sh_reg.shape[1]
  ev = {'mpvpe_sh': [], 'mpvpe_ih': [], 'rrve': [], 'mrrpe': []}
  per_joint = {'sh': [[] for _ in range(42)], 'ih': [[] for _ in range(42)]}
  for i, ann in enumerate(doc['annotations']):
    verts, _ = meshes[ann['id']]
    mesh_out = np.concatenate([verts[0], verts[1]]) * 1000
    mesh_gt = np.zeros((2 * V, 3))
    for k, h in enumerate(('right', 'left')):
      if ann[f'{h}_mano_path'] is not None:   # the PLY's vertices, as written
        mesh_gt[k * V:(k + 1) * V] = truth[i]['verts'][h] * 1000
    rel_trans_gt = (sh_reg @ mesh_gt[V:])[0] - (sh_reg @ mesh_gt[:V])[0]
    rel_trans_out = (sh_reg @ mesh_out[V:])[0] - (sh_reg @ mesh_out[:V])[0]
    if ann['hand_type'] == 'interacting':
      ev['mrrpe'].append(np.sqrt(np.sum((rel_trans_gt - rel_trans_out) ** 2)))
    joints = {}
    for k, h in enumerate(('right', 'left')):
      vm = slice(k * V, (k + 1) * V)
      joints[h] = (sh_reg @ mesh_gt[vm], sh_reg @ mesh_out[vm])   # SH order, wrist first
      mesh_gt[vm] = mesh_gt[vm] - (sh_reg @ mesh_gt[vm])[0, None, :]
      mesh_out[vm] = mesh_out[vm] - (sh_reg @ mesh_out[vm])[0, None, :]
    err = lambda a, b: np.sqrt(np.sum((mesh_gt[a:b] - mesh_out[a:b]) ** 2, 1)).mean()
    if ann['hand_type'] == 'right' and ann['right_mano_path'] is not None:
      ev['mpvpe_sh'].append(err(0, V))
    elif ann['hand_type'] == 'left' and ann['left_mano_path'] is not None:
      ev['mpvpe_sh'].append(err(V, 2 * V))
    elif ann['hand_type'] == 'interacting':
      if ann['right_mano_path'] is not None:
        ev['mpvpe_ih'].append(err(0, V))
      if ann['left_mano_path'] is not None:
        ev['mpvpe_ih'].append(err(V, 2 * V))
    if ann['hand_type'] == 'interacting' and ann['right_mano_path'] is not None and \
        ann['left_mano_path'] is not None:
      mesh_gt[V:] = mesh_gt[V:] + rel_trans_gt
      mesh_out[V:] = mesh_out[V:] + rel_trans_out
      ev['rrve'].append(np.sqrt(np.sum((mesh_gt - mesh_out) ** 2, 1)).mean())
    # MPJPE: joints regressed from the GT meshes, wrist-aligned.
    key = 'ih' if ann['hand_type'] == 'interacting' else 'sh'
    for k, h in enumerate(('right', 'left')):
      if ann[f'{h}_mano_path'] is None:
        continue
      gt, out = joints[h]
      gt, out = gt - gt[0], out - out[0]
      for j, name in enumerate(SH):
        per_joint[key][IH_NAMES.index(('R_' if k == 0 else 'L_') + name)].append(
            np.sqrt(np.sum((out[j] - gt[j]) ** 2)))
  m_sh = [np.mean(x) for x in per_joint['sh']]
  m_ih = [np.mean(x) for x in per_joint['ih']]
  return {'mrrpe': np.mean(ev['mrrpe']),
          'interwild/mpvpe_all': np.mean(ev['mpvpe_sh'] + ev['mpvpe_ih']),
          'interwild/mpvpe_sh': np.mean(ev['mpvpe_sh']),
          'interwild/mpvpe_ih': np.mean(ev['mpvpe_ih']), 'rrve': np.mean(ev['rrve']),
          'interwild/mpjpe_all': np.mean(m_sh + m_ih), 'interwild/mpjpe_ih': np.mean(m_ih)}


def test_hic_equals_interwilds_hic_evaluate_for_both_input_kinds(monkeypatch, tmp_path):
  from a2p_jax.data import hic
  from tests.test_data_hic import write_hic
  models = _models()
  root, truth = write_hic(tmp_path, models)
  # SH-MPJPE needs every joint in single-hand frames: HIC's fixture has one
  # right-only and one left-only frame, so per-joint means exist for all 42.
  monkeypatch.setattr(hic, 'load_hand_models', lambda mano_dir=None: models)
  monkeypatch.setattr(run, 'load_hand_models', lambda mano_dir=None: models)
  rng = np.random.default_rng(1)
  preds = {}
  with open(os.path.join(root, 'HIC.json')) as f:
    ids = [a['id'] for a in json.load(f)['annotations']]
  for aid in ids:
    preds[str(aid)] = {side: {'pose': rng.normal(0, 0.3, 48).tolist(),
                              'shape': rng.normal(0, 0.5, 10).tolist(),
                              'trans': [0.06 * (1 if side == 'right' else -1) + rng.normal(0, .01),
                                        rng.normal(0, .01), 0.5 + rng.normal(0, .01)]}
                       for side in ('right', 'left')}
  meshes = _meshes(preds, models)
  want = hic_reference(root, models, meshes, truth)
  for kind, path in (('mano', _write(tmp_path / 'mano.json', preds)),
                     ('joints', _joints_file(tmp_path / 'joints.json', meshes))):
    got = run.evaluate_predictions(path, 'hic', root, 'test', str(tmp_path / f'out_{kind}'),
                                   penetration=False)
    for key, value in want.items():
      np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=f'{kind} {key}')
    assert np.isnan(got['intaghand/mpjpe'])   # IntagHand's protocol is InterHand2.6M's
