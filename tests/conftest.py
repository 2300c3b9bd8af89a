"""Shared fixtures: a tiny supernet and a tiny offline config."""
import os
import pathlib

import jax
import pytest

# Compiled programs are reused across test processes (subprocess tests, and
# reruns on the same machine); keyed by program and library versions.
_CACHE = pathlib.Path(__file__).resolve().parents[1] / '.cache' / 'xla'
os.environ.setdefault('ACME_JAX_COMPILATION_CACHE', str(_CACHE))
if os.environ['ACME_JAX_COMPILATION_CACHE'] != 'off':
  jax.config.update('jax_compilation_cache_dir',
                    os.environ['ACME_JAX_COMPILATION_CACHE'])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)

# Extracted pip: checkpoints and tokenized text go to the repo's .cache too,
# never the user's home.
os.environ.setdefault('ACME_JAX_CACHE', str(_CACHE.parent / 'acme_jax'))

from configs import default
from acme_jax.models import vit


@pytest.fixture(autouse=True, scope='module')
def _release_compiled_programs():
  """Drop JAX's compiled programs after each test module. Every XLA:CPU
  executable keeps its own memory mappings, and one pytest process running
  the whole suite would otherwise pass the kernel's vm.max_map_count (65530)
  and abort (SIGABRT) in an allocation; tests in one module still share."""
  yield
  jax.clear_caches()


@pytest.fixture(autouse=True)
def _release_workdirs():
  """A job holds its workdir for its process's life (`ownership.lock`); the
  test process runs many jobs, and a later test's subprocess may run on a
  workdir this process used: each test lets go of the ones it took."""
  yield
  from acme_jax import ownership
  ownership.release()


def sigint_as_in_a_terminal():
  """`preexec_fn` for a child that a test interrupts: SIGINT at its default
  whatever the runner got (one a shell started in the background ignores
  SIGINT, and so would its children, as they should)."""
  import signal
  signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope='session')
def tiny_vit():
  """A 3-layer, 4-head supernet on 8x8x1 images with random (not trivial) params."""
  model = vit.ViT(num_classes=5, patch_size=4, hidden_size=16, num_layers=3,
                  num_heads=4, mlp_dim=24, head_dim=4)
  params = vit.init_params(model, jax.random.key(0), (8, 8, 1))
  # Non-zero biases and non-identity LayerNorms so slicing mistakes show.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [
      leaf + 0.1 * jax.random.normal(k, leaf.shape) for leaf, k in
      zip(leaves, keys)])
  return model, params


def tiny_nas():
  """(Spec, NasConfig) shared by the device-stage tests: one compile of the
  train, controller and eval programs serves all of them."""
  from acme_jax.device import child as child_lib
  from acme_jax.device import controller, header
  spec = header.Spec(num_classes=3, feature_dim=5, grid_rank=2,
                     num_channels=4, num_nodes=2, max_layers=5,
                     dropout_rate=0.0)
  return spec, child_lib.NasConfig(spec, controller.Controller(2, hidden=8))


def tiny_rounds(mode, spec, schedule, strategy='loop', **overrides):
  """RoundsHparams for the device-stage tests (the header's optimizer, all
  gates prunable, no smoothing), with `overrides`."""
  from acme_jax.device import header
  from acme_jax.federated import acme
  from acme_jax.parallel import engine
  fields = dict(
      mode=mode, rounds=2, prune_ratio=0.5, local_epochs=1,
      finetune_epochs=1, taylor='squared', signature_kind='features',
      temperature=1.0, self_weight=None, js_variant='standard',
      optimizer='header', lr=1e-3, momentum=0.5, batch_size=8,
      prune_set='all', criterion_momentum=0.0, finetune_last=True,
      schedule=schedule,
      gates=header.Spec(num_classes=1, feature_dim=1,
                        num_channels=spec.num_channels,
                        num_nodes=spec.num_nodes, max_layers=spec.max_layers),
      strategy=(strategy if isinstance(strategy, engine.Options)
                else engine.Options(strategy)))
  return acme.RoundsHparams(**dict(fields, **overrides))


def live_fraction(gates, active) -> float:
  """Share of the used gate channels (`active`) still on in `gates`."""
  import numpy as np
  on = sum(float(np.sum((np.asarray(g) > 0) & (np.asarray(a) > 0)))
           for g, a in zip(jax.tree.leaves(gates), jax.tree.leaves(active)))
  total = sum(float(np.sum(np.asarray(a) > 0))
              for a in jax.tree.leaves(active))
  return on / max(total, 1.0)


def constructed_grid():
  """A 4 x 4 measured grid (depth, width, accuracy) made from a formula:
  concave in depth with an interior optimum, quadratic loss in width."""
  return [(d, w, round(0.92 - 1.3 * (0.85 - d)**2 - 0.45 * (1 - w)**2, 4))
          for d in (1.0, 0.75, 0.5, 0.25) for w in (1.0, 0.75, 0.5, 0.25)]


def tiny_config():
  """The default config shrunk to seconds: same code paths, toy sizes."""
  config = default.get_config()
  config.data.image_size = 8
  config.model.patch_size = 4
  config.model.hidden_size = 16
  config.model.num_layers = 3
  config.model.num_heads = 4
  config.model.mlp_dim = 16
  config.cloud.width_mults = (1.0, 0.5, 0.25)
  config.cloud.depth_mults = (1.0, 2 / 3, 1 / 3)
  config.system.header_allowance = 2000
  config.cloud.importance_batches = 2
  for stage in (config.cloud.teacher, config.cloud.width_stage,
                config.cloud.depth_stage):
    stage.epochs = 1
  config.header.num_channels = 8
  config.header.num_nodes = 2
  config.header.search_epochs = 1
  config.header.finetune_epochs = 1
  config.header.controller_steps_per_epoch = 2
  config.header.num_final_archs = 2
  config.baselines.depth_fractions = (1.0, 1 / 3)
  config.aggregation.rounds = 1
  config.aggregation.local_epochs = 1
  config.aggregation.finetune_epochs = 1
  config.aggregation.setups = ('IID', 'C4')
  config.baselines.train_sizes = (10,)
  config.baselines.search_budgets = ('default', 'prototype')
  # Mid-stage checkpoints every few steps: every pipeline test saves them.
  config.resume.every_steps = 3
  return config


def one_line_exit_2(capsys, fn, *args) -> str:
  """fn(*args) exits 2 with one `error: ` line on stderr; the line."""
  with pytest.raises(SystemExit) as e:
    fn(*args)
  lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert e.value.code == 2, lines
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  return lines[0]


@pytest.fixture
def readme_repo(tmp_path, monkeypatch):
  """A copy of the README, docs/*.md and the snapshots that readme_tables
  publishes into, its blocks pointed there."""
  import shutil
  import types
  from acme_jax.tools import readme_tables
  root = tmp_path / 'repo'
  (root / 'docs').mkdir(parents=True)
  shutil.copy(readme_tables.README, root / 'README.md')
  for page in (readme_tables.ROOT / 'docs').glob('*.md'):
    shutil.copy(page, root / 'docs' / page.name)
  for page in (readme_tables.ROOT / 'docs').glob('readme_*.json'):
    shutil.copy(page, root / 'docs' / page.name)
  blocks = {}
  for name, block in readme_tables.BLOCKS.items():
    moved = types.SimpleNamespace(**vars(block))
    moved.file = root / block.file.relative_to(readme_tables.ROOT)
    moved.snapshot = root / block.snapshot.relative_to(readme_tables.ROOT)
    moved.render = block.render
    blocks[name] = moved
  monkeypatch.setattr(readme_tables, 'BLOCKS', blocks)
  monkeypatch.setattr(readme_tables, 'ROOT', root)
  return root
