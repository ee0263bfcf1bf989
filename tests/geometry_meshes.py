"""Small test meshes for the geometry tests (metres)."""

import numpy as np
import trimesh


def sphere(radius=0.01, subdivisions=3, centre=(0.0, 0.0, 0.0)):
  """Closed icosphere: vertices (V, 3) float32, faces (F, 3)."""
  m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
  return (np.asarray(m.vertices) + centre).astype(np.float32), np.asarray(m.faces)


def open_sphere(radius=0.01, subdivisions=3, centre=(0.0, 0.0, 0.0), cut=-0.7):
  """Icosphere with the cap below z = cut * radius removed (one boundary loop)."""
  v, f = sphere(radius, subdivisions)
  keep = ~np.all(v[f][:, :, 2] < cut * radius, axis=1)
  return (v + np.asarray(centre, np.float32)).astype(np.float32), f[keep]


def box(extents=(0.02, 0.02, 0.02), centre=(0.0, 0.0, 0.0), max_edge=None):
  """Closed box; with max_edge (m) its faces are split down to that size."""
  m = trimesh.creation.box(extents=extents)
  v, f = np.asarray(m.vertices), np.asarray(m.faces)
  if max_edge is not None:
    v, f = trimesh.remesh.subdivide_to_size(v, f, max_edge=max_edge)
  return (v + centre).astype(np.float32), np.asarray(f)


def lens_volume(r1, r2, d):
  """Exact intersection volume (m^3) of two balls at centre distance d."""
  if d >= r1 + r2:
    return 0.0
  return (np.pi * (r1 + r2 - d) ** 2
          * (d * d + 2 * d * r1 - 3 * r1 * r1 + 2 * d * r2 + 6 * r1 * r2 - 3 * r2 * r2) / (12 * d))


def boolean_volume(va, fa, vb, fb):
  """Exact intersection volume (m^3) of two closed meshes with manifold3d."""
  a = trimesh.Trimesh(np.asarray(va, np.float64), fa, process=False)
  b = trimesh.Trimesh(np.asarray(vb, np.float64), fb, process=False)
  out = trimesh.boolean.intersection([a, b], engine='manifold')
  return float(out.volume) if len(out.faces) else 0.0
