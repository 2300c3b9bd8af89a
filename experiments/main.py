"""The main job: ACME's single loop end to end on one config.

  python -m experiments.main --config=configs/default.py --workdir=runs/default
  python -m experiments.main --config=configs/default.py --workdir=runs/s3 \
      --config.seed=3 --config.cloud.width_mults=0.5,1.0

Rerunning with the same --workdir resumes: finished stages are loaded. It
ends by printing a short summary (each device's backbone, header and
accuracy, the ledger's ratios, where report.md and the plot are); `make run`
is this job on the default. The paper's comparison tables are experiments
of their own (`experiments.headers`, `experiments.aggregation`, ...), run on
the same workdir; `make tables` runs them all.
"""
from acme_jax import cli
from acme_jax import pipeline


def run(config, workdir):
  return pipeline.run(config, workdir)


if __name__ == '__main__':
  cli.main(run)
