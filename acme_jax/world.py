"""The one set-up every job shares: the config checked, the data and the
devices' partition, the cloud's trained supernet, the selection and the
topology.

Every entry point (the main job, each paper-table experiment, the networked
cloud) calls `build`; each stage is cached in the workdir, so a job run on a
finished workdir loads the trained supernet instead of training it again.
"""
import dataclasses
import time
from typing import Optional, Sequence, Tuple

import jax

from acme_jax import config as config_lib
from acme_jax import errors
from acme_jax import report
from acme_jax import sizes
from acme_jax import ownership
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import grid as grid_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.data import stage as data_stage
from acme_jax.device import stage as device_stage
from acme_jax.hardware import fleet as fleet_lib
from acme_jax.selection import stage as selection_stage
from acme_jax.parallel import mesh
from acme_jax.hierarchy import topology as topology_lib

# The device-side stages depend on these sections (the cloud's, and theirs).
DEVICE_SECTIONS = cloud_stage.SECTIONS + ('selection', 'system', 'header',
                                          'aggregation')


# Files the jobs write at the workdir's top (and the cloud's tables).
OUTPUT_FILES = ('results.json', 'report.md', 'ledger.json', 'selection.json',
                'devices.json', 'pareto.png', 'cloud/grid.md',
                'cloud/grid.json', 'cloud/grid_test.json',
                'cloud/grid_teacher_cut_test.json')


@dataclasses.dataclass(frozen=True)
class World:
  """What every job starts from."""
  config: object                 # the validated ConfigDict
  wd: workdir_lib.Workdir
  dataset: object                # data.base.Dataset
  cloud_data: object             # the cloud's share of train (a Split)
  device_data: object            # the devices' share of train (a Split)
  splits: list                   # per device (train, val, test) Splits
  cloud: cloud_stage.Trained
  selection: dict
  topology: topology_lib.Topology
  # The devices as hardware, when they budget latency or memory through a
  # latency table (config.system.hardware); None: parameters alone.
  fleet: Optional[fleet_lib.Fleet] = None

  @property
  def num_classes(self) -> int:
    return self.dataset.num_classes


def prepare(config, workdir, shared: bool = False) -> workdir_lib.Workdir:
  """Everything a run checks before any work: the config, multi-host
  start-up, the device count the batches split over, the workdir.

  The one place an in-process job's config is validated: every job
  (`build`, `train_cloud`, an experiment's `run`, from the command line or
  called directly) comes here before any work, and `cli.main` validates
  only for `--validate_only`, which runs no job. (The networked launcher,
  whose tiers come here in their own processes, and the plan tool, which
  trains nothing, validate once at their start.)"""
  config_lib.validate(config)
  mesh.initialize(config.cloud.distributed)
  config_lib.check_devices(config, jax.device_count())
  # Held for the job's life: a second job on this workdir is refused.
  wd = workdir_lib.Workdir(workdir, writer=ownership.is_writer(),
                          shared=shared)
  wd.check_layout(files=OUTPUT_FILES, dirs=cloud_stage.STAGES)
  report.check_results(wd / 'results.json')
  return wd


def build(config, workdir, log=print,
          partitions: Sequence[Tuple[data_stage.PartitionHparams, str]] = (),
          shared: bool = False, hardware: bool = False) -> World:
  """The world of `config` in `workdir`. Every partition a job will draw
  (`partitions`: (hparams, config field to blame), besides the config's
  own) is checked before any training. `shared`: a shard's world, beside
  other shards: it loads the cloud stages and trains none. `hardware`: the
  job budgets devices in ms and MiB (`world.fleet`); any other refuses a
  latency table rather than ignore the budgets it sets."""
  if config.system.hardware.latency_table and not hardware:
    raise errors.UserError(fleet_lib.UNSUPPORTED)
  wd = prepare(config, workdir, shared)
  if shared:
    cloud_stage.require_trained(wd, config)
  t0 = time.time()
  dataset, cloud_data, device_data = data_stage.load(config, log)
  data_stage.check_cloud_batch(config, cloud_data)
  splits = data_stage.check_partition(
      data_stage.PartitionHparams.from_config(config), device_data,
      dataset.num_classes)
  for hp, field in partitions:
    data_stage.check_partition(hp, device_data, dataset.num_classes, field)
  # Before any training: a latency table of another backend or family, or
  # without the batch the devices are budgeted at, is refused here.
  fleet = fleet_lib.Fleet.from_config(
      config, dataset, device_stage.header_spec(config, dataset.num_classes),
      sum(sizes.devices_per_edge(config)))
  if fleet is not None and not config.between_grid.deliver:
    # Grid cells are all the edges can deliver: their sizes and predicted
    # costs are known before training.
    cells = sizes.grid(config)
    fleet.check_servable(cells, [d.budget for d in topology(
        config, cells).devices], config.system.header_allowance)
  cloud = cloud_stage.run(config, wd, dataset, cloud_data, log)
  log(f'[cloud] grid measured ({time.time() - t0:.0f}s)')
  selection = selection_stage.run(
      selection_stage.SelectionHparams.from_config(config), cloud.grid,
      sizes.architecture(config, dataset.num_classes),
      between_grid=delivered_between_grid(config, wd, dataset, cloud),
      hardware_costs=None if fleet is None else fleet.backbone_costs)
  if ownership.is_writer():
    workdir_lib.atomic_write_json(wd / 'selection.json', selection)
  return World(config, wd, dataset, cloud_data, device_data, splits, cloud,
               selection, topology(config, cloud.grid), fleet)


def delivered_between_grid(config, wd: workdir_lib.Workdir, dataset,
                           cloud: cloud_stage.Trained) -> list:
  """With `between_grid.deliver`, the validation records of the shapes
  between the grid's points that are subnets of their own (the edges may
  deliver them); else none."""
  section = config.get('between_grid')
  if section is None or not section.deliver:
    return []
  shapes, _ = grid_lib.between_points(
      cloud.model, config.cloud.depth_mults, config.cloud.width_mults,
      list(zip(section.depths, section.widths)))
  return wd.cached_stage(
      'cloud/between_grid.json',
      config_lib.subset(config, cloud_stage.SECTIONS + ('between_grid',)),
      lambda: grid_lib.measure_points(
          cloud.model, cloud.supernet, dataset.validation,
          dataset.num_classes, shapes, config.cloud.eval_batch_size))


def train_cloud(config, workdir, log=print):
  """(dataset, the cloud's trained supernet): the cloud stages alone."""
  wd = prepare(config, workdir)
  dataset, cloud_data, _ = data_stage.load(config, log)
  data_stage.check_cloud_batch(config, cloud_data)
  return dataset, cloud_stage.run(config, wd, dataset, cloud_data, log)


def topology(config, grid_records) -> topology_lib.Topology:
  """Edges, devices, budgets (params of backbone + header) and profiles
  (`TopologyHparams`). Budgets not given are spread over [smallest, largest]
  trained subnet + the header allowance."""
  return topology_lib.from_hparams(
      topology_lib.TopologyHparams.from_config(config),
      [r['params'] for r in grid_records])
