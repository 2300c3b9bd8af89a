"""Plan mode: the full-size ledger from shapes alone, in seconds."""
import subprocess
import sys

import pytest

from acme_jax.tools import plan
from configs import cifar100_vit_b16


def test_plan_of_the_paper_setup():
  summary = plan.plan(cifar100_vit_b16.get_config())
  assert len(summary['devices']) == 5
  # ViT-B/16 at full width and depth, exactly: 85,875,556 params with a
  # 100-class head (86,567,656 with ImageNet's 1000 classes).
  assert max(d['params'] for d in summary['devices']) <= 85_875_556
  # CIFAR-100 train: 500 per class, 10% held out for validation -> 450, the
  # cloud keeps half -> 225 on the device side. Each C4 user: 25 classes x
  # floor(10% x 225) = 550 samples, minus local validation and test (20% +
  # 20%) -> 330 for training.
  assert all(d['train_samples'] == 330 for d in summary['devices'])
  raw = summary['centralized']['by_kind']['raw_data']
  # Raw data as the device stores it: 32x32x3 uint8 + a 4-byte label, 2 hops.
  assert raw == 2 * 5 * 330 * (32 * 32 * 3 + 4)
  sensitivity = summary['sensitivity']['comparison']
  assert sensitivity['centralized']['by_kind']['raw_data'] == (
      2 * 5 * 330 * (224 * 224 * 3 + 4))  # at the model's input resolution
  assert summary['acme']['by_kind']['raw_data'] == 0
  # Header rounds: 5 signatures of 200 x 768 float32, once; 2 rounds of one
  # float32 importance per gate channel up and down per device: C = 256
  # channels, 5 cells (3 + 2) x 5 nodes x 2 branches x 4 convs, the stem and
  # each cell's output.
  assert summary['acme']['by_kind']['signature'] == 5 * 200 * 768 * 4
  units = 256 * (1 + 5 * 5 * 2 * 4 + 5)
  assert summary['acme']['by_kind']['importance'] == 5 * 2 * 2 * units * 4
  assert summary['ratio'] == pytest.approx(
      summary['acme']['total'] / summary['centralized']['total'])
  # The second scenario: every device receives the full ViT-B/16 backbone
  # (85,798,656 parameters without a head) over 2 hops.
  full = summary['full_model_deployment']
  assert full['total'] == 5 * 2 * 4 * 85_798_656
  assert full['ratio'] == pytest.approx(summary['acme']['total'] /
                                        full['total'])


def test_plan_command_prints_the_table():
  result = subprocess.run(
      [sys.executable, '-m', 'acme_jax.tools.plan',
       '--config=configs/cifar100_vit_b16.py'],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert 'ACME / centralized =' in result.stdout
  assert 'raw_data' in result.stdout and 'Assumptions' in result.stdout
  assert 'Sensitivity (not the result)' in result.stdout
  line = next(l for l in result.stdout.splitlines()
              if l.startswith('full-model deployment'))
  summary = plan.plan(cifar100_vit_b16.get_config())
  assert f"{summary['full_model_deployment']['ratio']:.4f}" in line
