"""ACME's loop with every tier its own OS process, talking over Flower.

  python -m experiments.networked --config=configs/default.py --workdir=runs/networked
  python -m experiments.networked --config=configs/default.py --workdir=runs/faults \
      --config.network.faults=kill:device1@train.round:0

One cloud, one SuperLink + ServerApp per edge, one SuperNode per device, on
127.0.0.1 with TLS and device keys; the launcher starts them all, restarts
a tier process that dies, collects `networked.json` / `networked.md` and
stops everything it started, however it ends (an error, Ctrl-C, SIGTERM, or
a SIGKILL of this process: `acme_jax/networked/reaper.py`). Rerunning with
the same --workdir resumes. How to start each tier on its own machine:
`acme_jax/networked/tiers.py`.
"""
from acme_jax import cli
from acme_jax.networked import launcher


def run(config, workdir):
  # The launcher validates the config, then its network section, before
  # it starts any process.
  return launcher.Launcher(config, workdir).run()


if __name__ == '__main__':
  cli.main(run)
