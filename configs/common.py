"""What every config file shares: reading its `--config=FILE:ARG` argument
(in the spirit of big_vision's `parse_arg`)."""
import ml_collections


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
