"""TLS certificates and device keys, made at setup in the run's workdir.

Every link is TLS: each edge's SuperLink serves a certificate signed by a CA
made for this run (the devices and the cloud trust only that CA). Every
SuperNode (each device, and the cloud at each edge) has its own ECDSA key
pair; an edge admits only nodes whose public key it registered
(`flower-superlink --enable-supernode-auth`). Nothing here is committed:
it lives under `<workdir>/secrets`, private keys readable by the owner only.
"""
import datetime
import ipaddress
import os
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write(path: pathlib.Path, data: bytes, private: bool = False):
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
               0o600 if private else 0o644)
  with os.fdopen(fd, 'wb') as f:
    f.write(data)
  tmp.replace(path)


def _pem_key(key) -> bytes:
  return key.private_bytes(serialization.Encoding.PEM,
                           serialization.PrivateFormat.TraditionalOpenSSL,
                           serialization.NoEncryption())


def certificates(directory, hosts=('127.0.0.1', 'localhost'),
                 days: int = 30) -> dict:
  """A CA and one server certificate for `hosts` (IPs or DNS names), made
  once: {'ca': ca.crt, 'cert': server.pem, 'key': server.key} paths."""
  d = pathlib.Path(directory)
  paths = {'ca': d / 'ca.crt', 'cert': d / 'server.pem',
           'key': d / 'server.key'}
  if all(p.exists() for p in paths.values()):
    return paths
  now = datetime.datetime.now(datetime.timezone.utc)
  ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
  ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                          'acme-jax run CA')])
  ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .sign(ca_key, hashes.SHA256()))
  key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
  names = []
  for host in hosts:
    try:
      names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
      names.append(x509.DNSName(host))
  cert = (x509.CertificateBuilder()
          .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                      str(hosts[0]))]))
          .issuer_name(ca_name).public_key(key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.SubjectAlternativeName(names), False)
          .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                         True)
          .add_extension(x509.ExtendedKeyUsage(
              [ExtendedKeyUsageOID.SERVER_AUTH]), False)
          .sign(ca_key, hashes.SHA256()))
  _write(paths['key'], _pem_key(key), private=True)
  _write(paths['cert'], cert.public_bytes(serialization.Encoding.PEM))
  _write(paths['ca'], ca.public_bytes(serialization.Encoding.PEM))
  return paths


def node_key(directory, name: str) -> dict:
  """A SuperNode's ECDSA P-384 key pair (OpenSSH format, as Flower reads
  it), made once: {'private': path, 'public': path}."""
  d = pathlib.Path(directory)
  paths = {'private': d / name, 'public': d / f'{name}.pub'}
  if all(p.exists() for p in paths.values()):
    return paths
  key = ec.generate_private_key(ec.SECP384R1())
  _write(paths['private'], key.private_bytes(
      serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
      serialization.NoEncryption()), private=True)
  _write(paths['public'], key.public_key().public_bytes(
      serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
  return paths
