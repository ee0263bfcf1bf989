"""Training input from a config: data set source (or a mix of sources),
optional prior stores, grain pipeline for this process's share of each
global batch."""

import json
import os
from typing import Optional

import jax

from a2p_jax import teacher as teacher_lib
from a2p_jax.data import open_source, pipeline, synthetic, tfds_builders
from a2p_jax.inference.stage1 import augment_config
from a2p_jax.runtime.sharding import barrier
from a2p_jax.teacher import precompute
from a2p_jax.teacher import store as store_lib


def synthetic_root(config, workdir: str) -> str:
  """The synthetic set of config.data (generated once, by process 0, into
  WORKDIR/data/synthetic unless config.data.root names a folder)."""
  d = config.data
  if d.root:
    return d.root
  root = os.path.join(workdir, 'data', 'synthetic')
  marker = os.path.join(root, 'synthetic_config.json')
  want = {'num_frames': int(d.synthetic_frames), 'seed': int(d.synthetic_seed),
          'image_size': list(d.synthetic_image_size),
          'orientation_deg': float(d.get('synthetic_orientation_deg', 180.0)),
          'rig': str(d.get('synthetic_rig', 'dome'))}
  if jax.process_index() == 0:
    have = None
    if os.path.exists(marker):
      with open(marker) as f:
        have = json.load(f)
      # Sets written before the `rig` option gave each capture its own cameras.
      have = {k: have.get(k, 'capture' if k == 'rig' else None) for k in want}
    if have != want:
      if have is not None:
        raise ValueError(f'{root} holds a synthetic set made with {have}, but the config '
                         f'asks for {want}: delete it or set config.data.root')
      print(f'generating the synthetic set ({d.synthetic_frames} frames) in {root}', flush=True)
      synthetic.generate(root, synthetic.Options(
          num_frames=want['num_frames'], seed=want['seed'], image_size=tuple(want['image_size']),
          mano_dir=d.mano_dir or None, orientation_deg=want['orientation_deg'], rig=want['rig']))
  barrier('synthetic_root')
  return root


def data_root(config, workdir: str) -> str:
  d = config.data
  if d.dataset == 'synthetic':
    return synthetic_root(config, workdir)
  if not d.root:
    raise ValueError(f'config.data.root must point at the {d.dataset} folder')
  if not os.path.isdir(d.root):
    raise FileNotFoundError(f'config.data.root={d.root!r} is not a directory')
  return d.root


def source(config, workdir: str, split: str):
  """Random-access examples of `split` (a2p_jax.data.open_source over the
  official layout, or a built TFDS array_record set when
  config.data.tfds_dir is set)."""
  d = config.data
  root = data_root(config, workdir)
  if d.tfds_dir:
    return tfds_builders.data_source(d.dataset, split, d.tfds_dir)
  options = {'subset': d.subset} if d.subset else {}
  if d.dataset in ('synthetic', 'interhand26m'):  # the JSON index build shows a bar
    options['progress'] = jax.process_index() == 0
  return open_source(d.dataset, root, split, mano_dir=d.mano_dir or None, **options)


def train_dataset(config, src, models, *, local_batch: int, priors=None,
                  num_epochs: Optional[int] = None, process_index: Optional[int] = None,
                  process_count: Optional[int] = None):
  """This process's batches (its shard of `src`). `process_index` and
  `process_count` default to JAX's; given, they build another process's
  stream (tests: one process replaying a multi-host run's global batches)."""
  return pipeline.make_dataset(
      src, cfg=augment_config(config), models=models, batch_size=local_batch,
      seed=config.seed, training=True, num_epochs=num_epochs,
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      num_workers=config.data.num_workers,
      join=(teacher_lib.join_priors(priors, config.data.prior_groups or None)
            if priors is not None else None))


def prior_store(config, workdir: str, src):
  """The teacher's prior store for training, or None (config.data.priors '').

  The store's signal ('outputs' maps or 'features') must be
  config.teacher.signal. 'oracle': the synthetic set's oracle store, built once (process 0) into
  WORKDIR/data/priors/oracle_<train_split> and reused when complete; a path:
  an existing store (see a2p_jax.teacher.precompute). Either way it must hold
  every annot_id of `src`. The model's prior channels are
  `a2p_jax.teacher.prior_channels(store, config.data.prior_groups)`.
  """
  d = config.data
  if not d.priors:
    return None
  if d.priors == 'oracle':
    if d.dataset != 'synthetic':
      raise ValueError(f"config.data.priors='oracle' needs the synthetic set (it reads the "
                       f"rendered ground truth), but config.data.dataset={d.dataset!r}")
    path = os.path.join(workdir, 'data', 'priors', f'oracle_{d.train_split}')
    root = synthetic_root(config, workdir)
    if store_lib.is_complete(path):
      made_from = store_lib.read_meta(path).get('source', {}).get('root')
      if made_from != os.path.abspath(root):
        raise ValueError(f'{path} holds oracle priors of {made_from}, but the synthetic set '
                         f'is {os.path.abspath(root)}: delete {path}')
    elif jax.process_index() == 0:
      full = open_source('synthetic', root, d.train_split, mano_dir=d.mano_dir or None,
                         progress=False)
      print(f'computing oracle priors of {root} ({d.train_split}) into {path}', flush=True)
      precompute.precompute('oracle', full, path, source_info={
          'dataset': 'synthetic', 'root': os.path.abspath(root), 'split': d.train_split},
          process_index=0, process_count=1)
    barrier('prior_store')
  else:
    path = d.priors
  store = teacher_lib.open_store(path)
  signal = config.teacher.signal
  have = store.meta.get('signal', 'outputs')   # stores made before the switch hold outputs
  if have != signal:
    raise ValueError(f'config.teacher.signal={signal!r}, but the prior store {path} holds '
                     f'{have!r} (teacher {store.meta["teacher"]!r}): point config.data.priors '
                     f'at a {signal} store or set config.teacher.signal={have!r}')
  store.check_covers(teacher_lib.source_annot_ids(src))
  teacher_lib.select_channels(store.meta, d.get('prior_groups') or None)  # names exist
  return store


MIX_KEYS = ('dataset', 'root', 'split', 'group', 'weight', 'priors', 'subset')


def mixture(config, workdir: str):
  """The training mix of config.data.mix: (parts, examples per epoch, a
  prior store (the first part's; every part's has the same channels) or None).

  Each entry names a reader (`dataset`, default its key), its `root` (a
  flag: --config.data.mix.<key>.root=...), `split`, its `group` and `weight`
  (a2p_jax.data.pipeline.mixture_probabilities; weight 0 leaves the part
  out) and its own prior store `priors` (a path; every part has one or none). An epoch is
  InterWild's: the largest group's size times the number of groups.
  """
  d = config.data
  entries, parts, sizes, groups, weights, stores = [], [], [], [], [], []
  for key in sorted(d.mix):
    e = d.mix[key]
    unknown = sorted(set(e) - set(MIX_KEYS))
    if unknown:
      raise ValueError(f'config.data.mix.{key}: unknown field(s) {", ".join(unknown)}; '
                       f'known: {", ".join(MIX_KEYS)}')
    if float(e.get('weight', 1.0)) == 0.0:
      continue  # left out of the mix (no root needed)
    name, root = e.get('dataset', key), e.get('root', '')
    if not root or not os.path.isdir(root):
      raise FileNotFoundError(f'config.data.mix.{key}.root={root!r} is not a directory '
                              f'(the {name} folder)')
    options = {'subset': e.subset} if e.get('subset') else {}
    src = open_source(name, root, e.get('split', 'train'), mano_dir=d.mano_dir or None,
                      **options)
    if len(src) == 0:
      raise ValueError(f'config.data.mix.{key}: {name} {e.get("split", "train")} in {root} '
                       f'has no examples')
    store = None
    if e.get('priors'):
      store = teacher_lib.open_store(e.priors)
      store.check_covers(teacher_lib.source_annot_ids(src))
    entries.append((key, src))
    sizes.append(len(src))
    groups.append(str(e.get('group', key)))
    weights.append(float(e.get('weight', 1.0)))
    stores.append(store)
  if not entries:
    raise ValueError('config.data.mix is empty')
  if any(s is None for s in stores) and any(s is not None for s in stores):
    raise ValueError('config.data.mix: give every part a prior store (priors=...) or none')
  groups_ = d.get('prior_groups') or None
  if stores[0] is not None:
    want = list(teacher_lib.select_channels(stores[0].meta, groups_))
    for (key, _), store in zip(entries, stores):
      if list(teacher_lib.select_channels(store.meta, groups_)) != want:
        raise ValueError(f'config.data.mix.{key}.priors={store.path}: its channels differ from '
                         f'config.data.mix.{entries[0][0]}.priors (one teacher for the mix)')
  probs = pipeline.mixture_probabilities(sizes, groups, weights)
  parts = [pipeline.MixPart(src, p, None if st is None else
                            teacher_lib.join_priors(st, groups_), key)
           for (key, src), p, st in zip(entries, probs, stores)]
  by_group = {}
  for g, n in zip(groups, sizes):
    by_group[g] = by_group.get(g, 0) + n
  return parts, max(by_group.values()) * len(by_group), stores[0]


def mixed_train_dataset(config, parts, models, *, local_batch: int):
  """This process's batches of the mix (see `mixture`)."""
  return pipeline.make_mixed_dataset(
      parts, cfg=augment_config(config), models=models, batch_size=local_batch,
      seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), num_workers=config.data.num_workers)
