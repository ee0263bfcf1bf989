"""FreiHAND scoring vs a literal, loop-by-loop re-implementation of eval.py's
formulas (scipy's orthogonal_procrustes, brute-force nearest neighbours),
exact cases, a hand-checked F-score, and the pred.json reader."""

import json
import os

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance

from a2p_jax.eval import freihand
from a2p_jax.eval.predictions import PredictionsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------
# The reference: eval.py / eval_util.py's steps, one sample and one point at a time.


def ref_align_w_scale(mtx1, mtx2):
  """eval.py align_w_scale(gt, pred)."""
  t1, t2 = mtx1.mean(0), mtx2.mean(0)
  mtx1_t, mtx2_t = mtx1 - t1, mtx2 - t2
  s1 = np.linalg.norm(mtx1_t) + 1e-8
  mtx1_t /= s1
  s2 = np.linalg.norm(mtx2_t) + 1e-8
  mtx2_t /= s2
  rot, s = scipy.linalg.orthogonal_procrustes(mtx1_t, mtx2_t)
  return np.dot(mtx2_t, rot.T) * s * s1 + t1


def ref_fscore(gt, pr, th):
  dist = scipy.spatial.distance.cdist(gt, pr)
  d1 = dist.min(1)          # each gt point to the closest pred point
  d2 = dist.min(0)          # each pred point to the closest gt point
  recall = float(sum(d < th for d in d2)) / float(len(d2))
  precision = float(sum(d < th for d in d1)) / float(len(d1))
  return 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0


def ref_measures(gt_list, pred_list):
  """EvalUtil: (mean error, AUC over linspace(0, 0.05, 100)), metres."""
  num_kp = len(gt_list[0])
  data = [[] for _ in range(num_kp)]
  for gt, pred in zip(gt_list, pred_list):
    for i in range(num_kp):
      data[i].append(np.sqrt(np.sum(np.square(gt[i] - pred[i]))))
  thresholds = np.linspace(0.0, 0.05, 100)
  norm = np.trapezoid(np.ones_like(thresholds), thresholds)
  means, aucs = [], []
  for i in range(num_kp):
    d = np.array(data[i])
    means.append(np.mean(d))
    pck = [np.mean((d <= t).astype('float')) for t in thresholds]
    aucs.append(np.trapezoid(pck, thresholds) / norm)
  return np.mean(means), np.mean(aucs)


def ref_score(pred_xyz, pred_verts, gt_xyz, gt_verts):
  xyz_al, verts_al, f, fa = [], [], [], []
  for idx in range(len(gt_xyz)):
    xyz_al.append(ref_align_w_scale(gt_xyz[idx], pred_xyz[idx]))
    verts_al.append(ref_align_w_scale(gt_verts[idx], pred_verts[idx]))
    f.append([ref_fscore(gt_verts[idx], pred_verts[idx], t) for t in (0.005, 0.015)])
    fa.append([ref_fscore(gt_verts[idx], verts_al[-1], t) for t in (0.005, 0.015)])
  out = {}
  for key, pred, gt in (('j', pred_xyz, gt_xyz), ('v', pred_verts, gt_verts),
                        ('pa_j', xyz_al, gt_xyz), ('pa_v', verts_al, gt_verts)):
    mean, auc = ref_measures(gt, pred)
    out[key] = mean * 1000.0
    out[f'auc_{key}'] = auc
  f, fa = np.array(f).T, np.array(fa).T
  return {'mpjpe': out['j'], 'mpvpe': out['v'], 'pa_mpjpe': out['pa_j'],
          'pa_mpvpe': out['pa_v'], 'f5': fa[0].mean(), 'f15': fa[1].mean(),
          'f5_unaligned': f[0].mean(), 'f15_unaligned': f[1].mean(),
          'auc_j': out['auc_j'], 'auc_v': out['auc_v'], 'pa_auc_j': out['auc_pa_j'],
          'pa_auc_v': out['auc_pa_v']}


# ----------------------------------------------------------------------------
# Data.

def random_rotation(rng):
  q, r = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q * np.linalg.det(q)        # proper


def hands(rng, n, points):
  """Hand-sized random point sets (m) about half a metre from the camera."""
  return rng.normal(0, 0.04, (n, points, 3)) + np.array([0.0, 0.0, 0.5])


def similar(rng, x, noise_m, reflect=False):
  """Each sample scaled, rotated (optionally mirrored), moved, plus noise."""
  out = []
  for p in x:
    rot = random_rotation(rng) * (np.array([-1.0, 1.0, 1.0]) if reflect else 1.0)
    out.append(rng.uniform(0.5, 2.0) * p @ rot.T + rng.normal(0, 0.3, 3)
               + rng.normal(0, noise_m, p.shape))
  return np.array(out)


# ----------------------------------------------------------------------------
# Tests.

def test_score_vs_reference():
  rng = np.random.default_rng(0)
  gt_xyz, gt_verts = hands(rng, 6, 21), hands(rng, 6, 120)
  pred_xyz, pred_verts = similar(rng, gt_xyz, 0.006), similar(rng, gt_verts, 0.004)
  pred_verts[:, :3] += 0.02            # some far points: recall < 1 at 15 mm
  got = freihand.score(pred_xyz, pred_verts, gt_xyz, gt_verts)
  want = ref_score(pred_xyz, pred_verts, gt_xyz, gt_verts)
  assert set(got) == set(want)
  for key in ('mpjpe', 'mpvpe', 'pa_mpjpe', 'pa_mpvpe'):
    assert got[key] == pytest.approx(want[key], abs=1e-6), key
  for key in want:
    assert got[key] == pytest.approx(want[key], abs=1e-12), key
  # Non-trivial numbers (the test would see a wrong threshold or a swap).
  assert 0.05 < got['f5'] < 0.95 and got['f15'] > got['f5'] and got['f5_unaligned'] == 0.0
  assert 3 < got['pa_mpjpe'] < 20 and got['mpjpe'] > 100
  for i in range(len(gt_xyz)):
    np.testing.assert_allclose(freihand.procrustes(pred_xyz[i], gt_xyz[i]),
                               ref_align_w_scale(gt_xyz[i], pred_xyz[i]), atol=1e-12)


@pytest.mark.parametrize('reflect', [False, True])
def test_similar_copy_scores_zero_and_f_one(reflect):
  """eval.py's Procrustes (scipy's orthogonal_procrustes) also undoes a mirror."""
  rng = np.random.default_rng(1)
  gt_xyz, gt_verts = hands(rng, 3, 21), hands(rng, 3, 50)
  pred_xyz, pred_verts = similar(rng, gt_xyz, 0.0, reflect), similar(rng, gt_verts, 0.0, reflect)
  got = freihand.score(pred_xyz, pred_verts, gt_xyz, gt_verts)
  # Not exactly 0: eval.py adds 1e-8 m to both norms (~0.2 m here), which
  # shrinks the aligned copy by a relative ~1e-7: ~1e-6 mm.
  assert got['pa_mpjpe'] < 1e-4 and got['pa_mpvpe'] < 1e-4
  assert got['f5'] == got['f15'] == 1.0
  # PCK at the 0 mm threshold is 0 for any error > 0: half a step of 99 is lost.
  for key in ('pa_auc_j', 'pa_auc_v'):
    assert got[key] == pytest.approx(1 - 0.5 / 99, abs=1e-12)
  assert got['mpjpe'] > 10
  same = freihand.score(gt_xyz, gt_verts, gt_xyz, gt_verts)
  assert same['mpjpe'] == same['mpvpe'] == 0.0 and same['f5_unaligned'] == 1.0
  assert same['auc_j'] == same['auc_v'] == 1.0


def test_zero_prediction_aligns_to_the_centroid():
  """The toolbox's zero predictor: aligned, it sits at the gt centroid."""
  rng = np.random.default_rng(2)
  gt_xyz, gt_verts = hands(rng, 4, 21), hands(rng, 4, 30)
  got = freihand.score(np.zeros_like(gt_xyz), np.zeros_like(gt_verts), gt_xyz, gt_verts)
  centred = np.linalg.norm(gt_xyz - gt_xyz.mean(1, keepdims=True), axis=-1)
  assert got['pa_mpjpe'] == pytest.approx(centred.mean() * 1000.0, abs=1e-9)
  assert got['mpjpe'] == pytest.approx(np.linalg.norm(gt_xyz, axis=-1).mean() * 1000.0)


def test_f_score_by_hand():
  gt = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]])
  pred = np.array([[0, 0, 0.004],       # 4 mm from gt 0
                   [0.1, 0.010, 0],     # 10 mm from gt 1
                   [0, 0.1, 0],         # on gt 2
                   [1.0, 1.0, 1.0],     # far from all
                   [0, 0.1, 0.003]])    # 3 mm from gt 2
  # 5 mm: gt 0, 2 matched (2/4); pred 0, 2, 4 matched (3/5).
  f, p, r = freihand.f_score(gt, pred, 0.005)
  assert (p, r) == (0.5, 0.6) and f == pytest.approx(2 * 0.5 * 0.6 / 1.1, abs=1e-15)
  # 15 mm: gt 0, 1, 2 (3/4); pred 0, 1, 2, 4 (4/5).
  f, p, r = freihand.f_score(gt, pred, 0.015)
  assert (p, r) == (0.75, 0.8) and f == pytest.approx(2 * 0.75 * 0.8 / 1.55, abs=1e-15)
  # Strictly below the threshold: a distance of exactly 0.25 does not count.
  assert freihand.f_score(np.zeros((1, 3)), np.array([[0.0, 0.0, 0.25]]), 0.25) == (0, 0, 0)
  assert freihand.f_score(np.zeros((1, 3)), np.array([[0.0, 0.0, 0.25]]), 0.2500001)[0] == 1


def test_score_refuses_bad_shapes():
  rng = np.random.default_rng(3)
  gt_xyz, gt_verts = hands(rng, 2, 21), hands(rng, 2, 30)
  with pytest.raises(ValueError, match=r'pred_verts must be \(N, 30, 3\)'):
    freihand.score(gt_xyz, gt_verts[:, :29], gt_xyz, gt_verts)
  with pytest.raises(ValueError, match='sample counts differ'):
    freihand.score(gt_xyz[:1], gt_verts, gt_xyz, gt_verts)
  bad = gt_xyz.copy()
  bad[1, 2, 0] = np.nan
  with pytest.raises(ValueError, match='pred_xyz contains NaN'):
    freihand.score(bad, gt_verts, gt_xyz, gt_verts)


def test_read_pred_json_and_gt(tmp_path):
  rng = np.random.default_rng(4)
  xyz, verts = hands(rng, 3, 21), hands(rng, 3, 40)
  path = tmp_path / 'pred.json'
  path.write_text(json.dumps([xyz.tolist(), verts.tolist()]))
  got_xyz, got_verts = freihand.read_pred_json(str(path))
  np.testing.assert_array_equal(got_xyz, xyz)
  np.testing.assert_array_equal(got_verts, verts)
  (tmp_path / 'evaluation_xyz.json').write_text(json.dumps(xyz.tolist()))
  (tmp_path / 'evaluation_verts.json').write_text(json.dumps(verts.tolist()))
  gt_xyz, gt_verts = freihand.read_gt(str(tmp_path))
  np.testing.assert_array_equal(gt_xyz, xyz)
  np.testing.assert_array_equal(gt_verts, verts)
  # The official zero predictor's file is accepted (no unit check on zeros).
  path.write_text(json.dumps([np.zeros((2, 21, 3)).tolist(), np.zeros((2, 778, 3)).tolist()]))
  assert freihand.read_pred_json(str(path))[1].shape == (2, 778, 3)


@pytest.mark.parametrize('obj,msg', [
    ({'xyz': []}, r'expected \[xyz list, verts list\]'),
    ([[np.zeros((21, 3)).tolist()]], r'expected \[xyz list, verts list\]'),
    ([[np.zeros((21, 3)).tolist()] * 2, [np.zeros((5, 3)).tolist()]], '2 xyz entries and 1'),
    ([[np.zeros((21, 3)).tolist(), np.zeros((20, 3)).tolist()], [np.zeros((5, 3)).tolist()] * 2],
     r'xyz\[1\]: expected shape \(21, 3\)'),
    ([[np.zeros((21, 3)).tolist()] * 2, [np.zeros((5, 3)).tolist(), [[0, 0, float('nan')]] * 5]],
     r'verts\[1\]: contains NaN'),
    ([[np.zeros((21, 3)).tolist()], [np.zeros(5).tolist()]], r'verts\[0\]: expected \(V, 3\)'),
    ([[(np.arange(63).reshape(21, 3) * 10.0).tolist()], [np.zeros((5, 3)).tolist()]],
     'are the values in mm'),
])
def test_read_pred_json_errors_name_the_file(tmp_path, obj, msg):
  path = tmp_path / 'my_pred.json'
  path.write_text(json.dumps(obj))
  with pytest.raises(PredictionsError, match=msg) as e:
    freihand.read_pred_json(str(path))
  assert 'my_pred.json' in str(e.value)


def test_read_pred_json_invalid_json(tmp_path):
  path = tmp_path / 'cut.json'
  path.write_text('[[[0, 1')
  with pytest.raises(PredictionsError, match='cut.json: invalid JSON'):
    freihand.read_pred_json(str(path))


def test_eval_py_scores_a_pred_json(tmp_path):
  """eval.py --dataset freihand: report.json's summary is `score` of the
  file against the released evaluation ground truth; a file with the wrong
  number of samples is an error naming it."""
  import json as json_lib
  import subprocess
  import sys

  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.eval import run
  from tests import freihand_fixtures
  root = str(tmp_path / 'FreiHAND_pub_v2')
  freihand_fixtures.write(root, load_hand_models(None)[0], n_train=1, n_eval=3)
  gt_xyz, gt_verts = freihand.read_gt(root)
  rng = np.random.default_rng(5)
  xyz = gt_xyz + rng.normal(0, 0.004, gt_xyz.shape)
  verts = gt_verts + rng.normal(0, 0.004, gt_verts.shape)
  pred = tmp_path / 'pred.json'
  pred.write_text(json_lib.dumps([xyz.tolist(), verts.tolist()]))
  out = tmp_path / 'out'
  proc = subprocess.run([sys.executable, 'eval.py', '--predictions', str(pred), '--dataset',
                         'freihand', '--root', root, '--split', 'evaluation', '--out', str(out)],
                        cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json_lib.load(open(out / 'report.json'))['summary']
  want = freihand.score(xyz, verts, gt_xyz, gt_verts)
  for k in ('pa_mpjpe', 'pa_mpvpe', 'f5', 'f15', 'mpjpe', 'mpvpe'):
    assert summary[f'freihand/{k}'] == pytest.approx(want[k], rel=1e-12), k
  assert 0 < summary['freihand/pa_mpjpe'] < summary['freihand/mpjpe']
  pred.write_text(json_lib.dumps([xyz[:2].tolist(), verts[:2].tolist()]))
  with pytest.raises(ValueError, match='pred.json: 2 predictions'):
    run.evaluate_freihand(str(pred), root, str(tmp_path / 'out2'))


def test_mesh_joints_are_freihands():
  """FreiHAND's joints of a mesh: the toolbox's recipe written out in the
  fixture (procedural hand: its own tips), and TIP_VERTICES on a MANO-sized
  mesh."""
  import types

  import jax

  import mano_jax
  from a2p_jax.data.hands import load_hand_models
  from tests import freihand_fixtures
  model = load_hand_models(None)[0]
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    verts = np.asarray(mano_jax.forward(model, rng.normal(0, 0.3, (3, 48)),
                                        rng.normal(0, 1, (3, 10))).vertices)
  want = np.stack([freihand_fixtures.freihand_joints(model, v) for v in verts])
  np.testing.assert_allclose(freihand.mesh_joints(model, verts), want, atol=1e-12)
  fake = types.SimpleNamespace(J_regressor=np.eye(16, 778), tip_ids=(0, 1, 2, 3, 4))
  v = rng.normal(size=(1, 778, 3))
  got = freihand.mesh_joints(fake, v)[0]
  np.testing.assert_array_equal(got[[4, 8, 12, 16, 20]], v[0, [744, 320, 443, 555, 672]])
  np.testing.assert_array_equal(got[0], v[0, 0])            # wrist: regressor row 0
  np.testing.assert_array_equal(got[1], v[0, 13])           # thumb1: MANO joint 13


def test_project_format_predictions(tmp_path):
  """The project's predictions format keyed by sample index: MANO parameters
  scored with FreiHAND's joints of their mesh (the ground truth itself
  scores 0), joints + vertices with the given joints."""
  import json as json_lib

  from a2p_jax.data.freihand import FreiHAND
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.eval import run
  from tests import freihand_fixtures
  models = load_hand_models(None)
  root = str(tmp_path / 'FreiHAND_pub_v2')
  freihand_fixtures.write(root, models[0], n_train=1, n_eval=3)
  ds = FreiHAND(root, 'evaluation', progress=False)
  entries = {str(ex['sample_id']): {'right': {k: np.asarray(v).tolist()
                                              for k, v in ex['mano']['right'].items()},
                                    'left': None} for ex in (ds[i] for i in range(len(ds)))}
  path = tmp_path / 'preds.json'
  path.write_text(json_lib.dumps({'units': 'm', 'predictions': entries}))
  summary = run.evaluate_freihand(str(path), root, str(tmp_path / 'out'))
  assert summary['count'] == 3
  for k in ('mpjpe', 'mpvpe', 'pa_mpjpe', 'pa_mpvpe'):
    assert summary[f'freihand/{k}'] < 1e-3, (k, summary)   # mm: the fits are the GT
  assert summary['freihand/f5'] == pytest.approx(1.0)
  gt_xyz, gt_verts = freihand.read_gt(root)
  shifted = {str(i): {'right': {'joints': (freihand_fixtures_to_interhand(gt_xyz[i]) + 0.01)
                                .tolist(), 'vertices': gt_verts[i].tolist()}, 'left': None}
             for i in range(3)}
  path.write_text(json_lib.dumps({'units': 'm', 'predictions': shifted}))
  summary = run.evaluate_freihand(str(path), root, str(tmp_path / 'out2'))
  assert summary['freihand/mpjpe'] == pytest.approx(np.sqrt(3) * 10, rel=1e-6)
  assert summary['freihand/mpvpe'] < 1e-6
  del shifted['2']
  path.write_text(json_lib.dumps({'units': 'm', 'predictions': shifted}))
  with pytest.raises(PredictionsError, match='evaluation index 2'):
    run.evaluate_freihand(str(path), root, str(tmp_path / 'out3'))


def freihand_fixtures_to_interhand(xyz_fh):
  """(21, 3) FreiHAND order -> InterHand order (thumb4..1, index, middle,
  ring, pinky, wrist last), written out by hand."""
  order = [4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17, 0]
  return np.asarray(xyz_fh)[order]
