"""Geometry between two hand meshes: normals, sealing, collision loss,
penetration metrics and 2D box overlap. Metres inside."""

from a2p_jax.geometry.boxes import box_from_points
from a2p_jax.geometry.boxes import box_iou
from a2p_jax.geometry.collision import collision_loss
from a2p_jax.geometry.collision import gmof
from a2p_jax.geometry.normals import face_normals
from a2p_jax.geometry.normals import vertex_normals
from a2p_jax.geometry.penetration import hand_gap
from a2p_jax.geometry.penetration import penetrates
from a2p_jax.geometry.penetration import penetration_depth
from a2p_jax.geometry.penetration import penetration_volume
from a2p_jax.geometry.penetration import proximity
from a2p_jax.geometry.seal import Sealer
from a2p_jax.geometry.seal import boundary_loops
from a2p_jax.geometry.seal import make_sealer
from a2p_jax.geometry.seal import seal
