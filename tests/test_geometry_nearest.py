"""The pruned nearest-vertex search (CPU kernel) against brute force:
float64 numpy on random and adversarial hand pairs, and XLA's own float32
dense argmin on sub-ulp near-ties."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from a2p_jax.geometry import cpu_ffi
from a2p_jax.geometry import nearest

try:
  from tests import geometry_meshes as meshes
except ImportError:
  import geometry_meshes as meshes


@pytest.fixture(scope='module')
def hands():
  """16 procedural-hand pairs (NOT MANO): random poses, the left hand pushed
  into the right by a few mm to ~2 cm (as benchmarks/geometry_speed.py)."""
  rng = np.random.default_rng(0)
  right, left = mano_jax.load_procedural('right'), mano_jax.load_procedural('left')
  pose = lambda: jnp.asarray(rng.normal(size=(16, 48)) * 0.1, jnp.float32)  # noqa: E731
  vr = np.asarray(mano_jax.forward(right, pose()).vertices)
  vl = np.asarray(mano_jax.forward(left, pose()).vertices)
  shift = np.stack([rng.uniform(0.0, 0.1, 16), rng.uniform(-0.01, 0.01, 16),
                    rng.uniform(0.062, 0.072, 16)], 1).astype(np.float32)
  return vr, np.asarray(right.faces), vl + shift[:, None], np.asarray(left.faces)


def _brute64(p, q):
  """float64 nearest both ways (first index on ties) and the distances."""
  d = ((p[..., :, None, :].astype(np.float64) - q[..., None, :, :]) ** 2).sum(-1)
  return np.argmin(d, -1), np.argmin(d, -2), np.min(d, -1), np.min(d, -2)


def _search(p, q, fp, fq, max_dist=None):
  fn = jax.jit(lambda a, b: nearest.nearest_both_ways(a, b, max_dist=max_dist, faces_p=fp,
                                                      faces_q=fq))
  return tuple(np.asarray(x) for x in fn(jnp.asarray(p), jnp.asarray(q)))


def _adversarial(vr, fr, vl, fl):
  """(name, p, q) hand pairs built to trip a pruned search."""
  out = [('random', vr, vl)]
  # Touching: some left vertices exactly on right vertices (zero distances).
  touch = vl.copy()
  touch[::7] = vr[::7]
  out.append(('touching', vr, touch))
  # Exact ties: left vertex 1 duplicated onto others (the lowest index must win).
  ties = vl.copy()
  ties[500:520] = ties[1]
  out.append(('exact ties', vr, ties))
  # Near ties: copies moved by 1e-5 of their distance to the nearest right
  # vertex (far above float32 rounding, so float64 ranks them the same).
  near = vl.copy()
  i, _, d, _ = _brute64(vl[40:60], vr)
  away = vl[40:60] - vr[i]
  near[600:620] = vl[40:60] + away * np.float32(1e-5)
  out.append(('near ties', vr, near))
  out.append(('far apart', vr, vl + np.float32([1.0, 0.0, 0.0])))
  out.append(('deep overlap', vr, vr + np.float32([0.001, 0.0, 0.0])))
  out.append(('same mesh', vr, vr.copy()))
  return out


def test_clusters_partition_the_vertices():
  v, f = meshes.open_sphere(subdivisions=3)
  ids = nearest.clusters(f, len(v))
  assert ids.shape[1] == nearest.CLUSTER
  assert sorted(set(ids.reshape(-1).tolist())) == list(range(len(v)))
  for row in ids:  # members ascending, then the first one repeated
    k = len(set(row.tolist()))
    assert np.all(np.diff(row[:k]) > 0) and np.all(row[k:] == row[0])
  # Connected patches: each cluster's extent is small next to the sphere's.
  extent = np.ptp(v[ids], axis=1).max(-1)
  assert np.median(extent) < 0.5 * np.ptp(v, 0).max()
  assert np.array_equal(nearest.clusters(None, 40, 16)[:, 0], [0, 16, 32])
  with pytest.raises(ValueError, match='faces index'):
    nearest.clusters(f, 10)


def test_equals_float64_brute_force_on_hand_pairs(hands):
  vr, fr, vl, fl = hands
  for k in range(4):
    for name, p, q in _adversarial(vr[k], fr, vl[k], fl):
      j_pq, j_qp = _search(p, q, fr, fl)
      r_pq, r_qp, _, _ = _brute64(p, q)
      np.testing.assert_array_equal(j_pq, r_pq, err_msg=name)
      np.testing.assert_array_equal(j_qp, r_qp, err_msg=name)


@pytest.mark.parametrize('max_dist', [0.002, 0.02, 0.05])
def test_within_max_dist_never_misses_a_pair(hands, max_dist):
  vr, fr, vl, fl = hands
  for k in range(4):
    for name, p, q in _adversarial(vr[k], fr, vl[k], fl):
      j_pq, j_qp = _search(p, q, fr, fl, max_dist)
      r_pq, r_qp, d_pq, d_qp = _brute64(p, q)
      for j, r, d in ((j_pq, r_pq, d_pq), (j_qp, r_qp, d_qp)):
        # Points within float32 rounding of max_dist may go either way.
        clear = np.abs(d - max_dist ** 2) > 1e-5 * max_dist ** 2
        inside = d < max_dist ** 2
        np.testing.assert_array_equal(j[clear & inside], r[clear & inside], err_msg=name)
        assert np.all(j[clear & ~inside] == -1), name


def test_max_dist_boundary_is_strict():
  # Exactly representable: squared distances 0.0625 (= 0.25^2) and 0.25.
  p = np.float32([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  q = np.float32([[0.0, 0.25, 0.0], [0.0, 0.5, 0.0]])
  assert _search(p, q, None, None, 0.25)[0].tolist() == [-1, -1]
  assert _search(p, q, None, None, 0.2500001)[0].tolist() == [0, -1]
  assert _search(p, q, None, None, 0.2500001)[1].tolist() == [0, -1]


def _fma_sq(p, q):
  """Squared distances as XLA:CPU compiles sq_dists at its default optimisation
  (contracted to fma(dz, dz, fma(dx, dx, dy * dy)), float32), FMA emulated in
  x87 extended precision (products of float32 are exact there)."""
  def fma(a, b, c):
    return (a.astype(np.longdouble) * b + c).astype(np.float32)
  dx, dy, dz = (p[..., :, None, k] - q[..., None, :, k] for k in range(3))
  return fma(dz, dz, fma(dx, dx, dy * dy))


def _near_tie_triples(seed=3, n=4000):
  """p (n, 1, 3), q (n, 2, 3) float32: the two q nearly equidistant from p."""
  rng = np.random.default_rng(seed)
  p = rng.uniform(-0.05, 0.05, (n, 1, 3)).astype(np.float32)
  q = p + rng.normal(size=(n, 2, 3)).astype(np.float32) * 0.01
  scale = np.linalg.norm(q[:, 0] - p[:, 0], axis=-1) / np.linalg.norm(q[:, 1] - p[:, 0], axis=-1)
  q[:, 1] = p[:, 0] + (q[:, 1] - p[:, 0]) * scale[:, None].astype(np.float32)
  return p, q


def test_sub_ulp_near_ties_follow_the_fma_rounding():
  # Within an ulp or two the two distances' order depends on how the float32
  # formula is rounded; the kernel ranks exactly as XLA's default compile of
  # the dense matrix does (fused multiply-adds).
  assert np.finfo(np.longdouble).nmant >= 63, 'needs x87 extended precision'
  p, q = _near_tie_triples()
  sq = _fma_sq(p, q)[:, 0]
  close = np.abs(sq[:, 0] - sq[:, 1]) <= 2 * np.spacing(sq[:, 0])
  assert close.sum() > 100
  got = np.asarray(jax.jit(lambda a, b: nearest.nearest_both_ways(a, b)[0])(p, q))[:, 0]
  np.testing.assert_array_equal(got[close], np.argmin(sq, -1)[close])
  assert len(set(got[close].tolist())) == 2


def test_default_xla_dense_argmin_equals_the_kernel_on_near_ties():
  # In a fresh process without the test session's fast-compile XLA flags
  # (at -O0 XLA does not fuse the multiply-adds): the jitted dense argmin
  # of the implementation before issue 20 picks what the kernel picks.
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from a2p_jax.geometry import nearest
      from tests.test_geometry_nearest import _near_tie_triples
      p, q = _near_tie_triples()
      dense = jax.jit(lambda a, b: jnp.argmin(nearest.sq_dists(a, b), -1))(p, q)
      kernel = jax.jit(lambda a, b: nearest.nearest_both_ways(a, b)[0])(p, q)
      print(int(np.sum(np.asarray(dense) != np.asarray(kernel))))
  """)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', code], env=env, cwd=root, capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip().splitlines()[-1] == '0', out.stdout + out.stderr


def test_cpu_kernel_matches_dense_path_batched_and_vmapped(hands):
  vr, fr, vl, fl = hands
  for max_dist in (None, 0.02):
    max_sq = None if max_dist is None else jnp.float32(max_dist) ** 2
    dense = [np.asarray(x) for x in jax.jit(nearest.nearest_brute)(vr, vl, max_sq)]
    # One kernel call over the batch (threaded when numba allows it)...
    batched = _search(vr, vl, fr, fl, max_dist)
    # ...and per pair under vmap (one call per pair), without faces.
    fn = jax.vmap(lambda a, b: nearest.nearest_both_ways(a, b, max_dist=max_dist))
    mapped = [np.asarray(x) for x in jax.jit(fn)(vr, vl)]
    for d, b, m in zip(dense, batched, mapped):
      np.testing.assert_array_equal(b, d)
      np.testing.assert_array_equal(m, d)
  assert isinstance(cpu_ffi.threads_ok(), bool)


def test_shapes_and_float64_inputs():
  p, q = np.zeros((2, 5, 3), np.float32), np.ones((2, 7, 3), np.float32)
  j_pq, j_qp = nearest.nearest_both_ways(p, q)
  assert j_pq.shape == (2, 5) and j_qp.shape == (2, 7) and j_pq.dtype == jnp.int32
  with pytest.raises(ValueError, match='leading dims'):
    nearest.nearest_both_ways(p, q[0])
  with jax.enable_x64():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(40, 3))
    j, _ = nearest.nearest_both_ways(jnp.asarray(a), jnp.asarray(b))  # the dense path
    np.testing.assert_array_equal(j, _brute64(a, b)[0])
