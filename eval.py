"""Scores two-hand reconstructions under the InterWild and IntagHand protocols.

A trained checkpoint (data set, root and MANO folder default to its training
config; the synthetic set it trained on is scored on its test split):
    python eval.py --workdir /tmp/a2p_tiny --out /tmp/a2p_tiny_eval
    python eval.py --workdir /ckpt/a2p --dataset interhand26m \
        --root /data/InterHand2.6M --split test --mano_dir /data/mano \
        --subset aid_human_annot_test.txt --out eval_ih26m

A predictions file from any method:
    python eval.py --predictions preds.json --dataset interhand26m \
        --root /data/InterHand2.6M --split test --mano_dir /data/mano \
        [--subset aid_human_annot_test.txt] --out eval_out

FreiHAND (official protocol; FreiHAND's pred.json, the project's format keyed
by sample index, or a checkpoint):
    python eval.py --predictions pred.json --dataset freihand \
        --root /data/FreiHAND_pub_v2 --split evaluation --out eval_fh
    python eval.py --workdir /ckpt/a2p --dataset freihand --root /data/FreiHAND_pub_v2 \
        --mano_dir /data/mano --out eval_fh

Writes report.json, report.md, per_sample.npz and figures/ to --out
(FreiHAND: report.json and report.md).
"""

from absl import app, flags

flags.DEFINE_string('predictions', None, 'predictions file (.json or .npz; see docs/manual.md)')
flags.DEFINE_string('workdir', None, 'a training workdir: score its newest checkpoint')
flags.DEFINE_integer('step', None, 'with --workdir: score this checkpoint step')
flags.DEFINE_integer('limit', 0, 'score only the first N examples (0: all)')
flags.DEFINE_enum('dataset', None, ['synthetic', 'interhand26m', 'hic', 'freihand'],
                  'data set (default: synthetic, or the checkpoint\'s)')
flags.DEFINE_string('root', None, 'the data set folder')
flags.DEFINE_string('split', 'test', 'split to score')
flags.DEFINE_string('mano_dir', None, 'folder with MANO_RIGHT.pkl / MANO_LEFT.pkl')
flags.DEFINE_string('subset', None, 'optional annotation-id list (InterWild format)')
flags.DEFINE_string('out', 'eval_out', 'output folder')
flags.DEFINE_bool('penetration', True, 'PenVol/PenDist/ProxRatio on interacting frames')
flags.DEFINE_string('stage2', None, 'with --workdir: a stage-2 training workdir; its gated '
                    'repair runs on the stage-1 outputs')
flags.DEFINE_multi_string('stage2_sampling', [], 'with --stage2: FIELD=VALUE overriding a '
                          'field of its config.sampling (repeatable), e.g. pullback_steps=0')
flags.DEFINE_string('priors', None, 'with --workdir: a prior store of the split; the '
                    'teacher\'s maps replace the FAE (the distillation gap)')
FLAGS = flags.FLAGS


def sampling_overrides(items) -> dict:
  """['FIELD=VALUE', ...] -> {field: value} typed like the stage-2 config's
  sampling field (a2p_jax/configs/a2p_diffusion.py); an unknown field or a
  value of the wrong type is a usage error naming it."""
  from a2p_jax.configs import a2p_diffusion
  schema = a2p_diffusion.get_config().sampling
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or key not in schema:
      raise app.UsageError(f'--stage2_sampling {item!r}: expected FIELD=VALUE with FIELD one of '
                           f'{sorted(schema.keys())}')
    kind = type(schema[key])
    try:
      out[key] = ({'true': True, 'false': False}[value.lower()] if kind is bool
                  else kind(value))
    except (KeyError, ValueError):
      raise app.UsageError(f'--stage2_sampling {item!r}: {key} takes {kind.__name__} values, '
                           f'got {value!r}') from None
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from a2p_jax.eval import run
  if bool(FLAGS.predictions) == bool(FLAGS.workdir):
    raise app.UsageError('give exactly one of --predictions FILE or --workdir DIR')
  if FLAGS.stage2_sampling and not FLAGS.stage2:
    raise app.UsageError('--stage2_sampling needs --stage2')
  if FLAGS.predictions and (FLAGS.stage2 or FLAGS.priors):
    raise app.UsageError('--stage2 and --priors need --workdir (a stage-1 checkpoint)')
  if FLAGS.dataset == 'freihand':
    if FLAGS.stage2 or FLAGS.priors or FLAGS.subset:
      raise app.UsageError('--dataset freihand takes no --stage2, --priors or --subset')
    split = 'evaluation' if FLAGS.split == 'test' else FLAGS.split
    if FLAGS.predictions:
      run.evaluate_freihand(FLAGS.predictions, FLAGS.root, FLAGS.out, split=split,
                            mano_dir=FLAGS.mano_dir)
    else:
      run.evaluate_checkpoint_freihand(FLAGS.workdir, FLAGS.out, root=FLAGS.root, split=split,
                                       mano_dir=FLAGS.mano_dir, step=FLAGS.step,
                                       limit=FLAGS.limit)
  elif FLAGS.predictions:
    run.evaluate_predictions(FLAGS.predictions, FLAGS.dataset or 'synthetic', FLAGS.root,
                             FLAGS.split, FLAGS.out, mano_dir=FLAGS.mano_dir,
                             subset=FLAGS.subset, penetration=FLAGS.penetration)
  else:
    run.evaluate_checkpoint(FLAGS.workdir, FLAGS.out, dataset_name=FLAGS.dataset,
                            root=FLAGS.root, split=FLAGS.split, mano_dir=FLAGS.mano_dir,
                            subset=FLAGS.subset, step=FLAGS.step,
                            penetration=FLAGS.penetration, limit=FLAGS.limit,
                            stage2=FLAGS.stage2, priors=FLAGS.priors,
                            stage2_sampling=sampling_overrides(FLAGS.stage2_sampling) or None)


if __name__ == '__main__':
  app.run(main)
