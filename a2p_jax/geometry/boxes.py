"""2D boxes of the hands' projections, for stage 2's overlap gate."""

import jax.numpy as jnp


def box_from_points(points_Nx2):
  """Tight box (..., 4) = (x_min, y_min, x_max, y_max) of points (..., N, 2)."""
  return jnp.concatenate([jnp.min(points_Nx2, -2), jnp.max(points_Nx2, -2)], -1)


def box_iou(box_a, box_b):
  """Intersection over union (...,) of boxes (..., 4) as (x_min, y_min, x_max, y_max).

  0 for disjoint or touching boxes and for two empty boxes (no NaN).
  """
  lo = jnp.maximum(box_a[..., :2], box_b[..., :2])
  hi = jnp.minimum(box_a[..., 2:], box_b[..., 2:])
  inter = jnp.prod(jnp.maximum(hi - lo, 0.0), -1)

  def area(b):
    return jnp.prod(jnp.maximum(b[..., 2:] - b[..., :2], 0.0), -1)

  union = area(box_a) + area(box_b) - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)
