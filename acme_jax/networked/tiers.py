"""Each tier on its own machine (the launcher starts them all on one).

  # once, anywhere: the run's CA, each edge host's certificate, node keys
  python -m acme_jax.networked.tiers secrets --workdir=S --hosts=EDGE_HOST \
      --nodes=device0,device1,cloud_key
  # cloud machine: train, then serve every edge (one SuperNode per edge)
  python -m acme_jax.networked.tiers cloud-prepare --config_json=C --workdir=W/cloud
  python -m acme_jax.networked.tiers cloud-node --workdir=W/cloud \
      --edge_address=EDGE_HOST:19100 --ca=ca.crt --key=cloud_key
  # edge machine: its SuperLink (listening on all interfaces), then its run
  python -m acme_jax.networked.tiers edge --config_json=C --workdir=W/edge0 \
      --edge=0 --port=19100 --listen=0.0.0.0 --tls_dir=secrets \
      --register=device0.pub,device1.pub,cloud_key.pub --expected_devices=2
  # each device machine
  python -m acme_jax.networked.tiers device --config_json=C --workdir=W/device0 \
      --device=0 --edge=0 --budget=150000 --edge_address=EDGE_HOST:19100 \
      --ca=ca.crt --key=device0

C is the run's config as JSON (`launcher` writes it; any machine can make it
from the same config file). Keys and certificates come from
`acme_jax.networked.security` (the edge's certificate must name EDGE_HOST).
"""
import argparse
import os
import pathlib
import sys


def _key(path):
  if not path:
    return None
  return {'private': path, 'public': path + '.pub'}


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m acme_jax.networked.tiers')
  p.add_argument('tier', choices=('secrets', 'cloud-prepare', 'cloud-node',
                                  'edge', 'device'))
  p.add_argument('--hosts', default='127.0.0.1,localhost')
  p.add_argument('--nodes', default='')
  p.add_argument('--config_json', default='')
  p.add_argument('--workdir', required=True)
  p.add_argument('--edge', type=int, default=0)
  p.add_argument('--device', type=int, default=0)
  p.add_argument('--budget', type=int, default=0)
  p.add_argument('--edge_address', default='127.0.0.1:19100')
  p.add_argument('--port', type=int, default=19100)
  p.add_argument('--listen', default='127.0.0.1')
  p.add_argument('--node_port', type=int, default=0)
  p.add_argument('--ca', default='')
  p.add_argument('--key', default='')
  p.add_argument('--tls_dir', default='')
  p.add_argument('--register', default='')
  p.add_argument('--expected_devices', type=int, default=0)
  args = p.parse_args(argv)

  from acme_jax.networked import processes
  workdir = pathlib.Path(args.workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  if args.tier == 'secrets':
    from acme_jax.networked import security
    security.certificates(workdir, hosts=tuple(args.hosts.split(',')))
    for name in filter(None, args.nodes.split(',')):
      security.node_key(workdir, name)
    return 0
  if args.tier == 'cloud-prepare':
    from acme_jax import cli
    from acme_jax.networked import cloud, handlers
    cli.enable_compilation_cache()
    cloud.prepare(handlers.config_from_json(args.config_json), workdir)
    return 0
  port = args.node_port or processes.free_port()
  env = processes.flower_env(workdir / 'flwr')
  if args.tier == 'cloud-node':
    cmd = processes.supernode_command(
        args.edge_address, port, {'role': 'cloud', 'workdir': str(workdir)},
        ca=args.ca or None, key=_key(args.key))
  elif args.tier == 'device':
    cmd = processes.supernode_command(
        args.edge_address, port,
        {'role': 'device', 'device': args.device, 'edge': args.edge,
         'budget': args.budget, 'workdir': str(workdir),
         'config': str(pathlib.Path(args.config_json).resolve())},
        ca=args.ca or None, key=_key(args.key))
  else:  # edge: SuperLink in the background, then the edge's run
    import subprocess
    tls = None
    if args.tls_dir:
      d = pathlib.Path(args.tls_dir).resolve()
      tls = {'ca': d / 'ca.crt', 'cert': d / 'server.pem',
             'key': d / 'server.key'}
    address = f'127.0.0.1:{args.port}'
    processes.write_federation(workdir / 'flwr', f'edge{args.edge}', address,
                               tls['ca'] if tls else None)
    link = subprocess.Popen(processes.superlink_command(
        args.port, workdir / 'superlink.db', tls, bool(args.register),
        host=args.listen), env=env)
    processes.wait_port('127.0.0.1', args.port, 60, link)
    flwr = processes._bin('flwr')
    for pub in filter(None, args.register.split(',')):
      subprocess.run([flwr, 'supernode', 'register', pub,
                      f'edge{args.edge}'], env=env, check=False)
    subprocess.run([flwr, 'run', str(processes.APP_DIR), f'edge{args.edge}',
                    '--run-config', processes.node_config_arg({
                        'edge': args.edge, 'workdir': str(workdir),
                        'config': str(pathlib.Path(
                            args.config_json).resolve()),
                        'expected-devices': args.expected_devices})],
                   env=env, check=True)
    return link.wait()
  os.execvpe(cmd[0], cmd, env)


if __name__ == '__main__':
  sys.exit(main())
