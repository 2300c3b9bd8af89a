"""What a name, a host and an address of the networked mode may be: each
check returns None or why the text is not one (the callers name the flag
or field). Shared by the config's network section, the tiers' flags and
the report tool's files."""
import ipaddress
import re

# A node's name becomes a file name in a directory of secrets: one plain
# name, never a path.
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
# Files `security.certificates` writes beside the node keys.
RESERVED = ('ca.crt', 'server.pem', 'server.key')
_LABEL = re.compile(r'^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$')


def name_problem(name: str):
  if not _NAME.match(name):
    return ('a node name is a plain name: 1 to 64 letters, digits, '
            "'_', '.' or '-', starting with a letter or digit (no '/', no "
            "'..')")
  if '..' in name:
    return "a node name has no '..'"
  if name in RESERVED or name.endswith(('.pub', '.tmp')):
    return (f'{name} would overwrite a certificate or another node\'s key '
            f'file ({", ".join(RESERVED)}, *.pub, *.tmp)')
  return None


def host_problem(host: str):
  """An IP address (v4 or v6) or a DNS name."""
  if not isinstance(host, str) or not host:
    return 'a host is an IP address or a DNS name, not empty'
  try:
    ipaddress.ip_address(host)
    return None
  except ValueError:
    pass
  labels = host[:-1].split('.') if host.endswith('.') else host.split('.')
  if (len(host) > 253 or not all(_LABEL.match(l) for l in labels) or
      labels[-1].isdigit()):  # all digits: a mistyped IP address
    return (f'{host!r} is neither an IP address nor a DNS name (letters, '
            "digits and '-' in dot-separated labels)")
  return None


def port_problem(port, low: int = 1):
  if isinstance(port, bool) or not isinstance(port, int) or \
      not low <= port <= 65535:
    return f'a port is a whole number in {low}..65535'
  return None


def split_address(text: str):
  """'host:port' or '[v6]:port' -> (host, port), else (None, why)."""
  host, colon, port = text.rpartition(':')
  if host.startswith('[') and host.endswith(']'):
    host = host[1:-1]
  if not colon or not port.isdigit():
    return None, 'an address is HOST:PORT, e.g. 10.0.0.5:19100'
  why = host_problem(host) or port_problem(int(port))
  return (None, why) if why else ((host, int(port)), None)


def ip_or_name(host: str):
  """An IP address as `ipaddress` reads it (one spelling), else the name."""
  try:
    return ipaddress.ip_address(host)
  except ValueError:
    return host


def json_type(value) -> str:
  """What JSON calls `value`'s type (for a message about a file)."""
  if value is None:
    return 'null'
  return {bool: 'boolean', int: 'number', float: 'number', str: 'string',
          list: 'array', dict: 'object'}.get(type(value), 'value')
