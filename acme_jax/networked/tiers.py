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
from acme_jax.networked import processes, reaper, startup, tier_checks


def _key(path):
  if not path:
    return None
  return {'private': path, 'public': path + '.pub'}


def main(argv=None):
  p = errors.OneLineParser(prog='python -m acme_jax.networked.tiers')
  p.add_argument('tier', choices=tuple(tier_checks.FLAGS))
  # Defaults (tier_checks.DEFAULTS) are filled in once the flags are
  # checked: a flag the tier does not take is refused, not ignored.
  p.add_argument('--hosts', help='secrets: the edge hosts the server '
                 'certificate names (default 127.0.0.1,localhost)')
  p.add_argument('--nodes', help='secrets: node names, one key pair each')
  p.add_argument('--config_json')
  p.add_argument('--workdir', required=True,
                 help='this tier\'s directory (created if missing)')
  p.add_argument('--edge', type=int,
                 help="edge: its id; device: its edge (default: the "
                      "config's)")
  p.add_argument('--device', type=int)
  p.add_argument('--budget', type=int)
  p.add_argument('--edge_address', help='host:port of the edge to dial')
  p.add_argument('--port', type=int, help='edge: its port (default 19100)')
  p.add_argument('--listen', help='host to listen on (default 127.0.0.1)')
  p.add_argument('--warm_worker', type=int,
                 help='1 (default): a long-lived worker answers (JAX stays '
                      "loaded); 0: Flower's stock per-message process")
  p.add_argument('--ca',
                 help="the run's CA certificate (TLS); without it, give "
                      '--insecure')
  p.add_argument('--insecure', action='store_true', default=None,
                 help='a node dials its edge without TLS')
  p.add_argument('--key', help="this node's private key (its .pub beside "
                 'it), as `tiers secrets` makes it')
  p.add_argument('--tls_dir')
  p.add_argument('--register')
  p.add_argument('--expected_devices', type=int,
                 help="edge: devices to wait for (default: the config's)")
  args = p.parse_args(argv)
  errors.boundary(tier_checks.check, args)
  return errors.boundary(_run, args)


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
  # The servers: everything they start ends with this process (reaper.py).
  children = _Children()
  try:
    children.reap.start()
    return _serve(args, workdir, children.spawn)
  finally:
    with reaper.SignalsDeferred():
      children.stop()


def _serve(args, workdir, spawn) -> int:
  if args.tier == 'edge':
    tls = None
    if args.tls_dir:
      d = pathlib.Path(args.tls_dir).resolve()
      tls = {'ca': d / 'ca.crt', 'cert': d / 'server.pem',
             'key': d / 'server.key'}
    keys = [(pathlib.Path(pub).stem, pub)
            for pub in filter(None, args.register.split(','))]
    link = startup.start_edge(
        spawn, args.edge, workdir,
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
  return _serve_node(args, spawn, args.tier, node)


class _Children:
  """The processes a tier starts: in this process's group (a Ctrl-C at
  the terminal reaches them too), stopped gracefully at its end, and
  whatever they started after them (`reaper.Reaper`)."""

  def __init__(self):
    self.procs, self.reap = [], reaper.Reaper()

  def spawn(self, name, cmd, env):
    del name  # env: flower_env's copy of os.environ, the token in it
    proc = subprocess.Popen(cmd() if callable(cmd) else cmd, env=env,
                            cwd=processes.REPO)
    self.procs.append(proc)
    return proc

  def stop(self, grace: float = 5.0):
    for proc in self.procs:
      if proc.poll() is None:
        proc.terminate()
    end = time.time() + grace
    for proc in self.procs:
      try:
        proc.wait(timeout=max(0.0, end - time.time()))
      except subprocess.TimeoutExpired:
        pass
    self.reap.close()  # SIGKILL for the rest, Flower's helpers too


def _serve_node(args, spawn, name, node) -> int:
  """A node on its own machine: its warm worker (restarted if it dies)
  and its SuperNode, until the SuperNode exits."""
  worker = None
  if args.warm_worker:
    node = startup.with_worker(node, name)
    worker = startup.start_worker(spawn, name, node)
    startup.wait_worker(node, worker, 600)
  supernode = startup.start_supernode(
      spawn, name, args.edge_address, node, ca=args.ca or None,
      key=_key(args.key), host=args.listen)
  while supernode.poll() is None:
    if worker is not None and worker.poll() is not None:
      print(f'[{name}] worker exited (rc {worker.returncode}); starting '
            'it again', flush=True)
      worker = startup.start_worker(spawn, name, node)
    time.sleep(1.0)
  return supernode.returncode


if __name__ == '__main__':
  sys.exit(main())
