"""Face and vertex normals, and mesh orientation, for triangle meshes."""

import jax
import jax.numpy as jnp

# One implementation of vertex normals for the project: mano_jax's.
from mano_jax.mesh import vertex_normals  # noqa: F401

# Below this squared length a normal is treated as zero; keeps sqrt's gradient
# finite on degenerate faces and isolated vertices.
_TINY_SQ = 1e-30


def safe_normalize(x, axis=-1):
  """x / |x| along `axis`, 0 (with a finite gradient) where |x| is ~0."""
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  ok = sq > _TINY_SQ
  # Double where: the unused branch must have a finite gradient too.
  return jnp.where(ok, x * jax.lax.rsqrt(jnp.where(ok, sq, 1.0)), 0.0)


def face_cross(vertices, faces):
  """Unnormalized face normals (..., F, 3): (v1 - v0) x (v2 - v0), length 2*area."""
  tri = vertices[..., faces, :]
  return jnp.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])


def face_normals(vertices, faces):
  """Unit face normals (..., F, 3) for vertices (..., V, 3) and faces (F, 3)."""
  return safe_normalize(face_cross(vertices, faces))


def signed_volume(vertices, faces):
  """Signed volume (...,) in m^3; > 0 for a closed mesh with outward faces.

  Measured from the vertex mean, so for an open mesh (MANO) it is still a
  usable orientation hint.
  """
  centre = jnp.mean(vertices, axis=-2, keepdims=True)
  tri = (vertices - centre)[..., faces, :]
  det = jnp.sum(tri[..., 0, :] * jnp.cross(tri[..., 1, :], tri[..., 2, :]), -1)
  return jnp.sum(det, axis=-1) / 6.0


def orientation(vertices, faces):
  """+1 if the faces point outward, -1 if inward (...,), from the signed volume."""
  return jnp.where(signed_volume(vertices, faces) >= 0, 1.0, -1.0)
