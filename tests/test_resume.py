"""Mid-stage checkpoints: a long stage interrupted mid-way and rerun ends
byte-identical to one that ran through; a checkpoint of another config or a
damaged one is ignored."""
import jax
import numpy as np
import pytest

from acme_jax import resume
from acme_jax import training
from acme_jax.cloud import elastic, teacher
from acme_jax.data.base import Split


def _data(n=24):
  rng = np.random.default_rng(0)
  return Split(rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
               rng.integers(0, 5, n).astype(np.int32), np.arange(n))


def _hp(epochs=3):
  # 24 samples / batch 5 = 4 steps an epoch: checkpoints fall mid-epoch.
  return training.StageHparams(epochs=epochs, learning_rate=1e-3,
                               warmup_fraction=0.2, weight_decay=0.01,
                               clip_norm=1.0, max_shift=1, batch_size=5,
                               seed=3)


class Interrupt(Exception):
  pass


def _interrupt_at(monkeypatch, step: int):
  """The step-th training step raises, as Ctrl-C would, after it ran."""
  calls = {'n': 0}
  real = training.Progress.step

  def step_then_stop(self):
    real(self)
    calls['n'] += 1
    if calls['n'] == step:
      raise Interrupt

  monkeypatch.setattr(training.Progress, 'step', step_then_stop)
  return lambda: monkeypatch.setattr(training.Progress, 'step', real)


def _equal(a, b):
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('stage', [
    pytest.param('teacher', marks=pytest.mark.slow),
    pytest.param('elastic', marks=pytest.mark.slow)])
def test_an_interrupted_stage_resumes_byte_identical(tiny_vit, tmp_path,
                                                     monkeypatch, stage):
  model, params = tiny_vit
  data, hp = _data(), _hp()

  def run(partial):
    if stage == 'teacher':
      return teacher.train_teacher(model, params, data, hp, partial=partial)
    return elastic.train_elastic(model, params, params, data,
                                 elastic.Stage.of((1.0,), (1.0, 0.5),
                                                  name='width'), hp,
                                 partial=partial)

  through, through_losses = run(None)
  partial = lambda: resume.Partial(tmp_path / stage, 3, {'x': 1})  # noqa
  restore = _interrupt_at(monkeypatch, 7)  # epoch 2, after the save at 6
  with pytest.raises(Interrupt):
    run(partial())
  restore()
  saved = resume.Partial(tmp_path / stage, 3, {'x': 1})
  assert (tmp_path / f'{stage}.partial.json').exists()
  resumed, resumed_losses = run(saved)
  assert _equal(resumed, through)
  assert resumed_losses == through_losses and len(through_losses) == 3
  # The finished stage leaves no mid-stage state behind.
  assert not list(tmp_path.glob(f'{stage}.partial*'))


def test_a_checkpoint_of_another_config_or_damaged_is_ignored(tmp_path):
  tree = {'w': np.arange(6, dtype=np.float32), 'k': jax.random.key(4)}
  # The stage's directory need not exist yet (cloud/ before the teacher).
  first = resume.Partial(tmp_path / 'new' / 's', 1, {}, log=lambda m: None)
  first.save(tree, {}, 1)
  assert first.load(tree) is not None
  with pytest.raises(TypeError, match='exactly one'):  # no template
    first.load()
  p = resume.Partial(tmp_path / 's', 1, {'lr': 0.1}, log=lambda m: None)
  p.save(tree, {'steps': 2}, 2)
  same = resume.Partial(tmp_path / 's', 1, {'lr': 0.1}, log=lambda m: None)
  loaded, loop = same.load(tree)
  assert loop == {'steps': 2}
  assert np.array_equal(loaded['w'], tree['w'])
  assert np.array_equal(jax.random.key_data(loaded['k']),
                        jax.random.key_data(tree['k']))
  messages = []
  other = resume.Partial(tmp_path / 's', 1, {'lr': 0.2}, log=messages.append)
  assert other.load(tree) is None and 'another config' in messages[-1]
  (tmp_path / 's.partial.npz').write_bytes(b'damaged')
  assert same.load(tree) is None
  off = resume.Partial(tmp_path / 's', 0, {'lr': 0.1})
  assert off.load(tree) is None and not off.due(10**6)


def test_a_multi_host_run_neither_saves_nor_resumes_mid_stage(tmp_path,
                                                              monkeypatch):
  """Every process of a multi-host run would write (and finish() delete)
  the same files on the shared workdir: there a stage runs through."""
  tree = {'w': np.arange(3.0)}
  resume.Partial(tmp_path / 'stage', 1, {'x': 1}).save(tree, {'epoch': 0}, 1)
  monkeypatch.setattr(resume.jax, 'process_count', lambda: 2)
  other = resume.Partial(tmp_path / 'stage2', 1, {'x': 1})
  assert not other.due(10)
  other.save(tree, {'epoch': 0}, 10)
  assert not list(tmp_path.glob('stage2*'))
  assert resume.Partial(tmp_path / 'stage', 1, {'x': 1}).load(tree) is None
  monkeypatch.undo()
  saved, loop = resume.Partial(tmp_path / 'stage', 1, {'x': 1}).load(tree)
  assert loop == {'epoch': 0} and np.array_equal(saved['w'], tree['w'])


@pytest.mark.parametrize('every,stop', [(4, 5), (3, 4), (4, 9)])
def test_a_resumed_budget_keeps_every_epochs_loss(tmp_path, monkeypatch,
                                                  every, stop):
  """A step budget (10 steps, 4 an epoch: the third epoch cut short),
  interrupted after a save on an epoch's last step (4, 8) or mid-epoch
  (3): the resumed loop ends with the uninterrupted one's state and every
  epoch's mean loss."""
  data = _data()
  hp = training.StageHparams(epochs=99, learning_rate=1e-3, batch_size=5,
                             seed=3, steps=10)

  def step(state, images, labels):
    loss = np.float32(state['n'] * 1.5 + float(labels[0]))
    return {'n': state['n'] + 1}, loss

  start = {'n': np.float32(0)}
  through, through_losses = training.fit(step, start, data, hp, 'budget')
  assert float(through['n']) == 10 and len(through_losses) == 3
  partial = lambda: resume.Partial(tmp_path / 's', every, {'x': 1})  # noqa
  restore = _interrupt_at(monkeypatch, stop)
  with pytest.raises(Interrupt):
    training.fit(step, start, data, hp, 'budget', partial())
  restore()
  resumed, losses = training.fit(step, start, data, hp, 'budget', partial())
  assert float(resumed['n']) == 10
  assert losses == through_losses
