"""What every config file shares: reading its `--config=FILE:ARG` argument
(in the spirit of big_vision's `parse_arg`), and the prototype's rounds."""
import ml_collections


def prototype_rounds(config):
  """The rounds of the prototype's aggregation experiment (`third_part/`:
  `distributed_prune.py`, `client.py`, `pruning_engine.py` with
  `imagenet_resnet50_prune72.json`): 10 rounds of 1 local epoch of SGD (lr
  1e-3, momentum 0.5, batch 64), then 10 of the separable convs' channels
  pruned per round (~1% of 1,024: 10% after the tenth) by the Taylor
  criterion smoothed with momentum 0.9, no fine-tuning after the last
  prune; signatures from the full supernet, row-softmax at T = 1.
  `wo_pruning` trains the same 10 epochs."""
  config.aggregation.update(dict(
      rounds=10, local_epochs=1, finetune_epochs=0, optimizer='sgd', lr=1e-3,
      momentum=0.5, batch_size=64, prune_set='separable', prune_ratio=0.1,
      criterion_momentum=0.9, finetune_last=False, taylor='squared',
      signature='features', reference_backbone='full', temperature=1.0,
      temperatures=(1.0,)))
  return config


def parse_arg(arg, file: str, *, variants=(), **fields):
  """The argument of `--config=FILE:ARG`, checked, as a ConfigDict.

  ARG is one of `variants` (none given: the first), a bare value of a file
  with a single field, or comma-separated `field=value` pairs, each value
  typed like its default in `fields`. The result has `variant` (when the
  file has variants) and every field. Anything else is one ValueError
  naming the file, what was given and what is allowed.
  """
  out = ml_collections.ConfigDict(dict(fields))
  if variants:
    out.variant = variants[0]
  arg = (arg or '').strip()
  if not arg:
    return out
  allowed = ', '.join(list(variants) + [f'{k}=<{type(v).__name__}>'
                                        for k, v in fields.items()])
  problem = (f'{file} takes ' + (allowed or 'no argument') +
             f', not {arg!r}')
  if arg in variants:
    out.variant = arg
    return out
  pairs = [p.split('=', 1) for p in arg.split(',')]
  if len(pairs) == 1 and len(pairs[0]) == 1 and len(fields) == 1:
    pairs = [[next(iter(fields)), arg]]
  for pair in pairs:
    if len(pair) != 2 or pair[0].strip() not in fields:
      raise ValueError(problem)
    name, text = pair[0].strip(), pair[1].strip()
    try:
      out[name] = _typed(text, fields[name])
    except ValueError as e:
      raise ValueError(problem) from e
  return out


def _typed(text: str, default):
  if isinstance(default, bool):
    if text.lower() not in ('true', 'false'):
      raise ValueError(text)
    return text.lower() == 'true'
  return type(default)(text)
