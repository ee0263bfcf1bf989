"""mano_jax: a functional, differentiable MANO hand model in pure jax.numpy.

    import mano_jax
    model = mano_jax.load_procedural('right')   # or mano_jax.load('MANO_RIGHT.pkl')
    out = mano_jax.forward(model, pose, betas, transl)   # out.vertices, out.joints
"""

from mano_jax.io import ManoFileError, load, load_procedural, save_npz
from mano_jax.joints import JOINT_NAMES_BY_ORDER, JOINT_ORDERS
from mano_jax.lbs import ManoOutput, forward, kinematics, pose_rotations, shape_stage, skin
from mano_jax.mesh import export_mesh, vertex_normals
from mano_jax.model import JOINT_NAMES, ManoModel
from mano_jax.rotations import (axis_angle_to_matrix, matrix_to_axis_angle,
                                matrix_to_rot6d, mirror_axis_angle, rot6d_to_matrix)


def mirror_pose(pose):
  """Mirrors an axis-angle pose (..., 3J) between the right and left hand.

  Reflection across the YZ plane (x -> -x), the relation between MANO's left
  and right templates: each rotation vector (a, b, c) -> (a, -b, -c). Exact
  for full (mean-included) poses; for flat_hand_mean=False poses it is exact
  when the two models' hands_mean are mirrors of each other (true for MANO
  and for the procedural hand). Mirror a translation by negating its x.
  """
  return mirror_axis_angle(pose)
