"""Cloud training throughput at the paper's scale: ViT-B/16 at 224x224.

  python -m benchmarks.cloud --scheme=masked       # this CPU: batch 2
  python -m benchmarks.cloud --batch=64 --reps=5   # a GPU / TPU host

Times the teacher's fine-tuning step and one elastic step over the paper's
4x4 (depth, width) grid (the configured scheme, 'static' by default), on
synthetic CIFAR-100-shaped uint8 images resized inside the step, for one
device and for all local devices (the batch sharded along 'data'), in float32
and bfloat16 compute. For each it prints images/s and the model FLOPs
utilisation (MFU): the analytic training FLOPs of the step (forward of every
subnet at its real size, x3 for forward+backward, plus the teachers'
forward passes; remat's recomputation is not counted as useful work) per
second over the peak.

The analytic count is cross-checked against XLA's own cost analysis of the
compiled step (column `XLA / analytic`). XLA counts what it compiled: about
1 for the teacher step and the unrolled 'static' scheme; the masked and
sliced schemes scan over subnets, and XLA counts a loop body once, not once
per iteration, so their ratio is far below 1. The peak is the card's datasheet dense
number where the device kind is known (`--peak_tflops` overrides); on other
devices (this CPU) it is the best measured rate of a large matmul in the
same dtype, so MFU there reads as "fraction of what this chip reaches on a
matmul".
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from acme_jax import cli
from acme_jax import errors
from acme_jax import report
from acme_jax import training
from acme_jax.cloud import elastic, teacher
from acme_jax.data import base
from acme_jax.models import subnet, vit
from acme_jax.parallel import mesh
from benchmarks import inputs

_BATCH = flags.DEFINE_integer('batch', 2, lower_bound=1, help= 'global batch (a multiple of the '
                              'device count)')
_REPS = flags.DEFINE_integer('reps', 2, lower_bound=1, help='timed calls (best kept)')
_SCHEME = flags.DEFINE_enum('scheme', 'static', list(elastic.SCHEMES),
                            'elastic scheme')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'],
                            'compute dtypes to time')
_STEPS = flags.DEFINE_list('steps', ['teacher', 'elastic'], 'steps to time')
_REMAT = flags.DEFINE_bool('remat', True, 'recompute subnet activations in '
                           'the backward pass (as configs/cifar100_vit_b16)')
_PEAK = flags.DEFINE_float('peak_tflops', 0.0, 'peak TFLOP/s of one device '
                           '(0: datasheet for known kinds, else measured)')
_CLASSES = 100
GRID = inputs.GRID

# Dense (no sparsity) datasheet peaks in TFLOP/s per device.
_DATASHEET = {
    ('H100', 'bfloat16'): 989.0, ('H100', 'float32'): 67.0,
    ('H200', 'bfloat16'): 989.0, ('H200', 'float32'): 67.0,
    ('A100', 'bfloat16'): 312.0, ('A100', 'float32'): 19.5,
    ('TPU v4', 'bfloat16'): 275.0, ('TPU v5e', 'bfloat16'): 197.0,
    ('TPU v5p', 'bfloat16'): 459.0,
}


def vit_b16(dtype) -> vit.ViT:
  spec = base.InputSpec(image_size=224)  # uint8 32x32 -> 224, as the config
  return vit.ViT(num_classes=_CLASSES, patch_size=16, hidden_size=768,
                 num_layers=12, num_heads=12, mlp_dim=3072, head_dim=64,
                 input_spec=spec, dtype=jnp.dtype(dtype))


def forward_flops(layers: int, heads: int, mlp: int, hidden=768,
                  head_dim=64) -> float:
  """Multiply-adds x 2 of one 224x224x3 image's forward pass through a
  ViT-B/16-shaped model (matmuls only)."""
  patch, side, channels, classes = 16, 224, 3, _CLASSES
  tokens = (side // patch) ** 2 + 1
  inner = heads * head_dim
  per_layer = (2 * tokens * hidden * 3 * inner       # q, k, v
               + 2 * 2 * tokens * tokens * inner     # scores, weighted sum
               + 2 * tokens * inner * hidden         # attention output
               + 2 * 2 * tokens * hidden * mlp)      # MLP in and out
  embed = 2 * (tokens - 1) * patch * patch * channels * hidden
  return embed + layers * per_layer + 2 * hidden * classes


def step_flops(step: str) -> float:
  """Analytic training FLOPs per image of one step."""
  if step == 'teacher':
    return 3 * forward_flops(12, 12, 3072)
  stage = elastic.Stage.of(GRID, GRID, matched_teacher=True)

  def sub(w, d):
    cfg = subnet.from_multipliers(12, 12, 3072, w, d)
    return forward_flops(len(cfg.layers), cfg.heads[0], cfg.neurons[0])

  total = sum(sub(w, 1.0) for w in stage.width_mults)  # matched teachers
  return total + sum(3 * sub(w, d) for d, w in stage.pairs())


def measured_peak(dtype) -> float:
  """Best FLOP/s of a 2048^3 matmul on one device (the achievable peak)."""
  n = 2048
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  best = min(_timed(lambda: f(a)) for _ in range(3))
  return 2 * n ** 3 / best


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def peak_flops(dtype: str) -> tuple:
  if _PEAK.value:
    return _PEAK.value * 1e12, 'given'
  kind = jax.devices()[0].device_kind
  for (name, dt), tflops in _DATASHEET.items():
    if name in kind and dt == dtype:
      return tflops * 1e12, 'datasheet'
  return measured_peak(jnp.dtype(dtype)), 'measured matmul'


def xla_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', 0.0)) if cost else 0.0


def build(step_name: str, model, par: mesh.Parallel, batch: int):
  """(jitted step, its arguments placed on `par`'s mesh)."""
  params = vit.init_params(model, jax.random.key(0), (32, 32, 3))
  tx = optax.adamw(1e-4)
  params = par.params(params)
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)
  images = par.batch(rng.integers(0, 256, (batch, 32, 32, 3), np.uint8))
  if step_name == 'teacher':
    labels = par.batch(rng.integers(0, _CLASSES, batch).astype(np.int32))
    step = teacher.make_train_step(model, tx, par, params, opt_state)
    return step, (params, opt_state, images, labels)
  stage = elastic.Stage.of(GRID, GRID, matched_teacher=True)
  hp = training.StageHparams(
      epochs=1, learning_rate=1e-4, batch_size=batch, lambda_logits=1.0,
      lambda_hidden=1.0, scheme=_SCHEME.value, remat=_REMAT.value)
  step = elastic.make_elastic_step(model, tx, stage, hp, par, params,
                                   opt_state)
  return step, (params, opt_state, params, images)


def measure(step_name, dtype, par, batch):
  model = vit_b16(dtype)
  step, args = build(step_name, model, par, batch)
  start = time.perf_counter()
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))  # warm-up
  seconds = min(_timed(lambda: compiled(*args)) for _ in range(_REPS.value))
  analytic = step_flops(step_name) * batch
  return seconds, compile_s, analytic, xla_flops(compiled)


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  devices = jax.devices()
  inputs.cloud(_BATCH.value, _REPS.value, _DTYPES.value, _STEPS.value,
               _SCHEME.value, _REMAT.value, _PEAK.value, len(devices))
  setups = [('1 device', mesh.single_device())]
  if len(devices) > 1:
    setups.append((f'all {len(devices)} devices',
                   mesh.Parallel(mesh.local_mesh_all_devices())))
  peaks = {dt: peak_flops(dt) for dt in _DTYPES.value}
  rows = []
  for step_name in _STEPS.value:
    for dtype in _DTYPES.value:
      for label, par in setups:
        batch = _BATCH.value
        seconds, compile_s, analytic, xla = measure(step_name, dtype, par,
                                                    batch)
        peak = peaks[dtype][0] * par.size
        rows.append([
            step_name if step_name == 'teacher'
            else f'elastic ({_SCHEME.value}, 16 subnets)',
            dtype, label, batch, f'{seconds:.3f}', f'{batch / seconds:.2f}',
            f'{analytic / seconds / 1e12:.3f}',
            f'{100 * analytic / seconds / peak:.1f}%',
            f'{xla / analytic:.2f}' if xla else 'n/a', f'{compile_s:.0f}'])
        print(' | '.join(map(str, rows[-1])), flush=True)
  kind = devices[0].device_kind
  print(f'\nViT-B/16, 224x224, {_CLASSES} classes; {len(devices)} x {kind} '
        f'({jax.default_backend()}); peaks per device: '
        + ', '.join(f'{dt} {p / 1e12:.2f} TFLOP/s ({src})'
                    for dt, (p, src) in peaks.items()) + '\n')
  print(report.markdown_table(
      ['step', 'dtype', 'devices', 'batch', 'step s', 'images/s',
       'TFLOP/s', 'MFU', 'XLA / analytic', 'compile s'], rows))


if __name__ == '__main__':
  cli.run_tool(main)
