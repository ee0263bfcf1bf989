"""Property tests (hypothesis) on random valid inputs: mano_jax.forward and the
two-hand geometry stay finite and respect their symmetries.

The hands are the procedural hand (NOT MANO). Deterministic: derandomize=True
and no example database; few examples with fixed shapes, so each function
compiles once per module (tests/conftest.py clears JAX caches per module).

- forward: finite outputs, orthonormal joint frames, wrist at the root
  frame's origin; translation equivariance; rotating the root orientation
  by R rotates the posed hand by R about the wrist joint.
- penetration_volume: invariant (within sampling tolerance) when both hands
  are rotated and translated together, and symmetric in its two hands.
- collision_loss: invariant under a common translation (on a coordinate
  grid where float32 sums are exact, so thresholds cannot flip), zero
  gradient along a common translation, finite value and gradient.
"""

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.transform import Rotation

import mano_jax
from a2p_jax import geometry

RIGHT = mano_jax.load_procedural('right')
LEFT = mano_jax.load_procedural('left')
FACES_R = np.asarray(RIGHT.faces)
FACES_L = np.asarray(LEFT.faces)
# The left hand pushed into the right one from above (as in tests/test_geometry_hands.py,
# a little deeper so that nearly every random pose still overlaps).
OVERLAP_OFFSET = np.array([0.1, 0.0, 0.064], np.float32)


def _settings(n):
  return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


def _floats(lo, hi, shape):
  lo, hi = float(np.float32(lo)), float(np.float32(hi))
  return hnp.arrays(np.float32, shape, elements=st.floats(lo, hi, width=32))


ROOT = _floats(-np.pi, np.pi, (3,))
FINGERS = _floats(-1.0, 1.0, (45,))
BETAS = _floats(-3.0, 3.0, (10,))
TRANSL = _floats(-1.0, 1.0, (3,))
# Rotation vectors of norm < pi (scipy's rotvec <-> matrix is float64).
ROTVEC = hnp.arrays(np.float64, (3,), elements=st.floats(-1.8, 1.8))


def _rotation(rotvec):
  return Rotation.from_rotvec(rotvec).as_matrix()


@jax.jit
def _forward(model, pose, betas, transl):
  out = mano_jax.forward(model, pose, betas, transl)
  return out.vertices, out.joints, out.transforms


def _hand(model, root, fingers, betas, transl):
  pose = np.concatenate([root, fingers]).astype(np.float32)
  return [np.asarray(x, np.float64) for x in _forward(model, pose, betas, transl)]


# ----------------------------------------------------------------------------
# mano_jax.forward

@_settings(25)
@given(root=ROOT, fingers=FINGERS, betas=BETAS, transl=TRANSL, shift=TRANSL)
def test_forward_is_finite_with_rigid_frames_and_translation_equivariant(root, fingers, betas,
                                                                         transl, shift):
  verts, joints, tf = _hand(RIGHT, root, fingers, betas, transl)
  assert np.all(np.isfinite(verts)) and np.all(np.isfinite(joints))
  assert np.all(np.isfinite(tf))
  rot = tf[:, :3, :3]
  np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
  np.testing.assert_allclose(tf[:, 3], np.broadcast_to([0, 0, 0, 1.0], (16, 4)), atol=0)
  np.testing.assert_allclose(joints[:16], tf[:, :3, 3], atol=1e-6)  # MANO order: 16 + tips
  moved, moved_joints, _ = _hand(RIGHT, root, fingers, betas, transl + shift)
  np.testing.assert_allclose(moved - verts, np.broadcast_to(shift, verts.shape), atol=2e-6)
  np.testing.assert_allclose(moved_joints - joints, np.broadcast_to(shift, joints.shape),
                             atol=2e-6)


@_settings(25)
@given(root=ROOT, fingers=FINGERS, betas=BETAS, transl=TRANSL, rotvec=ROTVEC,
       left=st.booleans())
def test_forward_rotating_the_root_rotates_the_hand_about_the_wrist(root, fingers, betas, transl,
                                                                    rotvec, left):
  model = LEFT if left else RIGHT
  r = _rotation(rotvec)
  verts, joints, tf = _hand(model, root, fingers, betas, transl)
  root2 = Rotation.from_matrix(r @ _rotation(root.astype(np.float64))).as_rotvec()
  verts2, joints2, tf2 = _hand(model, root2.astype(np.float32), fingers, betas, transl)
  wrist = joints[0]  # the root turns about the wrist joint, which stays put
  np.testing.assert_allclose(joints2[0], wrist, atol=2e-6)
  np.testing.assert_allclose(verts2, (verts - wrist) @ r.T + wrist, atol=2e-5)
  np.testing.assert_allclose(joints2, (joints - wrist) @ r.T + wrist, atol=2e-5)
  np.testing.assert_allclose(tf2[:, :3, :3], r @ tf[:, :3, :3], atol=2e-5)


# ----------------------------------------------------------------------------
# Two hands: penetration volume and collision loss.

SMALL_FINGERS = _floats(-0.4, 0.4, (45,))
SMALL_ROOT = _floats(-0.2, 0.2, (3,))
NUDGE = _floats(-0.01, 0.01, (3,))


def _pair(root_r, fingers_r, root_l, fingers_l, nudge):
  """Right and left hand meshes (V, 3) float32 m, the left pushed into the right."""
  zero = np.zeros(10, np.float32)
  vr = _hand(RIGHT, root_r, fingers_r, zero, np.zeros(3, np.float32))[0]
  vl = _hand(LEFT, root_l, fingers_l, zero, OVERLAP_OFFSET + nudge)[0]
  return vr.astype(np.float32), vl.astype(np.float32)


def _volume(va, vb, faces_a=FACES_R, faces_b=FACES_L):
  return float(geometry.penetration_volume(va, faces_a, vb, faces_b))


@pytest.mark.slow  # 13-22 s; PenVol itself: test_geometry_penetration (default run)
@_settings(12)
@given(root_r=SMALL_ROOT, fingers_r=SMALL_FINGERS, root_l=SMALL_ROOT, fingers_l=SMALL_FINGERS,
       nudge=NUDGE, rotvec=ROTVEC, shift=TRANSL)
def test_penetration_volume_is_invariant_to_moving_both_hands(root_r, fingers_r, root_l,
                                                              fingers_l, nudge, rotvec, shift):
  vr, vl = _pair(root_r, fingers_r, root_l, fingers_l, nudge)
  vol = _volume(vr, vl)
  assert np.isfinite(vol) and vol >= 0.0
  r = _rotation(rotvec).astype(np.float32)
  moved = _volume(vr @ r.T + shift, vl @ r.T + shift)
  # Exact inside tests, the same refined faces: only float noise near the
  # surfaces differs (measured ~1e-6 relative); 1e-9 m^3 = 0.001 cm^3.
  np.testing.assert_allclose(moved, vol, rtol=2e-3, atol=1e-9)
  np.testing.assert_allclose(_volume(vl, vr, FACES_L, FACES_R), vol, rtol=2e-3, atol=1e-9)
  depth = float(geometry.penetration_depth(vr, FACES_R, vl, FACES_L))
  assert np.isfinite(depth) and depth >= 0.0


GRID = 2.0 ** -20  # m; coordinates below 4 m on this grid add exactly in float32


def _on_grid(x):
  return (np.round(np.asarray(x, np.float64) / GRID) * GRID).astype(np.float32)


@jax.jit
def _loss_and_grads(va, vb):
  loss = lambda a, b: geometry.collision_loss(a, FACES_R, b, FACES_L)
  value, (ga, gb) = jax.value_and_grad(loss, argnums=(0, 1))(va, vb)
  return value, ga, gb


@_settings(20)
@given(root_r=SMALL_ROOT, fingers_r=SMALL_FINGERS, root_l=SMALL_ROOT, fingers_l=SMALL_FINGERS,
       nudge=_floats(-0.03, 0.03, (3,)), shift=_floats(-2.0, 2.0, (3,)))
def test_collision_loss_is_translation_invariant(root_r, fingers_r, root_l, fingers_l, nudge,
                                                 shift):
  vr, vl = _pair(root_r, fingers_r, root_l, fingers_l, nudge)
  vr, vl, shift = _on_grid(vr), _on_grid(vl), _on_grid(shift)
  value, ga, gb = (np.asarray(x, np.float64) for x in _loss_and_grads(vr, vl))
  assert np.isfinite(value) and value >= 0.0
  assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb))
  moved, ga2, gb2 = (np.asarray(x, np.float64) for x in _loss_and_grads(vr + shift, vl + shift))
  np.testing.assert_allclose(moved, value, rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(ga2, ga, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(gb2, gb, rtol=1e-5, atol=1e-9)
  # Invariance, differentiated: no gradient along a common translation.
  total = ga.sum(0) + gb.sum(0)
  scale = np.abs(ga).sum() + np.abs(gb).sum()
  np.testing.assert_allclose(total, 0.0, atol=1e-5 * scale + 1e-12)
