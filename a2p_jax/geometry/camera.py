"""The pinhole camera every layer uses: u = fx x / z + px, v = fy y / z + py."""

import jax
import jax.numpy as jnp
import numpy as np


def project(points_cam, focal, princpt):
  """(..., 3) camera-space points (any unit) -> (..., 2) pixels (u, v).

  jax arrays (or tracers) in: jax out, in their dtype (jit/grad friendly);
  anything else: numpy float64. focal and princpt (2,) or broadcastable to
  (..., 2) (leading axes are added explicitly, so jax's rank-promotion
  check is satisfied)."""
  if not any(isinstance(a, jax.Array) for a in (points_cam, focal, princpt)):
    points_cam = np.asarray(points_cam, np.float64)
    return (points_cam[..., :2] / points_cam[..., 2:3] * np.asarray(focal, np.float64)
            + np.asarray(princpt, np.float64))
  points_cam = jnp.asarray(points_cam)
  uv = points_cam[..., :2] / points_cam[..., 2:3]
  lift = lambda a: jnp.reshape(jnp.asarray(a), (1,) * (uv.ndim - jnp.ndim(a)) + jnp.shape(a))
  return uv * lift(focal) + lift(princpt)
