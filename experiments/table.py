"""What every table experiment shares: a repeat's inputs, cached repeats,
publishing.

A table experiment (`experiments.headers`, `header_ablation`,
`header_budget`, `engine_equivalence`, `aggregation`) computes one repeat's
rows at a time and summarizes them over `repeats` repeats. Repeat r draws
from r alone: the device data is partitioned with seed `config.seed + r`
and every device-side key comes from the experiment's stream
(`acme_jax.streams`) folded with r; the cloud is the workdir's, trained
once. So a cached repeat serves a run with more repeats, and `--shard=K/N`
(`cli.main(run, shards=True)`) spreads the repeats over processes that
fill one workdir's cache.
"""
import dataclasses
from typing import Any, Callable, List, Optional, Sequence, Tuple

import jax

from acme_jax import config as config_lib
from acme_jax import report
from acme_jax import world as world_lib
from acme_jax import workdir as workdir_lib
from acme_jax.data import stage as data_stage
from acme_jax.device import stage as device_stage
from acme_jax.edge import stage as edge_stage
from acme_jax.models import subnet as subnet_lib


@dataclasses.dataclass(frozen=True)
class RepeatInputs:
  """What one repeat of a table experiment runs on."""
  hp: device_stage.DeviceHparams
  seed: int     # config.seed + repeat: the partition's and the arms' seed
  splits: list  # per device its (train, val, test), partitioned with `seed`
  key: jax.Array  # the repeat's device-side key on the experiment's stream


def repeat_seed(config, repeat: int) -> int:
  return config.seed + repeat


def repeat_key(config, stream: int, repeat: int) -> jax.Array:
  """Repeat `repeat`'s key on the experiment's `stream`."""
  return jax.random.fold_in(jax.random.fold_in(
      jax.random.key(config.seed), stream), repeat)


def repeat_splits(world: world_lib.World, repeat: int) -> list:
  """Every device's (train, val, test) in repeat `repeat`: the config's
  partition, drawn with the repeat's seed."""
  return data_stage.device_splits(
      data_stage.PartitionHparams.from_config(
          world.config, seed=repeat_seed(world.config, repeat)),
      world.device_data, world.num_classes)


def repeat_inputs(world: world_lib.World, repeat: int,
                  stream: int) -> RepeatInputs:
  """The device hyper-parameters, seed, device splits and key of repeat
  `repeat` of the experiment drawing keys from `stream`."""
  config = world.config
  return RepeatInputs(
      hp=device_stage.DeviceHparams.from_config(config, world.num_classes),
      seed=repeat_seed(config, repeat), splits=repeat_splits(world, repeat),
      key=repeat_key(config, stream, repeat))


def full_width_features(world: world_lib.World, hp, depth: float,
                        splits) -> list:
  """Every device's cached features (`splits[d]` its data) through the
  full-width backbone cut at depth fraction `depth`."""
  model = world.cloud.model
  sub = subnet_lib.for_model(model, 1.0, depth)
  topology = world.topology
  return device_stage.local_features(
      hp, model, world.cloud.supernet, [sub] * topology.num_devices,
      [splits[d.id] for d in topology.devices])


def full_width_targets(world: world_lib.World, hp, depth: float,
                       key) -> list:
  """Every device's header target on the full-width backbone cut at
  `depth`. The header gets the whole header allowance (the backbone's own
  parameters are not charged), so every arm is held to the same limit; the
  per-device keys and initial weights are the same at every depth."""
  allowance = edge_stage.EdgeHparams.from_config(
      world.config).header_allowance
  return device_stage.targets(hp, [
      {'device': d.id, 'edge': d.edge_id, 'width_mult': 1.0,
       'depth_mult': depth, 'budget': allowance, 'params': 0}
      for d in world.topology.devices], key)


def full_width_cut(world: world_lib.World, inputs: RepeatInputs,
                   depth: float) -> Tuple[list, list]:
  """(features, targets) of every device on the full-width backbone cut at
  `depth`, in repeat `inputs`."""
  return (full_width_features(world, inputs.hp, depth, inputs.splits),
          full_width_targets(world, inputs.hp, depth, inputs.key))


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A table experiment's fixed parts: where its repeats are cached and how
  its summary is published."""
  name: str  # experiments/<name>/ (the cache), <name>.json, its section
  sections: Sequence[str]  # the config sections its repeats depend on
  repeats_in: str  # the config section whose `repeats` counts its repeats
  markdown: Callable[[dict], str]  # the summary's table (`report`)
  figure: Optional[Callable[[dict], Any]] = None  # <name>.png, where given

  def fingerprint(self, config) -> dict:
    """What a cached repeat (or a cell within one) is valid for."""
    return config_lib.repeat_fingerprint(config, self.sections)

  def run(self, config, workdir, log, shard,
          one_repeat: Callable[[world_lib.World, int, Callable], Any],
          summarize: Callable[[List[Any]], dict],
          partitions: Sequence = ()) -> Optional[dict]:
    """The experiment on the world of `config` in `workdir` (every
    partition in `partitions` checked up front, as `world.build`).

    `one_repeat(world, r, log)` gives repeat r's rows, cached as
    `experiments/<name>/repeat_<r>.json` under `fingerprint`. With `shard`
    (K, N) only repeats r % N == K are computed and None is returned.
    Otherwise `summarize(rows)` is published: `<name>.json`, `<name>.png`,
    the `<name>` section of results.json and report.md, and its table in
    the log."""
    # Positional: tests stand in a `build(*args)`. A shard shares the
    # workdir with the other shards.
    world = world_lib.build(config, workdir, log, partitions,
                            shard is not None)
    rows = world.wd.cached_repeats(
        self.name, self.fingerprint(config), config[self.repeats_in].repeats,
        lambda r: one_repeat(world, r, log), shard)
    if rows is None:
      return None  # a shard fills the cache; the run without one publishes
    summary = summarize(rows)
    wd, name = world.wd, self.name
    workdir_lib.atomic_write_json(wd / f'{name}.json', summary)
    if self.figure is not None:
      workdir_lib.atomic_save_figure(wd / f'{name}.png', self.figure(summary))
    report.write_results(wd, {name: summary}, config)
    log('\n' + self.markdown(summary))
    if self.figure is not None:
      log(f'\n{name}: {wd / f"{name}.json"}, plot: {wd / f"{name}.png"}')
    return summary
