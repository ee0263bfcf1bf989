"""The MANO model as an immutable pytree.

Array fields are pytree leaves (so a model can be passed through `jax.jit`
or closed over); the kinematic tree, side and fingertip ids are static.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

# MANO's 16 joints: wrist; index 1-3; middle 4-6; pinky 7-9; ring 10-12;
# thumb 13-15 (the order of the official files' kinematic tree).
JOINT_NAMES = (
    'wrist',
    'index1', 'index2', 'index3',
    'middle1', 'middle2', 'middle3',
    'pinky1', 'pinky2', 'pinky3',
    'ring1', 'ring2', 'ring3',
    'thumb1', 'thumb2', 'thumb3',
)
# Fingertip vertices of the official MANO mesh (thumb, index, middle, ring,
# pinky), as used by InterWild / InterHand2.6M tools.
MANO_TIP_VERTEX_IDS = (745, 317, 445, 556, 673)
MANO_NUM_VERTICES = 778


@dataclasses.dataclass(frozen=True)
class ManoModel:
  """One MANO hand (one side). Shapes use V vertices, J joints, B betas.

  v_template (V, 3) m; shapedirs (V, 3, B); posedirs (V, 3, 9 (J-1));
  J_regressor (J, V) dense; weights (V, J); faces (F, 3) int32;
  hands_components (C, 3 (J-1)) pose PCA basis (rows); hands_mean (3 (J-1),).
  parents: tuple, parents[0] == -1. tip_ids: 5 vertex ids (thumb, index,
  middle, ring, pinky). side: 'right' | 'left'. name: where it came from.
  """
  v_template: jax.Array
  shapedirs: jax.Array
  posedirs: jax.Array
  J_regressor: jax.Array
  weights: jax.Array
  faces: jax.Array
  hands_components: jax.Array
  hands_mean: jax.Array
  # Derived layouts, filled by `with_derived` (make_model, load, replace):
  # posedirs / shapedirs as (K, 3 V) matrices with columns ordered (xyz,
  # vertex), the layout the channels-first skinning in lbs multiplies by
  # (nothing transposed per call: inside a scan or while loop, where the
  # model arrays are loop operands rather than constants, XLA would redo a
  # transpose every iteration), and the joint regressor applied to the
  # template and the shape blend shapes. None -> computed on the fly.
  posedirs_cf: Optional[jax.Array] = None
  shapedirs_cf: Optional[jax.Array] = None
  J_template: Optional[jax.Array] = None
  J_shapedirs: Optional[jax.Array] = None
  parents: tuple = dataclasses.field(metadata=dict(static=True), default=())
  tip_ids: tuple = dataclasses.field(metadata=dict(static=True), default=())
  side: str = dataclasses.field(metadata=dict(static=True), default='right')
  name: str = dataclasses.field(metadata=dict(static=True), default='')

  @property
  def num_vertices(self) -> int:
    return self.v_template.shape[0]

  @property
  def num_joints(self) -> int:
    return len(self.parents)

  @property
  def num_betas(self) -> int:
    return self.shapedirs.shape[-1]

  def astype(self, dtype) -> 'ManoModel':
    """Float leaves as `dtype` jax arrays on the default device (faces stay int)."""
    def cast(x):
      x = jnp.asarray(x)
      return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree_util.tree_map(cast, self)

  def replace(self, **kwargs) -> 'ManoModel':
    """A copy with some fields changed; derived layouts are recomputed."""
    return dataclasses.replace(self, **kwargs).with_derived()

  def with_derived(self) -> 'ManoModel':
    """Fills the derived layout fields from the primary arrays (numpy)."""
    f64 = lambda x: np.asarray(x, np.float64)
    sd, pd = f64(self.shapedirs), f64(self.posedirs)
    jr, vt = f64(self.J_regressor), f64(self.v_template)
    nv = vt.shape[0]
    return dataclasses.replace(
        self,
        posedirs_cf=np.ascontiguousarray(pd.transpose(2, 1, 0).reshape(-1, 3 * nv)),
        shapedirs_cf=np.ascontiguousarray(sd.transpose(2, 1, 0).reshape(-1, 3 * nv)),
        J_template=jr @ vt,
        J_shapedirs=np.einsum('jv,vcb->jcb', jr, sd))


jax.tree_util.register_dataclass(
    ManoModel,
    data_fields=['v_template', 'shapedirs', 'posedirs', 'J_regressor',
                 'weights', 'faces', 'hands_components', 'hands_mean',
                 'posedirs_cf', 'shapedirs_cf', 'J_template', 'J_shapedirs'],
    meta_fields=['parents', 'tip_ids', 'side', 'name'])


def validate(arrays: dict, *, source: str, parents: tuple,
             tip_ids: Optional[tuple]) -> None:
  """Checks shapes and values of a model's arrays; errors name `source` and the key."""
  def fail(key, msg):
    raise ValueError(f'{source}: key {key!r}: {msg}')

  num_joints = len(parents)
  if num_joints < 2 or parents[0] != -1:
    fail('kintree_table', f'root must have parent -1, got parents {parents}')
  for j, p in enumerate(parents[1:], start=1):
    if not 0 <= p < j:
      fail('kintree_table', f'joint {j} has parent {p}; parents must precede '
           'their children')
  vt = arrays['v_template']
  if vt.ndim != 2 or vt.shape[1] != 3:
    fail('v_template', f'expected shape (V, 3), got {vt.shape}')
  nv = vt.shape[0]
  npose = 9 * (num_joints - 1)
  expected = {
      'shapedirs': (nv, 3, None),
      'posedirs': (nv, 3, npose),
      'J_regressor': (num_joints, nv),
      'weights': (nv, num_joints),
      'hands_components': (None, 3 * (num_joints - 1)),
      'hands_mean': (3 * (num_joints - 1),),
  }
  for key, shape in expected.items():
    got = arrays[key].shape
    if len(got) != len(shape) or any(
        s is not None and g != s for g, s in zip(got, shape)):
      want = tuple('*' if s is None else s for s in shape)
      fail(key, f'expected shape {want}, got {got}')
  for key in ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights',
              'hands_components', 'hands_mean'):
    if not np.all(np.isfinite(arrays[key])):
      fail(key, 'contains NaN or Inf')
  f = arrays['faces']
  if f.ndim != 2 or f.shape[1] != 3:
    fail('f', f'expected shape (F, 3), got {f.shape}')
  if f.size and (f.min() < 0 or f.max() >= nv):
    fail('f', f'vertex index out of range [0, {nv})')
  if tip_ids is not None:
    if len(tip_ids) != 5 or min(tip_ids) < 0 or max(tip_ids) >= nv:
      fail('tip_ids', f'expected 5 vertex ids in [0, {nv}), got {tip_ids}')


def make_model(arrays: dict, *, parents, side: str, tip_ids, name: str,
               source: str) -> ManoModel:
  """Validates numpy arrays and wraps them in a ManoModel (float64 numpy leaves)."""
  parents = tuple(int(p) for p in parents)
  tip_ids = tuple(int(t) for t in tip_ids)
  if side not in ('right', 'left'):
    raise ValueError(f'{source}: side must be "right" or "left", got {side!r}')
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  validate(arrays, source=source, parents=parents, tip_ids=tip_ids)
  f64 = lambda k: np.ascontiguousarray(arrays[k], dtype=np.float64)
  return ManoModel(
      v_template=f64('v_template'), shapedirs=f64('shapedirs'),
      posedirs=f64('posedirs'), J_regressor=f64('J_regressor'),
      weights=f64('weights'),
      faces=np.ascontiguousarray(arrays['faces'], dtype=np.int32),
      hands_components=f64('hands_components'),
      hands_mean=f64('hands_mean'),
      parents=parents, tip_ids=tip_ids, side=side, name=name).with_derived()
