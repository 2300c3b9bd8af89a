"""Inference latency and peak memory on this backend, and the predictors
fitted on them (docs/hardware.md).

  python -m benchmarks.latency --config=configs/default.py --workdir=W
  python -m benchmarks.latency --config=configs/minilm_wordnet.py --workdir=W
  python -m benchmarks.latency --config=configs/decoder_wordnet.py:fast \\
      --workdir=W

Measures every trained grid subnet and `latency.between_samples` uniform
subnets off the grid (the backbone as a device runs it, from its stored
input to the tokens its header reads), and `latency.header_samples` headers
drawn from the search space (random cells, 1 to the most cells a device
holds, pruned to each share of `latency.header_keeps`), each at every batch
of `latency.batches`, timed round-robin `latency.round_robin` programs at
a time (`acme_jax/hardware/measure.py`). Then fits the
latency and memory predictors per part and batch, chooses each kind on
validation and reports its error on the models held out
(`acme_jax/hardware/predictor.py`).

Writes `W/latency.json` (`backend`, `machine`, `measured`, `predictor`) and
`W/latency.md`. Latency does not depend on the weights' values, so the
supernet is the config's initialisation (MiniLM's real checkpoint), not a
trained one; nothing else of W is read. Run it on an otherwise idle machine:
anything sharing the cores is in the numbers.
"""
import jax
import numpy as np

from acme_jax import errors
from acme_jax import sizes
from acme_jax import streams
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import grid as grid_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.data import stage as data_stage
from acme_jax.device import stage as device_stage
from acme_jax.hardware import features, measure, predictor, table
from acme_jax.selection import costs
from benchmarks import inputs


def backbone_shapes(config, model, arch, rng) -> list:
  """(depth, width, on the grid) of every grid cell, then up to
  `latency.between_samples` distinct uniform subnets off it, drawn."""
  cells = grid_lib.grid_points(config.cloud.depth_mults,
                               config.cloud.width_mults)
  every = [(k / model.num_layers, h / model.num_heads)
           for k in range(1, model.num_layers + 1)
           for h in range(1, model.num_heads + 1)]
  off, _ = grid_lib.between_points(model, config.cloud.depth_mults,
                                   config.cloud.width_mults, every)
  # One per cost-distinct shape: multipliers that keep as many layers,
  # heads and neurons as a grid cell (other layer indices) are its twins.
  shape = lambda d, w: costs.subnet_shape(arch, d, w)  # noqa: E731
  seen = {shape(d, w) for d, w in cells}
  distinct = []
  for d, w in off:
    if shape(d, w) not in seen:
      seen.add(shape(d, w))
      distinct.append((d, w))
  count = min(config.latency.between_samples, len(distinct))
  drawn = [distinct[i] for i in sorted(rng.choice(len(distinct), count,
                                                  replace=False))]
  if len(cells) + len(drawn) < 3:
    raise errors.UserError(
        f'{len(cells) + len(drawn)} distinct backbone shapes to measure; '
        f'the predictors need at least 3: raise latency.between_samples '
        f'(this supernet has {len(distinct)} off the grid) or widen the grid')
  return ([(float(d), float(w), True) for d, w in cells] +
          [(d, w, False) for d, w in drawn])


def backbone_programs(config, model, params, arch, stored, seq_len,
                      rng) -> list:
  """(row features, forward, args) per backbone shape and batch."""
  out = []
  for depth, width, on_grid in backbone_shapes(config, model, arch, rng):
    forward, dense = measure.backbone_program(model, params, depth, width,
                                              config.header.features_from)
    for batch in config.latency.batches:
      out.append((dict(features.backbone_row(arch, depth, width, seq_len,
                                             batch), grid=on_grid),
                  forward, (dense, measure.batch_of(stored, batch))))
  return out


def header_programs(config, spec, rng) -> list:
  """(row features, forward, args) per drawn header and batch."""
  out = []
  grid = sizes.feature_shape(config)[1:-1]
  keeps = config.latency.header_keeps
  for i in range(config.latency.header_samples):
    arch = measure.random_arch(rng, spec.num_nodes)
    n_layers = int(rng.integers(1, spec.max_layers + 1))
    gates = features.keep_gates(spec, keeps[i % len(keeps)])
    forward, variables, params = measure.header_program(
        spec, arch, n_layers, gates, seed=i)
    for batch in config.latency.batches:
      tokens = rng.standard_normal((batch,) + tuple(grid) +
                                   (spec.feature_dim,)).astype(np.float32)
      row = dict(features.header_row(spec, arch, n_layers, gates, batch,
                                     int(np.prod(grid))),
                 sample=i, arch=arch.tolist())
      if row['params'] != params:
        raise AssertionError(f'header {i}: the closed-form count '
                             f'{row["params"]} is not the extracted '
                             f'header\'s {params}')
      out.append((row, forward, (variables, tokens)))
  return out


def _describe(row) -> str:
  if row['part'] == 'backbone':
    return f"backbone d{row['depth']:g} w{row['width']:g}"
  return (f"header {row['sample']} ({row['n_layers']} cells, keep "
          f"{row['keep']:.2f})")


def measure_all(programs, hp, chunk: int, log) -> list:
  """The rows of `programs`, timed `chunk` at a time round-robin."""
  rows = []
  for at in range(0, len(programs), chunk):
    part = programs[at:at + chunk]
    records = measure.timed_together([(fn, args) for _, fn, args in part],
                                     hp)
    for (row, _, _), record in zip(part, records):
      rows.append(dict(row, **record))
      log(f"[latency] {_describe(row)} batch {row['batch']}: "
          f"{record['median_ms']:.2f} ms, "
          f"{record['peak_memory_bytes'] / 2**20:.1f} MiB")
  return rows


def key_of(row: dict):
  """The architecture a row measured: what the held-out split is by."""
  if row['part'] == 'backbone':
    return ('backbone', row['layers'], row['heads'], row['neurons'])
  return ('header', row['sample'])


def fit_predictors(rows: list, test_share: float, seed: int) -> dict:
  """The latency and memory predictors of `rows`, each part holding out a
  seeded `test_share` of its architectures (`predictor.held_out`)."""
  keys = [key_of(r) for r in rows]
  test = set()
  for part in ('backbone', 'header'):
    test |= predictor.held_out([k for k in keys if k[0] == part],
                               test_share, seed)
  return {'latency': predictor.by_group(rows, keys, test, 'median_ms'),
          'memory': predictor.by_group(rows, keys, test,
                                       'peak_memory_bytes')}


def run(config, workdir, log=print) -> dict:
  inputs.latency(config)
  wd = workdir_lib.Workdir(workdir)
  lat = config.latency
  hp = measure.TimingHparams(lat.warmup, lat.repeats)
  rng = np.random.default_rng(config.seed + streams.LATENCY_SAMPLES)
  dataset, _, _ = data_stage.load(config, log)
  model, params = cloud_stage.build_model(
      config, dataset, jax.random.key(config.seed))
  arch = sizes.architecture(config, dataset.num_classes)
  stored = dataset.test.images
  seq_len = (arch.num_tokens if hasattr(arch, 'num_tokens')
             else dataset.input_spec.max_length)
  spec = device_stage.DeviceHparams.from_config(
      config, dataset.num_classes).nas.spec
  programs = (backbone_programs(config, model, params, arch, stored,
                                seq_len, rng) +
              header_programs(config, spec, rng))
  rows = measure_all(programs, hp, lat.round_robin, log)
  seed = config.seed + streams.LATENCY_SPLIT
  result = table.build(config, rows,
                       fit_predictors(rows, lat.test_share, seed), seed)
  table.write(wd, result)
  log('\n' + table.markdown(result))
  return result


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run)
