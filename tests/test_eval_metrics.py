"""Metrics against hand-computed values (both protocols, masks, subsets);
tests/test_eval_protocols.py compares whole protocols with the peers' code."""

import numpy as np
import pytest

from a2p_jax.eval import metrics


def _hand(offset, scale=1.0):
  """21 joints (m): wrist at `offset`, others on known positions."""
  j = np.zeros((21, 3))
  j[:20, 0] = np.arange(1, 21) * 0.01 * scale
  j[metrics.MIDDLE_MCP] = [0.0, 0.05 * scale, 0.0]   # middle MCP 5 cm above the wrist
  return j + offset


def _pair(right_off, left_off, scale=1.0):
  return np.concatenate([_hand(right_off, scale), _hand(left_off, scale)])


def test_interwild_is_translation_invariant_per_hand_and_exact():
  gt = _pair([0, 0, 0.5], [0.1, 0, 0.5])[None]
  pred = _pair([0.3, 0.2, 0.9], [-0.2, 0.1, 0.4])[None]   # each hand moved rigidly
  res = metrics.interwild_per_sample(pred, gt, np.ones((1, 42)), np.array(['interacting']))
  np.testing.assert_allclose(res['interwild/joint_err'], 0, atol=1e-9)
  # MRRPE: GT relative root (0.1, 0, 0); predicted (-0.5, -0.1, -0.5).
  want = np.linalg.norm(np.array([-0.5, -0.1, -0.5]) - [0.1, 0, 0]) * 1000
  np.testing.assert_allclose(res['mrrpe'], [want])


def test_interwild_counts_a_joint_only_with_its_wrist_and_averages_per_joint():
  gt = np.stack([_pair([0, 0, 0.5], [0.1, 0, 0.5])] * 3)
  pred = gt.copy()
  pred[0, 0] += [0.002, 0, 0]        # frame 0 (SH right): joint 0 off by 2 mm
  pred[1, 0] += [0.004, 0, 0]        # frame 1 (SH right): joint 0 off by 4 mm
  pred[2, 21] += [0, 0.006, 0]       # frame 2 (IH): left joint 0 off by 6 mm
  pred[2, 1] += [0, 0, 0.010]        # but frame 2's right hand has an invalid wrist
  valid = np.ones((3, 42))
  valid[2, metrics.WRIST] = 0
  ht = np.array(['right', 'right', 'interacting'])
  res = metrics.interwild_per_sample(pred, gt, valid, ht)
  assert np.isnan(res['interwild/joint_err'][2, :21]).all()
  s = metrics.summarize(res)
  # SH: joint 0 mean (2+4)/2 = 3 mm, other joints 0, over the 42 joints
  # (the left hand's joints in right-hand frames are valid and exact here).
  np.testing.assert_allclose(s['interwild/mpjpe_sh'], 3.0 / 42)
  # IH: only the left hand counts (21 joints); joint 21 is 6 mm off.
  np.testing.assert_allclose(s['interwild/mpjpe_ih'], 6.0 / 21)
  # all: mean of the 42 SH and the 21 finite IH per-joint means.
  np.testing.assert_allclose(s['interwild/mpjpe_all'], (3.0 + 6.0) / 63)
  assert np.isnan(res['mrrpe'][2]) and s['count_mrrpe'] == 2
  # Re-scoring a subset: frame 1 only.
  s1 = metrics.summarize(res, np.array([False, True, False]))
  np.testing.assert_allclose(s1['interwild/mpjpe_sh'], 4.0 / 42)
  assert s1['count'] == 1 and np.isnan(s1['interwild/mpjpe_ih'])


def test_intaghand_aligns_at_middle_mcp_and_rescales():
  gt = _pair([0, 0, 0.5], [0.1, 0, 0.5])[None]
  # A prediction twice as large and shifted: scale-and-translation aligned -> 0.
  pred = _pair([0.2, 0, 0.6], [0.4, 0.1, 0.7], scale=2.0)[None]
  res = metrics.intaghand_per_sample(pred, gt, [True])
  np.testing.assert_allclose(res['intaghand/joint_err'], 0, atol=1e-9)
  # InterWild does not rescale: its error is the size difference.
  iw = metrics.interwild_per_sample(pred, gt, np.ones((1, 42)), np.array(['interacting']))
  assert np.nanmax(iw['interwild/joint_err']) > 100
  # One right-hand joint 3 mm off after alignment, in one of two frames:
  # right = mean over 2 frames x 21 joints, left 0, all = mean of the hands.
  gt2 = np.concatenate([gt, gt])
  pred2 = gt2.copy()
  pred2[0, 0] += [0.003, 0, 0]
  res = metrics.intaghand_per_sample(pred2, gt2, [True, True])
  res.update(metrics.interwild_per_sample(pred2, gt2, np.ones((2, 42)),
                                          np.array(['interacting'] * 2)))
  s = metrics.summarize(res)
  np.testing.assert_allclose(s['intaghand/mpjpe_right'], 3.0 / 42)
  np.testing.assert_allclose(s['intaghand/mpjpe_left'], 0, atol=1e-9)
  np.testing.assert_allclose(s['intaghand/mpjpe'], 3.0 / 84)
  assert s['count_intaghand'] == 2
  # Frames outside IntagHand's selection do not count.
  res.update(metrics.intaghand_per_sample(pred2, gt2, [False, True]))
  s = metrics.summarize(res)
  np.testing.assert_allclose(s['intaghand/mpjpe'], 0, atol=1e-9)
  assert s['count_intaghand'] == 1


def test_mpvpe_both_protocols_and_single_hand_frames():
  rng = np.random.default_rng(0)
  gt_j = np.stack([_pair([0, 0, 0.5], [0.1, 0, 0.5])] * 2)
  gv = rng.normal(0, 0.03, (2, 2, 50, 3)) + gt_j[:, [20, 41]][:, :, None]
  pv = gv.copy()
  pv[:, 0] += [0, 0, 0.004]          # right meshes 4 mm deeper, joints exact
  ht = np.array(['left', 'interacting'])
  res = metrics.interwild_per_sample(gt_j, gt_j, np.ones((2, 42)), ht, pred_verts=pv, gt_verts=gv)
  # InterWild aligns meshes at the joints' wrist (default): right meshes 4 mm off.
  assert np.isnan(res['interwild/vert_err'][0, 0])           # left-only frame
  np.testing.assert_allclose(res['interwild/vert_err'][0, 1], 0, atol=1e-9)
  np.testing.assert_allclose(res['interwild/vert_err'][1], [4.0, 0.0], atol=1e-9)
  s = metrics.summarize(res)
  np.testing.assert_allclose(s['interwild/mpvpe_sh'], 0, atol=1e-9)
  np.testing.assert_allclose(s['interwild/mpvpe_ih'], 2.0)
  np.testing.assert_allclose(s['interwild/mpvpe_all'], 4.0 / 3)
  # RRVE (interacting frame only): both wrist-aligned meshes, the left one
  # placed by the relative roots (equal here): right 4 mm, left 0 -> 2 mm.
  np.testing.assert_allclose(res['rrve'][1], 2.0, atol=1e-9)
  assert np.isnan(res['rrve'][0])
  ia = metrics.intaghand_per_sample(gt_j, gt_j, [False, True], pred_verts=pv, gt_verts=gv)
  res.update(ia)
  s = metrics.summarize(res)
  np.testing.assert_allclose(s['intaghand/mpvpe'], 2.0)   # mean of right 4, left 0


def test_bad_shapes_and_hand_types_are_named():
  with pytest.raises(ValueError, match='pred_joints'):
    metrics.interwild_per_sample(np.zeros((1, 21, 3)), np.zeros((1, 42, 3)), np.ones((1, 42)),
                       np.array(['right']))
  with pytest.raises(ValueError, match='hand_type'):
    metrics.interwild_per_sample(np.zeros((1, 42, 3)), np.zeros((1, 42, 3)), np.ones((1, 42)),
                       np.array(['both']))


def test_penetration_summary_on_interacting_frames():
  import mano_jax
  from a2p_jax.data.hands import load_hand_models
  right, left = load_hand_models()
  vr = np.asarray(mano_jax.forward(right, np.zeros(48)).vertices)
  vl = np.asarray(mano_jax.forward(left, np.zeros(48)).vertices)
  apart = np.stack([vr, vl + [0.3, 0, 0]])
  inside = np.stack([vr, vr + [0.004, 0, 0]])  # a copy moved 4 mm: deep overlap
  verts = np.stack([apart, inside, inside])
  pen = metrics.penetration_per_sample(verts, np.asarray(right.faces), np.asarray(right.faces))
  assert pen['penvol_cm3'][0] == 0 and pen['pendist_cm'][0] == 0
  assert pen['penvol_cm3'][1] > 1 and pen['close'][1]
  gt = np.zeros((3, 42, 3))
  res = metrics.interwild_per_sample(gt, gt, np.ones((3, 42)),
                           np.array(['interacting', 'interacting', 'right']))
  res.update(pen)
  s = metrics.summarize(res)
  # Only the two interacting frames count: mean of 0 and frame 1's volume.
  np.testing.assert_allclose(s['penvol_cm3'], pen['penvol_cm3'][1] / 2)
  np.testing.assert_allclose(s['prox_ratio'], 0.5)


def test_interwild_xy_and_z_split_of_the_joint_error():
  """A non-wrist joint moved by (3, 4, 12) mm: error 13 mm, XY 5 mm, Z 12 mm."""
  gt = _pair([0, 0, 0.5], [0.1, 0, 0.5])[None]
  pred = gt.copy()
  pred[0, 0] += [0.003, 0.004, 0.012]
  res = metrics.interwild_per_sample(pred, gt, np.ones((1, 42)), np.array(['interacting']))
  np.testing.assert_allclose(res['interwild/joint_err'][0, 0], 13.0)
  np.testing.assert_allclose(res['interwild/joint_err_xy'][0, 0], 5.0)
  np.testing.assert_allclose(res['interwild/joint_err_z'][0, 0], 12.0)
  s = metrics.summarize(res)
  # Per-joint means over the 42 joints (one sample): only joint 0 is off.
  np.testing.assert_allclose(s['interwild/mpjpe_all'], 13.0 / 42)
  np.testing.assert_allclose(s['interwild/mpjpe_xy_all'], 5.0 / 42)
  np.testing.assert_allclose(s['interwild/mpjpe_z_all'], 12.0 / 42)


def test_apply_stage2_moves_rel_root_by_the_repair():
  """Stage 1's hands come placed by rel_root (left root = right root +
  rel_root); a gated frame's rel_root is the repaired hands' wrist
  difference (stage 1's rel_root plus the repair's move), ungated frames
  come back exactly; meshes follow the repaired parameters."""
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.inference.stage2 import apply_stage2
  models = load_hand_models()
  rng = np.random.default_rng(0)
  eye6 = np.array([1.0, 0, 0, 0, 1.0, 0])
  rel_root = rng.normal(0, 0.1, (2, 3))
  right = np.array([[0.0, 0, 0.5]] * 2)
  pred = {'pose_6d': np.tile(eye6, (2, 2, 16, 1)), 'betas': np.zeros((2, 2, 10)),
          'root_cam': np.stack([right, right + rel_root], 1), 'rel_root': rel_root}
  shift = np.array([0.01, -0.02, 0.03])

  def repair(params, boxes, key):  # moves pair 0's left hand, gates pair 0 only
    out = {k: np.array(v) for k, v in params.items()}
    out['root_cam'][0, 1] += shift
    return out, {'gated': np.array([True, False])}

  boxes = np.zeros((2, 2, 4), np.float32)
  out, gated = apply_stage2(pred, repair, models, {}, boxes)
  assert gated.tolist() == [True, False]
  np.testing.assert_allclose(out['rel_root'][0], pred['rel_root'][0] + shift, atol=1e-7)
  np.testing.assert_array_equal(out['rel_root'][1], pred['rel_root'][1])
  # Pair 0's left-hand joints (21-41) moved by the shift, relative to pair 1's.
  moved = (out['joints'][0, 21:] - rel_root[0]) - (out['joints'][1, 21:] - rel_root[1])
  np.testing.assert_allclose(moved, np.broadcast_to(shift, moved.shape), atol=1e-6)
  np.testing.assert_allclose(out['joints'][0, :21], out['joints'][1, :21], atol=1e-9)


def test_contact_kept_counts_gt_touching_interacting_frames():
  """contact_kept = share of the interacting frames whose GT hands touch
  (gap < 2 mm, penetrating included) that the prediction keeps touching;
  single-hand frames and GT hands apart do not count; hand_gap_cm is 0 for
  penetrating hands, the distance for separate ones, NaN without a mesh."""
  import mano_jax
  from a2p_jax.data.hands import load_hand_models
  right, _ = load_hand_models()
  f = np.asarray(right.faces)
  vr = np.asarray(mano_jax.forward(right, np.zeros(48)).vertices)
  span = vr[:, 0].max() - vr[:, 0].min()
  pairs = np.stack([np.stack([vr, vr + [0.004, 0, 0]]),            # penetrating
                    np.stack([vr, vr + [span + 0.05, 0, 0]]),      # >= 5 cm apart
                    np.stack([vr, np.full_like(vr, np.nan)])])     # no left mesh
  gap = metrics.hand_gap_cm(pairs, f, f)
  assert gap[0] == 0 and gap[1] >= 5 and np.isnan(gap[2])
  hand_type = np.array(['interacting'] * 5 + ['right'])
  gt = np.zeros((6, 42, 3))
  res = metrics.interwild_per_sample(gt, gt, np.ones((6, 42)), hand_type)
  res['gt_gap_cm'] = np.array([0.0, 0.1, 0.19, 3.0, np.nan, 0.0])
  res['gap_cm'] = np.array([0.05, 1.0, 0.0, 0.0, 0.0, 5.0])
  s = metrics.summarize(res)
  assert s['count_contact'] == 3
  np.testing.assert_allclose(s['contact_kept'], 2 / 3)


def test_readme_shows_the_reports_key_table():
  """The README's "which number is which" table is report.key_table(), the
  one every report.md carries (a new key shows up in both or the test says so)."""
  import os
  from a2p_jax.eval import report
  readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')
  with open(readme) as f:
    assert report.key_table() in f.read()
