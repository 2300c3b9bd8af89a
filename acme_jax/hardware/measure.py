"""Inference latency and peak memory of the models a device deploys, measured
on the backend this process runs on (docs/hardware.md).

A deployed model is two programs: the extracted backbone (a subnet's dense
weights, no classifier) from the device's stored input to the tokens its
header reads, and the extracted header (live channels only) from those
tokens to logits. Each is compiled once for its shape and batch, run
`warmup` times, then timed `repeats` times with the result awaited
(`block_until_ready`), round-robin with the other programs measured beside
it; the record keeps the median and the 10th and 90th percentiles. Peak memory is what XLA's compiled program plans to hold at
once: its arguments (weights and batch), outputs and temporaries, less the
buffers it aliases. It is the same number on every run, and it is also what
a GPU allocates for the program; the process's own overhead (the runtime,
the Python interpreter) is not in it.
"""
import dataclasses
import time
from typing import Callable, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import provenance
from acme_jax.device import header as header_lib
from acme_jax.device import header_extract
from acme_jax.models import subnet as subnet_lib


@dataclasses.dataclass(frozen=True)
class TimingHparams:
  warmup: int = 10    # config.latency's defaults
  repeats: int = 100


def backend() -> str:
  """The backend measurements belong to: 'cpu', 'gpu' or 'tpu'."""
  return jax.default_backend()


def machine() -> str:
  """The machine in words: the host's CPU and the accelerator's kind."""
  here = provenance.provenance()
  return (f"{here['cpus']} CPUs ({here['machine']}), "
          f"{here['accelerators']}")


def _xla_flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one per program
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


def peak_memory_bytes(compiled) -> int:
  """Arguments, outputs and temporaries of a compiled program, less its
  aliased buffers: what it holds at once."""
  stats = compiled.memory_analysis()
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes +
             stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def _stats(times_ms) -> dict:
  p10, median, p90 = np.percentile(times_ms, [10, 50, 90])
  return {'median_ms': float(median), 'p10_ms': float(p10),
          'p90_ms': float(p90), 'spread_ms': float(p90 - p10)}


def timed_together(programs: Sequence[Tuple[Callable, Tuple]],
                   hp: TimingHparams) -> List[dict]:
  """Per (fn, args): median and percentiles (ms) of `fn(*args)` compiled
  once, its peak memory (bytes) and XLA's count of its FLOPs. The programs
  are timed round-robin (one call of each, `repeats` times over), so a slow
  spell of a shared machine lands on all of them rather than on whichever
  ran then."""
  # On the device before timing: a deployed model's weights and a header's
  # tokens are there already. Unused weights are kept (a device stores
  # them), so peak memory counts them.
  programs = [(fn, jax.device_put(args)) for fn, args in programs]
  compiled = [jax.jit(fn, keep_unused=True).lower(*args).compile()
              for fn, args in programs]
  for c, (_, args) in zip(compiled, programs):
    for _ in range(hp.warmup):
      jax.block_until_ready(c(*args))
  times = [[] for _ in programs]
  for _ in range(hp.repeats):
    for i, (c, (_, args)) in enumerate(zip(compiled, programs)):
      start = time.perf_counter()
      jax.block_until_ready(c(*args))
      times[i].append((time.perf_counter() - start) * 1e3)
  return [dict(_stats(t), peak_memory_bytes=peak_memory_bytes(c),
               xla_flops=_xla_flops(c)) for c, t in zip(compiled, times)]


def timed(fn: Callable, args: Tuple, hp: TimingHparams) -> dict:
  """`timed_together` of one program."""
  return timed_together([(fn, args)], hp)[0]


def backbone_program(model, params, depth: float, width: float,
                     source: str = 'last_hidden'):
  """(forward(weights, inputs) -> tokens, the subnet's dense weights): the
  extracted backbone a device runs, up to the tokens its header reads
  (`source` as `device.features.backbone_tokens`)."""
  sub = subnet_lib.for_model(model, width, depth)
  dense_model, dense = subnet_lib.extract(model, params, sub)

  def forward(weights, inputs):
    out = dense_model.apply({'params': weights}, inputs)
    return out['hidden'][-1] if source == 'last_hidden' else out['tokens']

  return forward, jax.tree.map(jnp.asarray, dense)


def header_program(spec: header_lib.Spec, arch, n_layers: int, gates,
                   seed: int = 0):
  """(forward(variables, tokens) -> logits, variables, parameters): the
  extracted header of `arch` with `gates`' channels live, in evaluation
  mode, as a device deploys it after pruning."""
  forward, dense_vars = deployed_header_program(
      spec, header_lib.init_variables(spec, seed), arch, n_layers, gates)
  return forward, dense_vars, int(
      header_extract.count_params(dense_vars['params']))


def deployed_header_program(spec: header_lib.Spec, variables, arch,
                            n_layers: int, gates):
  """(forward(variables, tokens) -> logits, the extracted variables) of a
  header with these `variables` (params and batch_stats)."""
  dense, dense_vars = header_extract.extract(spec, variables, arch, n_layers,
                                             gates)

  def forward(v, tokens):
    return dense.apply(v, tokens)

  return forward, jax.tree.map(jnp.asarray, dense_vars)


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
  """The first `batch` rows of `x`, cycled when it has fewer."""
  return np.asarray(x)[np.arange(batch) % len(x)]


def random_arch(rng: np.random.Generator, num_nodes: int) -> np.ndarray:
  """A header cell drawn uniformly from the search space: per node two
  inputs among those before it and two ops."""
  arch = np.zeros((num_nodes, 4), np.int32)
  for node in range(num_nodes):
    arch[node] = (rng.integers(node + 2), rng.integers(header_lib.NUM_OPS),
                  rng.integers(node + 2), rng.integers(header_lib.NUM_OPS))
  return arch
