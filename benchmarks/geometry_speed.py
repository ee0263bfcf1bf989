"""Speed of the geometry between two hands (CPU): collision loss value+grad on
a batch of hand pairs, JAX vs an equivalent PyTorch loss (when torch is
installed), and penetration volume/depth per hand pair.

    .venv/bin/python benchmarks/geometry_speed.py            # JAX only
    /work/refenv/bin/python benchmarks/geometry_speed.py     # with the torch column

Hands: the procedural MANO-format hand (not MANO) in random poses, the left
one pushed into the right; falls back to open spheres without mano_jax.
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from a2p_jax import geometry
from timing import median_s

DIST, COS, RHO = 0.02, 0.0, 0.01


def hand_pairs(batch, seed=0):
  """(verts_r (B, V, 3), faces_r, verts_l (B, V, 3), faces_l, source name)."""
  rng = np.random.default_rng(seed)
  try:
    import mano_jax
    right, left = mano_jax.load_procedural('right'), mano_jax.load_procedural('left')
    pose = lambda: jnp.asarray(rng.normal(size=(batch, 48)) * 0.1, jnp.float32)  # noqa: E731
    vr = np.asarray(mano_jax.forward(right, pose()).vertices)
    vl = np.asarray(mano_jax.forward(left, pose()).vertices)
    # Left hand above the right one, overlapping by a few mm to a few cm^3.
    shift = np.stack([rng.uniform(0.0, 0.1, batch), rng.uniform(-0.01, 0.01, batch),
                      rng.uniform(0.062, 0.072, batch)], 1).astype(np.float32)
    return vr, np.asarray(right.faces), vl + shift[:, None], np.asarray(left.faces), 'procedural hand'
  except ImportError:
    import trimesh
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.03)
    v, f = np.asarray(m.vertices, np.float32), np.asarray(m.faces)
    f = f[~np.all(v[f][:, :, 2] < -0.02, axis=1)]
    shift = np.stack([rng.uniform(0.05, 0.058, batch), np.zeros(batch), np.zeros(batch)], 1)
    vb = v[None] + shift[:, None].astype(np.float32)
    return np.broadcast_to(v, vb.shape).copy(), f, vb, f, 'open sphere (no mano_jax)'


def jax_collision(va, fa, vb, fb):
  step = jax.jit(jax.value_and_grad(
      lambda a, b: jnp.sum(geometry.collision_loss(a, fa, b, fb, dist_threshold=DIST,
                                                   cos_threshold=COS, rho=RHO)), argnums=(0, 1)))
  va, vb = jnp.asarray(va), jnp.asarray(vb)
  return lambda: step(va, vb), lambda: float(step(va, vb)[0])


def torch_collision(va, fa, vb, fb):
  """The same loss in PyTorch: cdist nearest neighbours + normal test + GMoF."""
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  fa_t, fb_t = torch.as_tensor(fa.astype(np.int64)), torch.as_tensor(fb.astype(np.int64))

  def normals(v, f):
    tri = v[:, f]
    n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    out = torch.zeros_like(v)
    for k in range(3):
      out.index_add_(1, f[:, k], n)
    t = tri - v.mean(1, keepdim=True)[:, None]  # orientation, as geometry.orientation
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
    a = torch.tensor(va, requires_grad=True)
    b = torch.tensor(vb, requires_grad=True)
    with torch.no_grad():
      na, nb = normals(a, fa_t), normals(b, fb_t)
    loss = one_way(a, b, na, nb) + one_way(b, a, nb, na)
    loss.backward()
    return loss

  return step, lambda: float(step())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--volume_pairs', type=int, default=16)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()

  va, fa, vb, fb, source = hand_pairs(args.batch)
  print(f'# {source}: {va.shape[1]} + {vb.shape[1]} vertices, {len(fa)} + {len(fb)} faces; '
        f'jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores')
  rows = []
  jax_step, jax_value = jax_collision(va, fa, vb, fb)
  t_jax = 1e3 * median_s(jax_step, args.repeats)
  try:
    import torch
    torch_step, torch_value = torch_collision(va, fa, vb, fb)
    t_torch = 1e3 * median_s(torch_step, args.repeats)
    np.testing.assert_allclose(jax_value(), torch_value(), rtol=1e-3)  # same loss
    rows.append((f'collision_loss value+grad, batch {args.batch}', t_jax, t_torch,
                 f'{t_torch / t_jax:.1f}x', f'torch {torch.__version__}'))
  except ImportError:
    rows.append((f'collision_loss value+grad, batch {args.batch}', t_jax, None, '-', 'no torch'))

  n = args.volume_pairs
  vol_fn = jax.jit(lambda a, b: geometry.penetration_volume(a, fa, b, fb))
  dep_fn = jax.jit(lambda a, b: geometry.penetration_depth(a, fa, b, fb))
  a, b = jnp.asarray(va[:n]), jnp.asarray(vb[:n])
  t_vol = 1e3 * median_s(lambda: vol_fn(a, b), args.repeats) / n
  t_vol1 = 1e3 * median_s(lambda: vol_fn(a[0], b[0]), args.repeats)
  t_dep = 1e3 * median_s(lambda: dep_fn(a, b), args.repeats) / n
  vols = np.asarray(vol_fn(a, b)) * 1e6
  rows.append((f'penetration_volume per pair (batch {n})', t_vol, None, '-',
               f'overlaps {vols.min():.2f}-{vols.max():.2f} cm^3'))
  rows.append(('penetration_volume, one pair', t_vol1, None, '-', ''))
  rows.append((f'penetration_depth per pair (batch {n})', t_dep, None, '-', ''))

  print(f'| {"case":44s} | {"JAX ms":>8s} | {"PyTorch ms":>10s} | {"speed-up":>8s} | note |')
  print(f'|{"-" * 46}|{"-" * 10}|{"-" * 12}|{"-" * 10}|------|')
  for name, tj, tt, ratio, note in rows:
    tt_s = f'{tt:10.2f}' if tt is not None else f'{"-":>10s}'
    print(f'| {name:44s} | {tj:8.2f} | {tt_s} | {ratio:>8s} | {note} |')


if __name__ == '__main__':
  main()
