"""Collision loss value+gradient and the nearest-vertex search per hand pair
(CPU, float32): the implementation before issue 20 (a copy below), the
current one, and the same loss in PyTorch, side by side in one run.

    .venv/bin/python benchmarks/collision_speed.py [--batches 1 64] [--repeats 30]

Rows are jitted (PyTorch: eager), timed interleaved call by call (timing.py),
medians; ms per call and per pair. Before timing, the current loss and
gradient are checked against the copy of the old one (loss to 1e-6
relative, gradient to 1e-6 of its largest entry) and the nearest indices
against the dense argmin (equal). Hands: the procedural MANO-format hand
(not MANO; 833 vertices a hand) in random poses, the left one pushed into
the right by a few mm to ~2 cm (geometry_speed.hand_pairs).
"""

import argparse
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

from a2p_jax.geometry import collision
from a2p_jax.geometry import nearest
from a2p_jax.geometry import normals as normals_lib
from a2p_jax.geometry import pairs
from geometry_speed import hand_pairs
from timing import interleaved_median_s

DIST, COS, RHO = 0.02, 0.0, 0.01


# --- the implementation before issue 20 (a2p_jax/geometry/collision.py at 7e361ab) ---


def _old_sq_dists(p, q):
  p = jax.lax.stop_gradient(p)
  q = jax.lax.stop_gradient(q)
  return ((p[:, None, 0] - q[None, :, 0]) ** 2 + (p[:, None, 1] - q[None, :, 1]) ** 2
          + (p[:, None, 2] - q[None, :, 2]) ** 2)


def old_nearest_both_ways(p, q):
  sq = _old_sq_dists(p, q)
  return jnp.argmin(sq, axis=1), jnp.argmin(sq, axis=0)


def _old_one_way(p, q, n_p, n_q, j, dist_threshold, cos_threshold, rho):
  diff = p - q[j]
  r_sq = jnp.sum(diff * diff, -1)
  nq = n_q[j]
  cos = jnp.sum(n_p * nq, -1)
  behind = jnp.sum(diff * nq, -1) < -collision.CONTACT_EPS
  hit = (r_sq < dist_threshold ** 2) & (cos < cos_threshold) & behind
  return jnp.sum(jnp.where(hit, collision.gmof(r_sq, rho), 0.0))


def _old_pair(va, vb, faces_a, faces_b, dist_threshold, cos_threshold, rho):
  na = normals_lib.vertex_normals(va, faces_a) * normals_lib.orientation(va, faces_a)
  nb = normals_lib.vertex_normals(vb, faces_b) * normals_lib.orientation(vb, faces_b)
  na, nb = jax.lax.stop_gradient(na), jax.lax.stop_gradient(nb)
  args = (dist_threshold, cos_threshold, rho)
  j_ab, j_ba = old_nearest_both_ways(va, vb)
  return _old_one_way(va, vb, na, nb, j_ab, *args) + _old_one_way(vb, va, nb, na, j_ba, *args)


def old_collision_loss(verts_a, faces_a, verts_b, faces_b):
  return _old_jit(verts_a, jnp.asarray(faces_a), verts_b, jnp.asarray(faces_b), DIST, COS, RHO)


@jax.jit
def _old_jit(verts_a, faces_a, verts_b, faces_b, dist_threshold, cos_threshold, rho):
  fn = lambda a, b: _old_pair(a, b, faces_a, faces_b, dist_threshold, cos_threshold, rho)  # noqa: E731
  return pairs.map_pairs(fn, verts_a, verts_b)


# --- PyTorch: cdist nearest neighbours + the same normal tests and GMoF ---


def torch_step(va, fa, vb, fb):
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  fa_t, fb_t = torch.as_tensor(fa.astype(np.int64)), torch.as_tensor(fb.astype(np.int64))
  a0, b0 = torch.tensor(np.array(va)), torch.tensor(np.array(vb))

  def normals(v, f):
    tri = v[:, f]
    n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    out = torch.zeros_like(v)
    for k in range(3):
      out.index_add_(1, f[:, k], n)
    t = tri - v.mean(1, keepdim=True)[:, None]  # orientation, as normals.orientation
    vol = (t[:, :, 0] * torch.cross(t[:, :, 1], t[:, :, 2], dim=-1)).sum((-1, -2))
    sign = torch.where(vol >= 0, 1.0, -1.0)[:, None, None]
    return torch.nn.functional.normalize(out, dim=-1) * sign

  def one_way(p, q, n_p, n_q):
    j = torch.cdist(p.detach(), q.detach()).argmin(-1)
    qj = torch.gather(q, 1, j[..., None].expand(-1, -1, 3))
    nq = torch.gather(n_q, 1, j[..., None].expand(-1, -1, 3))
    diff = p - qj
    r2 = (diff * diff).sum(-1)
    hit = (r2 < DIST ** 2) & ((n_p * nq).sum(-1) < COS) & ((diff * nq).sum(-1) < -1e-6)
    return torch.where(hit, RHO ** 2 * r2 / (r2 + RHO ** 2), torch.zeros_like(r2)).sum()

  def step():
    a = a0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    with torch.no_grad():
      na, nb = normals(a, fa_t), normals(b, fb_t)
    loss = one_way(a, b, na, nb) + one_way(b, a, nb, na)
    loss.backward()
    return loss.detach().numpy(), a.grad.numpy(), b.grad.numpy()

  return step, torch.__version__


def value_and_grad(loss_fn, fa, fb):
  return jax.jit(jax.value_and_grad(
      lambda a, b: jnp.sum(loss_fn(a, fa, b, fb)), argnums=(0, 1)))


def check_same(old, new, what):
  (l0, (ga0, gb0)), (l1, (ga1, gb1)) = old, new
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6, err_msg=what)
  for g0, g1 in ((ga0, ga1), (gb0, gb1)):
    scale = float(np.max(np.abs(g0))) or 1.0
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), rtol=0, atol=1e-6 * scale,
                               err_msg=what)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batches', type=int, nargs='+', default=[1, 64])
  parser.add_argument('--repeats', type=int, default=30)
  args = parser.parse_args()
  try:
    import torch  # noqa: F401
    have_torch = True
  except ImportError:
    have_torch = False
  print(f'# collision search and loss, {platform.machine()} ({os.cpu_count()} cores), '
        f'jax {jax.__version__} on {jax.devices()[0].platform}, float32, medians of '
        f'{args.repeats}, ms per call (ms per pair)')
  print('\n| case | batch | before (copy of 7e361ab) | now | PyTorch | before / now |')
  print('|---|---:|---:|---:|---:|---:|')
  for batch in args.batches:
    va, fa, vb, fb, source = hand_pairs(batch)
    a, b = jnp.asarray(va), jnp.asarray(vb)
    if batch == 1:
      a, b, va, vb = a[0], b[0], va[:1], vb[:1]
    old_step = value_and_grad(old_collision_loss, fa, fb)
    new_step = value_and_grad(collision.collision_loss, fa, fb)
    check_same(old_step(a, b), new_step(a, b), f'loss/grad differ at batch {batch}')
    nn_old = jax.jit(lambda p, q: pairs.map_pairs(old_nearest_both_ways, p, q))
    nn_new = jax.jit(lambda p, q: collision.nearest_both_ways(p, q, faces_p=fa, faces_q=fb))
    nn_thr = jax.jit(lambda p, q: collision.nearest_both_ways(p, q, max_dist=DIST, faces_p=fa,
                                                              faces_q=fb))
    for x, y in zip(nn_old(a, b), nn_new(a, b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(nearest.nearest_brute(a, b, jnp.float32(DIST) ** 2), nn_thr(a, b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    fns = {'loss old': lambda: old_step(a, b), 'loss new': lambda: new_step(a, b),
           'nn old': lambda: nn_old(a, b), 'nn new': lambda: nn_new(a, b),
           'nn thr': lambda: nn_thr(a, b)}
    torch_version = None
    if have_torch:
      t_step, torch_version = torch_step(va, fa, vb, fb)
      np.testing.assert_allclose(t_step()[0], float(new_step(a, b)[0]), rtol=1e-4)
      fns['loss torch'] = t_step
    ms = {k: v * 1e3 for k, v in interleaved_median_s(fns, args.repeats, warmup=2).items()}

    def cell(t):
      return f'{t:.3f} ({t / batch:.4f})' if batch > 1 else f'{t:.3f}'

    rows = [('collision_loss value+grad', 'loss old', 'loss new', 'loss torch'),
            ('nearest_both_ways (all vertices)', 'nn old', 'nn new', None),
            (f'nearest_both_ways(max_dist={DIST})', 'nn old', 'nn thr', None)]
    for name, k_old, k_new, k_torch in rows:
      t_torch = cell(ms[k_torch]) if k_torch in ms else '-'
      print(f'| {name} | {batch} | {cell(ms[k_old])} | {cell(ms[k_new])} | {t_torch} | '
            f'{ms[k_old] / ms[k_new]:.1f}x |')
  print(f'\n{source}; torch {torch_version or "not installed"}; before = dense both-ways argmin '
        f'(one matrix); now = pruned exact search (a2p_jax/geometry/nearest.py) in an XLA '
        f'FFI kernel.')


if __name__ == '__main__':
  main()
