"""Mapping a per-pair function over the leading batch dims of two meshes."""

import jax
import jax.numpy as jnp


def map_pairs(fn, verts_a, verts_b):
  """fn(va (Va, 3), vb (Vb, 3)) -> pytree, over broadcast leading dims (...)."""
  verts_a, verts_b = jnp.asarray(verts_a), jnp.asarray(verts_b)
  for name, v in (('verts_a', verts_a), ('verts_b', verts_b)):
    if v.ndim < 2 or v.shape[-1] != 3:
      raise ValueError(f'{name} must have shape (..., V, 3), got {v.shape}')
  batch = jnp.broadcast_shapes(verts_a.shape[:-2], verts_b.shape[:-2])
  if not batch:
    return fn(verts_a, verts_b)
  va = jnp.broadcast_to(verts_a, batch + verts_a.shape[-2:]).reshape((-1,) + verts_a.shape[-2:])
  vb = jnp.broadcast_to(verts_b, batch + verts_b.shape[-2:]).reshape((-1,) + verts_b.shape[-2:])
  out = jax.vmap(fn)(va, vb)
  return jax.tree.map(lambda x: x.reshape(batch + x.shape[1:]), out)
