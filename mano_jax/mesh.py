"""Mesh helpers: vertex normals and OBJ/PLY export."""

import os

import jax.numpy as jnp
import numpy as np
import trimesh


def vertex_normals(vertices, faces):
  """Area-weighted unit vertex normals.

  vertices (..., V, 3), faces (F, 3) int (concrete or traced) -> (..., V, 3).
  Outward for a mesh
  whose faces are counter-clockwise seen from outside (MANO's convention). A
  vertex with no incident face area gets a zero normal (no NaN).
  """
  vertices = jnp.asarray(vertices)
  faces = jnp.asarray(faces)  # may be traced (faces as a jit argument)
  v0 = vertices[..., faces[:, 0], :]
  v1 = vertices[..., faces[:, 1], :]
  v2 = vertices[..., faces[:, 2], :]
  # The cross product's length is twice the face area: area weighting for free.
  fn = jnp.cross(v1 - v0, v2 - v0)
  normals = jnp.zeros_like(vertices)
  for k in range(3):
    normals = normals.at[..., faces[:, k], :].add(fn)
  sq = jnp.sum(normals * normals, -1, keepdims=True)
  safe = jnp.where(sq > 0, sq, 1.0)
  return jnp.where(sq > 0, normals / jnp.sqrt(safe), 0.0)


def export_mesh(path, vertices, faces, *, vertex_colors=None):
  """Writes one mesh as .obj or .ply (by extension) with trimesh.

  vertices (V, 3) m, faces (F, 3); vertex_colors (V, 3|4) uint8, PLY only.
  """
  vertices = np.asarray(vertices, np.float64)
  faces = np.asarray(faces)
  if vertices.ndim != 2 or vertices.shape[1] != 3:
    raise ValueError(f'export_mesh: vertices must have shape (V, 3), got {vertices.shape}')
  ext = os.path.splitext(os.fspath(path))[1].lower()
  if ext not in ('.obj', '.ply'):
    raise ValueError(f'export_mesh: {path}: extension must be .obj or .ply')
  mesh = trimesh.Trimesh(vertices, faces, vertex_colors=vertex_colors,
                         process=False)
  mesh.export(path)
