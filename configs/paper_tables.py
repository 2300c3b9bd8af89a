"""The paper's comparison tables on the offline default, over 5 repeats.

The default config at five repeats of the header and aggregation tables
(each repeat redraws the device data and every device-side key; the cloud's
supernet is trained once). Reuses a workdir's cloud stages, so it can run on
top of `make run`'s:

  python -m experiments.main --config=configs/paper_tables.py --workdir=runs/tables
  python -m experiments.headers --config=configs/paper_tables.py --workdir=runs/tables
  python -m experiments.aggregation --config=configs/paper_tables.py --workdir=runs/tables
"""
from configs import common
from configs import default


def get_config(arg=None):
  common.parse_arg(arg, 'configs/paper_tables.py')  # no variants
  config = default.get_config()
  config.baselines.repeats = 5
  config.aggregation.repeats = 5
  config.federated.repeats = 5
  return config
