"""Every flag of every tier (`tiers.py`), checked before anything is
written or started: one `UserError` naming the flag.

The cheap checks come first (names, numbers, files, ports) and answer
without JAX; the config itself (`--config_json`, validated as the launcher
validates it) comes last.
"""
import json
import pathlib

from acme_jax import checks, errors
from acme_jax.networked import names, processes

# The flags each tier takes (beyond --workdir); any other one given is
# refused rather than ignored.
FLAGS = {
    'secrets': ('hosts', 'nodes'),
    'cloud-prepare': ('config_json',),
    'cloud-node': ('edge_address', 'ca', 'insecure', 'key', 'listen',
                   'warm_worker'),
    'edge': ('config_json', 'edge', 'port', 'listen', 'tls_dir', 'register',
             'expected_devices'),
    'device': ('config_json', 'device', 'edge', 'budget', 'edge_address',
               'ca', 'insecure', 'key', 'listen', 'warm_worker'),
}
DEFAULTS = {'hosts': '127.0.0.1,localhost', 'nodes': '', 'config_json': '',
            'edge_address': '127.0.0.1:19100', 'port': 19100,
            'listen': '127.0.0.1', 'warm_worker': 1, 'ca': '',
            'insecure': False, 'key': '', 'tls_dir': '', 'register': ''}
# A budget is a count of parameters, bounded as the config's counts are.
MAX_BUDGET = checks.MAX_INT


def check(args):
  """Refuses the first bad flag of `args` (an argparse namespace whose
  unset flags are None) and fills in the defaults; returns the config
  (or None for the tiers that take none)."""
  tier = args.tier
  if not (args.workdir or '').strip():
    raise errors.UserError('--workdir must not be empty: give this tier\'s '
                           'directory')
  blocked = errors.file_in_the_way(args.workdir)
  if blocked is not None:
    raise errors.UserError(f'--workdir={args.workdir}: {blocked} is a '
                           'file; give a directory')
  for flag in sorted(set(DEFAULTS) | {'edge', 'device', 'budget',
                                       'expected_devices'}):
    if flag not in FLAGS[tier] and getattr(args, flag) is not None:
      raise errors.UserError(
          f'--{flag} is not a flag of the {tier} tier (it takes '
          f'{", ".join("--" + f for f in FLAGS[tier])})')
  for flag, value in DEFAULTS.items():
    if getattr(args, flag) is None:
      setattr(args, flag, value)
  if tier != 'secrets' and tier != 'cloud-node':
    _exists('config_json', args.config_json)
  {'secrets': _secrets, 'cloud-prepare': lambda a: None,
   'cloud-node': _node, 'edge': _edge, 'device': _node}[tier](args)
  if tier == 'secrets' or tier == 'cloud-node':
    return None
  config = _config(args.config_json)
  if tier == 'edge':
    _edge_in(config, args)
  elif tier == 'device':
    _device_in(config, args)
  return config


def _exists(flag: str, value: str, what: str = 'file'):
  if not value:
    raise errors.UserError(f'--{flag} is required for this tier')
  path = pathlib.Path(value)
  if not (path.is_dir() if what == 'directory' else path.is_file()):
    raise errors.UserError(f'--{flag}={value}: no such {what}')


def _list(flag: str, text: str) -> list:
  if not text.strip():
    raise errors.UserError(f'--{flag} is empty: give one entry or more, '
                           'comma-separated')
  items = text.split(',')
  if any(not i.strip() for i in items):
    raise errors.UserError(f'--{flag}={text}: an empty entry; give a '
                           'comma-separated list without empty entries')
  return [i.strip() for i in items]


def _secrets(args):
  hosts = _list('hosts', args.hosts)
  for host in hosts:
    why = names.host_problem(host)
    if why:
      raise errors.UserError(f'--hosts={args.hosts}: {why}')
  nodes = _list('nodes', args.nodes) if args.nodes else []
  for name in nodes:
    why = names.name_problem(name)
    if why:
      raise errors.UserError(f'--nodes={args.nodes}: {name!r}: {why}')
  args.hosts, args.nodes = ','.join(hosts), ','.join(nodes)
  cert = pathlib.Path(args.workdir) / 'server.pem'
  if cert.is_file():
    # Made once: a rerun keeps it, so it must name the hosts asked for.
    from cryptography import x509
    try:
      made = x509.load_pem_x509_certificate(cert.read_bytes())
      san = made.extensions.get_extension_for_class(
          x509.SubjectAlternativeName).value
      have = {str(v) for t in (x509.IPAddress, x509.DNSName)
              for v in san.get_values_for_type(t)}
    except (ValueError, x509.ExtensionNotFound):
      have = None
    if have != {str(names.ip_or_name(h)) for h in hosts}:
      raise errors.UserError(
          f'--workdir={args.workdir} already holds a server certificate '
          f'for {", ".join(sorted(have or ["?"]))}, not --hosts='
          f'{args.hosts}; give another --workdir (or the same hosts)')


def _pem(flag: str, path: str, what: str):
  """`path` must hold a PEM certificate ('cert'), an OpenSSH private key
  ('private') or public key ('public')."""
  from cryptography import x509
  from cryptography.hazmat.primitives import serialization
  data = pathlib.Path(path).read_bytes()
  load = {'cert': x509.load_pem_x509_certificate,
          'private': lambda d: serialization.load_ssh_private_key(d, None),
          'public': serialization.load_ssh_public_key,
          'tls_key': lambda d: serialization.load_pem_private_key(d, None)}
  try:
    return load[what](data)
  except (ValueError, TypeError, IndexError):
    kind = {'cert': 'a PEM certificate', 'private': 'an OpenSSH private key',
            'public': 'an OpenSSH public key',
            'tls_key': 'a PEM private key'}[what]
    raise errors.UserError(f'--{flag}={path} is not {kind}; make it with '
                           '`tiers secrets`') from None


def _ssh(public_key) -> bytes:
  from cryptography.hazmat.primitives import serialization
  return public_key.public_bytes(serialization.Encoding.OpenSSH,
                                 serialization.PublicFormat.OpenSSH)


def _listen(args):
  why = names.host_problem(args.listen)
  if why:
    raise errors.UserError(f'--listen={args.listen}: {why}')


def _node(args):
  """cloud-node and device: the edge they dial, TLS, key, worker mode."""
  _, why = names.split_address(args.edge_address)
  if why:
    raise errors.UserError(f'--edge_address={args.edge_address}: {why}')
  _listen(args)
  if args.warm_worker not in (0, 1):
    raise errors.UserError(f'--warm_worker={args.warm_worker}: give 1 (a '
                           "warm worker) or 0 (Flower's stock processes)")
  if args.ca and args.insecure:
    raise errors.UserError('give --ca (TLS) or --insecure, not both')
  if not args.ca and not args.insecure:
    raise errors.UserError(
        f'{args.tier}: --ca is required to dial the edge over TLS (or '
        'give --insecure for an edge without TLS)')
  if args.ca:
    _exists('ca', args.ca)
    _pem('ca', args.ca, 'cert')
  if args.key:
    if args.insecure:
      raise errors.UserError('--key (node authentication) needs TLS: give '
                             '--ca instead of --insecure')
    _exists('key', args.key)
    _exists('key', args.key + '.pub')
    private = _pem('key', args.key, 'private')
    public = _pem('key', args.key + '.pub', 'public')
    if _ssh(private.public_key()) != _ssh(public):
      raise errors.UserError(f'--key={args.key}: {args.key}.pub is not its '
                             'public key; give the pair `tiers secrets` made')
  if args.tier == 'cloud-node':
    front = pathlib.Path(args.workdir) / 'serve' / 'front.npz'
    if not front.is_file():
      raise errors.UserError(f'--workdir={args.workdir} has no '
                             'serve/front.npz: run `tiers cloud-prepare` '
                             'there first')
  else:
    if args.budget is None:
      raise errors.UserError('--budget is required for the device tier (its '
                             'parameter budget; a launcher run\'s '
                             'W/cloud/world.json lists them)')
    if not 1 <= args.budget <= MAX_BUDGET:
      raise errors.UserError(f'--budget={args.budget}: give a number of '
                             f'parameters in 1..{MAX_BUDGET}')
    for flag in ('device', 'edge'):
      if getattr(args, flag) is not None and getattr(args, flag) < 0:
        raise errors.UserError(f'--{flag}={getattr(args, flag)}: give an id '
                               '>= 0')


def _edge(args):
  why = names.port_problem(args.port)
  if why:
    raise errors.UserError(f'--port={args.port}: {why}')
  _listen(args)
  if args.edge is not None and args.edge < 0:
    raise errors.UserError(f'--edge={args.edge}: give an id >= 0')
  if args.expected_devices is not None and args.expected_devices < 1:
    raise errors.UserError(f'--expected_devices={args.expected_devices}: '
                           'give a whole number >= 1')
  if args.tls_dir:
    _exists('tls_dir', args.tls_dir, 'directory')
    for name, what in (('ca.crt', 'cert'), ('server.pem', 'cert'),
                       ('server.key', 'tls_key')):
      path = str(pathlib.Path(args.tls_dir) / name)
      _exists('tls_dir', path)
      _pem('tls_dir', path, what)
  register = _list('register', args.register) if args.register else []
  if register and not args.tls_dir:
    raise errors.UserError('--register (node authentication) needs TLS: give '
                           '--tls_dir too')
  for pub in register:
    _exists('register', pub)
    _pem('register', pub, 'public')
  args.register = ','.join(register)
  processes.check_port_free(args.listen, args.port, 'give another --port')


def _config(path: str):
  """The run's config from `path`, validated as the launcher validates it."""
  where = (f'--config_json={path}', 'give the run\'s config as JSON (a '
           'launcher run writes W/cloud/config.json)')
  try:
    data = json.loads(pathlib.Path(path).read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise errors.UserError(f'{where[0]} is not JSON ({e}); {where[1]}') \
        from None
  if not isinstance(data, dict):
    raise errors.UserError(f'{where[0]} holds a JSON '
                           f'{names.json_type(data)}, not a config; '
                           f'{where[1]}')
  from acme_jax import config as config_lib
  from acme_jax.networked import handlers, settings
  try:
    config = handlers.config_from_json(path)
    config_lib.validate(config)
    settings.validate(config)
  except errors.ConfigError as e:
    raise errors.UserError(f'{where[0]}: {e}') from None
  except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
    # A section of the wrong type (a number where a section belongs).
    raise errors.UserError(f'{where[0]} is not a config of this code '
                           f'({errors.one_line(e)}); {where[1]}') from None
  return config


def _counts(config) -> list:
  from acme_jax import sizes
  return sizes.devices_per_edge(config)


def _edge_in(config, args):
  counts = _counts(config)
  args.edge = 0 if args.edge is None else args.edge
  if args.edge >= len(counts):
    raise errors.UserError(f'--edge={args.edge}: the config has '
                           f'{len(counts)} edges, numbered from 0')
  count, least = counts[args.edge], config.network.min_devices
  if args.expected_devices is None:
    args.expected_devices = count
  if not least <= args.expected_devices <= count:
    raise errors.UserError(
        f'--expected_devices={args.expected_devices}: edge {args.edge} has '
        f'{count} devices in the config and needs network.min_devices = '
        f'{least}; give a number in {least}..{count}')


def _device_in(config, args):
  counts = _counts(config)
  args.device = 0 if args.device is None else args.device
  edges = [e for e, n in enumerate(counts) for _ in range(n)]
  if args.device >= len(edges):
    raise errors.UserError(f'--device={args.device}: the config has '
                           f'{len(edges)} devices, numbered from 0')
  if args.edge is None:
    args.edge = edges[args.device]
  elif args.edge != edges[args.device]:
    raise errors.UserError(f'--edge={args.edge}: device {args.device} '
                           f'belongs to edge {edges[args.device]} in the '
                           'config (devices are numbered edge by edge)')
