"""Runs the cloud stages of the tiny config on whatever devices and
processes the environment gives, and saves what they produce (process 0).

  python tests/helpers/cloud_worker.py OUT.npz [fsdp] [COORD NPROC PID]

Used by tests/test_distributed.py in subprocesses, so the simulated device
count (XLA_FLAGS) and jax.distributed stay out of the test process.
"""
import sys

import jax
import ml_collections
import numpy as np

sys.path[:0] = ['.', 'tests']

from acme_jax import data as data_lib  # noqa: E402
from acme_jax import training  # noqa: E402
from acme_jax.cloud import elastic, grid, importance, teacher  # noqa: E402
from acme_jax.models import vit  # noqa: E402
from acme_jax import ownership  # noqa: E402
from acme_jax.parallel import mesh  # noqa: E402
from conftest import tiny_config  # noqa: E402


def main(out, sharding='replicated', coordinator='', nproc='1', pid='0'):
  if coordinator:
    mesh.initialize(ml_collections.ConfigDict(dict(
        coordinator=coordinator, num_processes=int(nproc),
        process_id=int(pid), auto=False, cpu_collectives='gloo')))
  config = tiny_config()
  dataset = data_lib.load_dataset(config.data, 0)
  cloud, _ = data_lib.cloud_device_split(dataset.train, 0.5, 0)
  cloud = cloud.take(np.arange(64))
  model = vit.vit_from_config(config.model, 10).clone(
      input_spec=dataset.input_spec)
  params = vit.init_params(model, jax.random.key(0), dataset.image_shape)
  par = mesh.Parallel(mesh.local_mesh_all_devices(), sharding)
  stage = dict(epochs=2, learning_rate=1e-3, batch_size=16,
               weight_decay=0.05, warmup_fraction=0.1, clip_norm=1.0,
               max_shift=1, lambda_logits=1.0, lambda_hidden=1.0)
  trained, losses = teacher.train_teacher(
      model, params, cloud, training.StageHparams(**stage, seed=0), par=par)
  heads, neurons = importance.importance_scores(model, trained, cloud, 16, 2,
                                                par=par)
  supernet, elastic_losses = elastic.train_elastic(
      model, trained, trained, cloud,
      elastic.Stage.of((1.0, 1 / 3), (1.0, 0.5), True, name='test'),
      training.StageHparams(**stage, seed=1), par=par)
  records = grid.measure_grid(model, supernet, dataset.validation, 10,
                              (1.0, 1 / 3), (1.0, 0.5), 16, par=par)
  if ownership.is_writer():
    flat = {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(supernet)[0]}
    np.savez(out, devices=jax.device_count(), processes=jax.process_count(),
             losses=np.array(losses), elastic=np.array(elastic_losses),
             heads=heads, neurons=neurons,
             accuracy=np.array([r['accuracy'] for r in records]), **flat)


if __name__ == '__main__':
  main(*sys.argv[1:])
