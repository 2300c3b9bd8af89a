"""The whole device stage (header search, fine-tuning, aggregation rounds with
Taylor importance and pruning, test accuracy) gives the same per-device
answers whatever the client engine's strategy and chunk size: loop, vmap,
vmap in chunks, and sharded over 8 simulated CPU devices (in a subprocess,
since the device count is fixed at JAX's start)."""
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import tiny_nas, tiny_rounds

from acme_jax.device import features
from acme_jax.device import header as header_lib
from acme_jax.device import local_data
from acme_jax.device import nas
from acme_jax.device import state as state_lib
from acme_jax.federated import acme
from acme_jax.parallel import engine

SPEC, CFG = tiny_nas()
SIZES = (14, 22, 30, 18, 26)  # unequal local data: padding must not matter


def device_stage(strategy) -> dict:
  rng = np.random.default_rng(0)
  means = rng.normal(0, 1.5, (SPEC.num_classes, SPEC.feature_dim))
  locals_ = []
  for n in SIZES:
    y = rng.integers(0, SPEC.num_classes, n + 10).astype(np.int32)
    x = (rng.normal(0, 1, (n + 10, 3, 3, SPEC.feature_dim)) +
         means[y][:, None, None]).astype(np.float32)
    locals_.append(features.LocalFeatures(x[:n], y[:n], x[n:n + 5],
                                          y[n:n + 5], x[n + 5:], y[n + 5:],
                                          x[:n, 0, 0]))
  padded = local_data.device_data(locals_)
  keys = [jax.random.key(d) for d in range(len(SIZES))]
  smallest = int(header_lib.param_count(
      SPEC, header_lib.smallest_arch(SPEC.num_nodes), 3))
  limits = [smallest + 300 * d for d in range(len(SIZES))]
  hp = nas.SearchHparams(epochs=2, batch_size=8, controller_steps_per_epoch=2)
  found = nas.search(CFG, hp, padded,
                     list(map(nas.Device, keys, limits, [3, 4, 3, 4, 3])),
                     strategy)
  schedule = state_lib.Schedule(batch_size=8)
  tuned = state_lib.train_fixed(CFG, [f['state'] for f in found], padded,
                                keys, schedule, 1, 0.05, strategy)
  headers = [state_lib.DeviceHeader(
      device=d, edge=d // 3, state=s, lr=0.05, data=padded.data[d],
      sizes=padded.sizes[d], signature=np.full((4, 3), d, np.float32))
             for d, s in enumerate(tuned)]
  headers, imps = state_lib.train(CFG, schedule, headers, 1,
                                  jax.random.key(7), strategy)
  headers = [dataclasses.replace(h, start=7) for h in headers]  # one start
  headers, _ = acme.run(tiny_rounds('pruning_per_emd', SPEC, schedule,
                                    strategy, rounds=1), CFG, headers,
                        jax.random.key(3))
  return {
      'archs': [np.asarray(f['arch']).tolist() for f in found],
      'search_val': [float(f['val_accuracy']) for f in found],
      'importances': [np.concatenate([np.ravel(v) for v in
                                      jax.tree.leaves(i)]).tolist()
                      for i in imps],
      'test_accuracy': [float(a) for a in state_lib.test_accuracy(
          CFG, headers, strategy)],
  }


def assert_same(a, b):
  assert a['archs'] == b['archs']
  np.testing.assert_allclose(a['search_val'], b['search_val'], atol=1e-6)
  for x, y in zip(a['importances'], b['importances']):
    np.testing.assert_allclose(x, y, rtol=2e-3, atol=1e-7)
  np.testing.assert_allclose(a['test_accuracy'], b['test_accuracy'],
                             atol=1e-6)


@pytest.mark.slow  # two full device stages (~1 min); the engine tests check chunking
def test_loop_and_vmap_in_chunks_agree():
  # Chunks of 2 users: 2 + 2 + 1 (padded with a dummy).
  assert_same(device_stage('loop'),
              device_stage(engine.Options('vmap', chunk=2)))


def _sharded_child():
  """In a process with 8 simulated CPU devices: loop, vmap and sharded."""
  print(json.dumps({'device_count': jax.device_count(),
                    'loop': device_stage('loop'),
                    'vmap': device_stage('vmap'),
                    'sharded': device_stage('sharded')}))


@pytest.mark.slow  # three full device stages in a fresh process (~3 min)
def test_loop_vmap_and_sharded_agree_on_8_simulated_devices():
  tests_dir = pathlib.Path(__file__).resolve().parent
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([str(tests_dir.parent),
                                         str(tests_dir)]))
  result = subprocess.run(
      [sys.executable, '-c',
       'import test_device_strategies as t; t._sharded_child()'],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['device_count'] == 8
  assert_same(report['loop'], report['vmap'])
  assert_same(report['loop'], report['sharded'])
