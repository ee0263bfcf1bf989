"""CPU kernels in numba, called from jitted JAX code through XLA's typed FFI.

Some geometry (nearest vertices, ray tests) is irregular work that XLA:CPU
runs 10-100x slower than a plain loop: every gather, scatter and compaction
costs nanoseconds per element. On the CPU those steps run as numba-compiled
FFI handlers inside the XLA program (no Python, no GIL, ~1 us per call);
other backends keep the jnp versions (`on_cpu` picks at lowering time).

A handler is a numba `cfunc` taking an `XLA_FFI_CallFrame*` and returning
NULL (success). The structs are read by byte offset from XLA's C API header
(jaxlib/include/xla/ffi/api/c_api.h, API 0.x): their layout is the ABI that
header promises to keep. Handlers answer XLA's metadata query, run only at
the execute stage and trust the shapes the Python side declared (callers
check shapes before `call`).
"""

import ctypes
import functools
import threading

import jax
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

# XLA_FFI_API_MAJOR / MINOR of the header the offsets below come from.
_API_MAJOR, _API_MINOR = 0, 3
_STAGE_EXECUTE = 3
_EXT_METADATA = 1
# Byte offsets (64-bit): XLA_FFI_CallFrame.
_FRAME_EXTENSION, _FRAME_STAGE = 8, 32
_FRAME_ARGS, _FRAME_RETS = 72, 112  # the void** inside XLA_FFI_Args / _Rets
# XLA_FFI_Buffer: data pointer, rank, dims pointer.
_BUF_DATA, _BUF_RANK, _BUF_DIMS = 24, 32, 40

HANDLER_SIG = types.voidptr(types.voidptr)


@intrinsic
def _ptr(typingctx, addr):
  """int64 address -> void*."""
  sig = types.voidptr(types.int64)

  def codegen(context, builder, signature, args):
    return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

  return sig, codegen


@intrinsic
def _addr(typingctx, ptr):
  """void* -> int64 address."""
  sig = types.int64(types.voidptr)

  def codegen(context, builder, signature, args):
    return builder.ptrtoint(args[0], context.get_value_type(types.int64))

  return sig, codegen


@numba.njit(inline='always')
def _i64(addr):
  return numba.carray(_ptr(addr), (1,), np.int64)[0]


@numba.njit(inline='always')
def _i32(addr):
  return numba.carray(_ptr(addr), (1,), np.int32)[0]


@numba.njit
def begin(frame):
  """True when the handler should run; answers the metadata query (False)."""
  base = _addr(frame)
  ext = _i64(base + _FRAME_EXTENSION)
  if ext != 0 and _i32(ext + 8) == _EXT_METADATA:
    meta = _i64(ext + 24)
    # XLA_FFI_Metadata: api_version {struct_size, extension_start, major,
    # minor} at 8, traits at 32, state_type_id at 40.
    words = numba.carray(_ptr(meta), (6,), np.int64)
    words[1] = 24
    words[2] = 0
    halves = numba.carray(_ptr(meta + 24), (4,), np.int32)
    halves[0] = _API_MAJOR
    halves[1] = _API_MINOR
    halves[2] = 0  # traits
    words[5] = 0  # XLA_FFI_UNKNOWN_TYPE_ID
    return False
  return _i32(base + _FRAME_STAGE) == _STAGE_EXECUTE


@numba.njit(inline='always')
def _buffer(frame, table, i):
  buf = _i64(_i64(_addr(frame) + table) + 8 * i)
  return _i64(buf + _BUF_DATA), _i64(buf + _BUF_RANK), _i64(buf + _BUF_DIMS)


@numba.njit(inline='always')
def dims(frame, i, ret=False):
  """Dimensions (int64 array) of argument i (or result i)."""
  _, rank, d = _buffer(frame, _FRAME_RETS if ret else _FRAME_ARGS, i)
  return numba.carray(_ptr(d), (rank,), np.int64)


@numba.njit(inline='always')
def data(frame, i, ret=False):
  """void* to the data of argument i (or result i)."""
  return _ptr(_buffer(frame, _FRAME_RETS if ret else _FRAME_ARGS, i)[0])


@numba.njit(inline='always')
def lead(d, trailing):
  """Product of all but the last `trailing` dims (a batch size)."""
  n = 1
  for k in range(d.size - trailing):
    n *= d[k]
  return n


@numba.njit(inline='always')
def null():
  return _ptr(0)


_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def threads_ok():
  """True when numba's parallel loops may run here: its threading layer is
  one that allows launches from several threads at once (OpenMP or TBB;
  XLA may run kernels concurrently). Kernels fall back to one thread."""

  @numba.njit(parallel=True)
  def probe(x):
    total = 0.0
    for i in numba.prange(x.size):
      total += x[i]
    return total

  try:
    probe(np.ones(4))
  except Exception:  # no threading layer at all
    return False
  return numba.threading_layer() in ('omp', 'tbb')


def batch_loop(item):
  """A numba function run(threads, count, *args) calling item(n, *args)
  for every n < count: over numba's thread pool when `threads`
  (threads_ok()) and count > 1, else in this thread. Each kernel's batch
  loop; item is a numba function of the item index and the buffers."""

  def make(prange):
    def loop(count, *args):
      for n in prange(count):
        item(np.int64(n), *args)
    return loop

  serial = numba.njit(nogil=True, cache=True)(make(range))
  parallel = numba.njit(nogil=True, cache=True, parallel=True)(make(numba.prange))

  @numba.njit(nogil=True, cache=True)
  def run(threads, count, *args):
    if threads and count > 1:
      parallel(count, *args)
    else:
      serial(count, *args)

  return run


@functools.lru_cache(maxsize=None)
def _registered(name, make_handler):
  with _lock:
    handler = make_handler()
    pycapsule = ctypes.pythonapi.PyCapsule_New
    pycapsule.restype = ctypes.py_object
    pycapsule.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    capsule = pycapsule(handler.address, b'xla._CUSTOM_CALL_TARGET', None)
    jax.ffi.register_ffi_target(name, capsule, platform='cpu')
    return handler  # keeps the compiled code alive


def call(name, make_handler, result_shapes, *args, vmap_method='sequential'):
  """Runs the handler `make_handler()` (compiled and registered once per
  process) on args; result_shapes: jax.ShapeDtypeStruct per result.
  vmap_method: as jax.ffi.ffi_call's ('expand_dims' for handlers that take
  leading batch dims, size 1 where an argument is not batched)."""
  _registered(name, make_handler)
  return jax.ffi.ffi_call(name, result_shapes, vmap_method=vmap_method)(*args)


def on_cpu(cpu_fn, default_fn, *args):
  """cpu_fn(*args) when lowered for the CPU, default_fn(*args) elsewhere."""
  return jax.lax.platform_dependent(*args, cpu=cpu_fn, default=default_fn)
