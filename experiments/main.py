"""The main job: ACME's single loop end to end on one config.

  python -m experiments.main --config=configs/default.py --workdir=runs/default
  python -m experiments.main --config=configs/default.py --workdir=runs/s3 \
      --config.seed=3 --config.cloud.width_mults=0.5,1.0

Rerunning with the same --workdir resumes: finished stages are loaded. The
paper's comparison tables are `experiments.headers` and
`experiments.aggregation`, run on the same workdir (`make run` runs all
three).
"""
from acme_jax import cli
from acme_jax import pipeline


def run(config, workdir):
  return pipeline.run(config, workdir)


if __name__ == '__main__':
  cli.main(run)
