"""The main job as the README runs it on several hosts: two processes of
`python -m experiments.main` over loopback on one workdir, against one
process (slow: about five minutes on two cores)."""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# tests/conftest.py's tiny_config as command-line overrides.
TINY = [
    '--config.data.image_size=8', '--config.model.patch_size=4',
    '--config.model.hidden_size=16', '--config.model.num_layers=3',
    '--config.model.num_heads=4', '--config.model.mlp_dim=16',
    '--config.cloud.width_mults=1.0,0.5,0.25',
    '--config.cloud.depth_mults=1.0,0.6666666666666666,0.3333333333333333',
    '--config.system.header_allowance=2000',
    '--config.cloud.importance_batches=2',
    '--config.cloud.teacher.epochs=1', '--config.cloud.width_stage.epochs=1',
    '--config.cloud.depth_stage.epochs=1', '--config.header.num_channels=8',
    '--config.header.num_nodes=2', '--config.header.search_epochs=1',
    '--config.header.finetune_epochs=1',
    '--config.header.controller_steps_per_epoch=2',
    '--config.header.num_final_archs=2', '--config.aggregation.rounds=1',
    '--config.aggregation.local_epochs=1',
    '--config.aggregation.finetune_epochs=1',
]


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _results(workdir):
  return json.loads((workdir / 'results.json').read_text())


@pytest.mark.slow
def test_two_processes_of_the_main_job_match_one(tmp_path):
  """docs/scale.md's coordinator command with two processes: each feeds
  its half of every global batch; process 1 writes nothing (every write it
  attempts under the workdir is recorded by an audit hook); the cloud's
  grid matches one process's within float tolerance and every device gets
  the same backbone."""
  one = tmp_path / 'one'
  single = subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config=configs/default.py',
       f'--workdir={one}'] + TINY, cwd=ROOT, env=_env(), capture_output=True,
      text=True, timeout=900)
  assert single.returncode == 0, single.stderr[-3000:]

  shared = tmp_path / 'two'
  port = _free_port()
  procs = []
  for i in range(2):
    flags = [f'--workdir={shared}', '--config=configs/default.py'] + TINY + [
        f'--config.cloud.distributed.coordinator=127.0.0.1:{port}',
        '--config.cloud.distributed.num_processes=2',
        f'--config.cloud.distributed.process_id={i}',
        '--config.cloud.distributed.cpu_collectives=gloo']
    command = ([sys.executable, 'tests/helpers/audited_main.py'] if i else
               [sys.executable, '-m', 'experiments.main'])
    procs.append(subprocess.Popen(
        command + flags, cwd=ROOT,
        env=dict(_env(), AUDIT_OUT=str(tmp_path / f'writes_{i}.json')),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert json.loads((tmp_path / 'writes_1.json').read_text()) == []
  # Process 1 computed what process 0 did (gloo names each rank; times
  # differ).
  logs = [[re.sub(r'\(\d+s\)', '', l) for l in out.splitlines()
           if not l.startswith('[Gloo]')] for out, _ in outs]
  assert logs[0] == logs[1]

  a, b = _results(one), _results(shared)
  for x, y in zip(a['cloud']['grid'], b['cloud']['grid'], strict=True):
    assert (x['depth_mult'], x['width_mult']) == (y['depth_mult'],
                                                  y['width_mult'])
    # 270 validation examples: one flipped prediction at most.
    np.testing.assert_allclose(x['accuracy'], y['accuracy'], atol=1.5 / 270)
  assert [(d['depth_mult'], d['width_mult']) for d in a['devices']] == [
      (d['depth_mult'], d['width_mult']) for d in b['devices']]
