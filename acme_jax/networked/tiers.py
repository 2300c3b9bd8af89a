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
  # each device machine: its warm worker and its SuperNode
  python -m acme_jax.networked.tiers device --config_json=C --workdir=W/device0 \
      --device=0 --edge=0 --budget=150000 --edge_address=EDGE_HOST:19100 \
      --ca=ca.crt --key=device0

C is the run's config as JSON (`launcher` writes it; any machine can make it
from the same config file). Keys and certificates come from
`acme_jax.networked.security` (the edge's certificate must name EDGE_HOST).
"""
import pathlib
import subprocess
import sys
import time

from acme_jax import errors
from acme_jax.networked import processes, startup


def _key(path):
  if not path:
    return None
  return {'private': path, 'public': path + '.pub'}


def main(argv=None):
  p = errors.OneLineParser(prog='python -m acme_jax.networked.tiers')
  p.add_argument('tier', choices=('secrets', 'cloud-prepare', 'cloud-node',
                                  'edge', 'device'))
  p.add_argument('--hosts', default='127.0.0.1,localhost')
  p.add_argument('--nodes', default='')
  p.add_argument('--config_json', default='')
  p.add_argument('--workdir', required=True,
                 help='this tier\'s directory (created if missing)')
  p.add_argument('--edge', type=int, default=0)
  p.add_argument('--device', type=int, default=0)
  p.add_argument('--budget', type=int, default=0)
  p.add_argument('--edge_address', default='127.0.0.1:19100')
  p.add_argument('--port', type=int, default=19100)
  p.add_argument('--listen', default='127.0.0.1')
  p.add_argument('--warm_worker', type=int, default=1,
                 help='1: a long-lived worker answers (JAX stays loaded); '
                      "0: Flower's stock per-message process")
  p.add_argument('--ca', default='',
                 help="the run's CA certificate (TLS); without it, give "
                      '--insecure')
  p.add_argument('--insecure', action='store_true',
                 help='a node dials its edge without TLS')
  p.add_argument('--key', default='')
  p.add_argument('--tls_dir', default='')
  p.add_argument('--register', default='')
  p.add_argument('--expected_devices', type=int, default=0)
  args = p.parse_args(argv)
  _check(args)
  return errors.boundary(_run, args)


def _exists(flag: str, value: str, what: str = 'file'):
  if not value:
    raise errors.UserError(f'--{flag} is required for this tier')
  path = pathlib.Path(value)
  if not (path.is_dir() if what == 'directory' else path.is_file()):
    raise errors.UserError(f'--{flag}={value}: no such {what}')


def _check(args):
  """Every input of the tier, before anything is written or started (one
  line, exit 2)."""

  def check():
    blocked = errors.file_in_the_way(args.workdir)
    if blocked is not None:
      raise errors.UserError(f'--workdir={args.workdir}: {blocked} is a '
                             'file; give a directory')
    if args.tier != 'secrets' and args.tier != 'cloud-node':
      _exists('config_json', args.config_json)
    if args.tier == 'edge':
      if args.tls_dir:
        _exists('tls_dir', args.tls_dir, 'directory')
        for name in ('ca.crt', 'server.pem', 'server.key'):
          _exists('tls_dir', str(pathlib.Path(args.tls_dir) / name))
      for pub in filter(None, args.register.split(',')):
        _exists('register', pub)
      processes.check_port_free(args.listen, args.port,
                                'give another --port')
    if args.tier in ('device', 'cloud-node'):
      if not args.ca and not args.insecure:
        raise errors.UserError(
            f'{args.tier}: --ca is required to dial the edge over TLS (or '
            'give --insecure for an edge without TLS)')
      if args.ca:
        _exists('ca', args.ca)
      if args.key:
        _exists('key', args.key)
        _exists('key', args.key + '.pub')

  errors.boundary(check)


def _run(args):
  workdir = pathlib.Path(args.workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  if args.tier == 'secrets':
    from acme_jax.networked import security
    security.certificates(workdir, hosts=tuple(args.hosts.split(',')))
    for name in filter(None, args.nodes.split(',')):
      security.node_key(workdir, name)
    return 0
  if args.tier == 'cloud-prepare':
    from acme_jax import cli, malloc
    from acme_jax.networked import cloud, handlers
    malloc.return_large_frees_to_the_os()  # it trains the cloud stages
    cli.enable_compilation_cache()
    cloud.prepare(handlers.config_from_json(args.config_json), workdir)
    return 0
  if args.tier == 'edge':
    tls = None
    if args.tls_dir:
      d = pathlib.Path(args.tls_dir).resolve()
      tls = {'ca': d / 'ca.crt', 'cert': d / 'server.pem',
             'key': d / 'server.key'}
    keys = [(pathlib.Path(pub).stem, pub)
            for pub in filter(None, args.register.split(','))]
    link = startup.start_edge(
        _spawn, args.edge, workdir,
        pathlib.Path(args.config_json).resolve(),
        startup.Endpoint(port=args.port, listen=args.listen, tls=tls,
                         auth=bool(keys)),
        keys=keys, expected_devices=args.expected_devices)
    return link.wait()
  if args.tier == 'cloud-node':
    node = {'role': 'cloud', 'workdir': str(workdir)}
  else:
    node = {'role': 'device', 'device': args.device, 'edge': args.edge,
            'budget': args.budget, 'workdir': str(workdir),
            'config': str(pathlib.Path(args.config_json).resolve())}
  return _serve_node(args, args.tier, node)


def _spawn(name, cmd, env):
  del name
  return subprocess.Popen(cmd() if callable(cmd) else cmd, env=env,
                          cwd=processes.REPO)


def _serve_node(args, name, node) -> int:
  """A node on its own machine: its warm worker (restarted if it dies)
  and its SuperNode, until the SuperNode exits."""
  worker = None
  if args.warm_worker:
    node = startup.with_worker(node, name)
    worker = startup.start_worker(_spawn, name, node)
    startup.wait_worker(node, worker, 600)
  supernode = startup.start_supernode(
      _spawn, name, args.edge_address, node, ca=args.ca or None,
      key=_key(args.key), host=args.listen)
  try:
    while supernode.poll() is None:
      if worker is not None and worker.poll() is not None:
        print(f'[{name}] worker exited (rc {worker.returncode}); starting '
              'it again', flush=True)
        worker = startup.start_worker(_spawn, name, node)
      time.sleep(1.0)
    return supernode.returncode
  finally:
    for proc in (supernode, worker):
      if proc is not None and proc.poll() is None:
        proc.terminate()


if __name__ == '__main__':
  sys.exit(main())
