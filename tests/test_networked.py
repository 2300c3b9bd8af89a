"""The networked mode: payloads as Flower messages, the device's shipped
backbone, certificates and keys, byte relays, device admission, the report
tool's wrong-shaped files, and (slow) whole networked runs against the
in-process loop, with faults."""
import collections
import json
import os
import pathlib
import socket
import stat
import subprocess
import threading
import time

import jax
import numpy as np
import pytest

from conftest import one_line_exit_2, tiny_config
from acme_jax.config import ConfigError
from acme_jax.device import features
from acme_jax.models import subnet as subnet_lib
from acme_jax.networked import (payload, processes, report, security,
                                settings, wire)
from acme_jax.hierarchy import ledger


@pytest.fixture
def flower_task():
  """Flower builds messages only inside a running app; pretend to be one."""
  from flwr.supercore.task_identity import TaskIdentity
  TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
  yield
  TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def test_payloads_travel_whole_and_their_size_is_measured(flower_task):
  from flwr.app import Message
  tree = {'block_0': {'fc1': {'kernel': np.arange(12, dtype=np.float32)
                              .reshape(3, 4), 'bias': np.ones(4, np.int32)}},
          'embed': np.full((2, 2), 0.5, np.float32)}
  big = np.random.default_rng(0).normal(size=262144).astype(np.float32)
  msg = Message(payload.content({'backbone': tree, 'imp': big}, round=3,
                                width=0.5), dst_node_id=7,
                message_type='train.backbone')
  got = payload.payloads(msg)
  assert set(got) == {'backbone', 'imp'}
  flat = payload.flatten(tree)
  assert payload.flatten(got['backbone']).keys() == flat.keys()
  for k, v in flat.items():
    np.testing.assert_array_equal(payload.flatten(got['backbone'])[k], v)
    assert payload.flatten(got['backbone'])[k].dtype == v.dtype
  np.testing.assert_array_equal(got['imp'], big)
  assert payload.control(msg) == {'round': 3, 'width': 0.5}
  # Serialized size: the arrays' bytes plus a small, bounded envelope.
  arrays = ledger.payload_bytes(tree) + big.nbytes
  assert arrays < payload.message_bytes(msg) < arrays + 4096
  # Counted without serializing the data again, yet exactly what Flower's
  # deflation of every nested object gives (1 MiB spans several chunks).
  from flwr.supercore.inflatable.inflatable_object import (
      get_all_nested_objects)
  assert payload.message_bytes(msg) == sum(
      len(o.deflate()) for o in get_all_nested_objects(msg).values())
  with pytest.raises(ValueError, match='contains "/"'):
    payload.flatten({'a/b': np.zeros(1)})


def test_network_config_and_faults_are_checked_up_front():
  config = tiny_config()
  settings.validate(config)
  for field, value, words in (
      ('faults', ('kill:device1@train.round',), 'kill:device1@train.round'),
      ('faults', ('explode:device1@train.round:0',), 'explode'),
      ('base_port', 80, '1024'), ('min_devices', 0, '= 0 is invalid'),
      ('timeout_s', -1.0, 'seconds')):
    bad = tiny_config()
    setattr(bad.network, field, value)
    with pytest.raises(ConfigError, match=f'network.{field}') as e:
      settings.validate(bad)
    assert words in str(e.value)
  bad = tiny_config()
  bad.network.tls = False
  with pytest.raises(ConfigError, match='network.auth.*needs network.tls'):
    settings.validate(bad)


def test_certificates_chain_to_the_run_ca_and_keys_are_private(tmp_path):
  from cryptography import x509
  from cryptography.hazmat.primitives import serialization
  from cryptography.hazmat.primitives.asymmetric import padding
  paths = security.certificates(tmp_path, hosts=('127.0.0.1', 'edge.local'))
  ca = x509.load_pem_x509_certificate(paths['ca'].read_bytes())
  cert = x509.load_pem_x509_certificate(paths['cert'].read_bytes())
  ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                         padding.PKCS1v15(), cert.signature_hash_algorithm)
  names = cert.extensions.get_extension_for_class(
      x509.SubjectAlternativeName).value
  assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [
      '127.0.0.1']
  assert names.get_values_for_type(x509.DNSName) == ['edge.local']
  assert stat.S_IMODE(paths['key'].stat().st_mode) == 0o600
  # Made once: a second call keeps the same files.
  assert security.certificates(tmp_path)['ca'].read_bytes() == \
      paths['ca'].read_bytes()
  key = security.node_key(tmp_path, 'device0')
  assert stat.S_IMODE(key['private'].stat().st_mode) == 0o600
  private = serialization.load_ssh_private_key(key['private'].read_bytes(),
                                               None)
  public = serialization.load_ssh_public_key(key['public'].read_bytes())
  assert private.public_key().public_numbers() == public.public_numbers()


@pytest.mark.parametrize('sub', [
    subnet_lib.SubnetConfig((0, 2), (2, 2), (12, 12)),
    subnet_lib.SubnetConfig((1,), (4,), (24,)),
    subnet_lib.SubnetConfig((0, 1), (1, 3), (6, 18))])
def test_a_device_computes_the_clouds_features_from_its_backbone(tiny_vit,
                                                                  sub):
  """The device holds only the extracted backbone (no head, no dropped
  layers), yet gets the very features the in-process run computes from the
  supernet, to the bit."""
  model, params = tiny_vit
  images = np.asarray(jax.random.normal(jax.random.key(2), (5, 8, 8, 1)))
  cloud = features.backbone_tokens(model, params, sub, images, 4)
  backbone = subnet_lib.extract(model, params, sub)[1]
  assert 'head' not in backbone
  device_model, laid_out = subnet_lib.as_supernet(model, backbone, sub)
  device = features.backbone_tokens(device_model, laid_out, sub, images, 4)
  np.testing.assert_array_equal(device, cloud)


def test_relays_forward_untouched_and_count_each_way():
  server = socket.socket()
  server.bind(('127.0.0.1', 0))
  server.listen()

  def echo_twice():
    conn, _ = server.accept()
    with conn:
      data = b''
      while len(data) < 5000:
        data += conn.recv(65536)
      conn.sendall(data + data)

  threading.Thread(target=echo_twice, daemon=True).start()
  relays = wire.Relays()
  try:
    port = relays.add('device0', server.getsockname())
    with socket.create_connection(('127.0.0.1', port)) as c:
      sent = os.urandom(5000)
      c.sendall(sent)
      got = b''
      while len(got) < 10000:
        got += c.recv(65536)
    assert got == sent + sent
    time.sleep(0.2)
    assert relays.totals() == {'device0': {'up': 5000, 'down': 10000}}
  finally:
    relays.close()
    server.close()


@pytest.mark.slow  # ~18 s: the suite's 10 minutes
def test_an_edge_admits_only_registered_device_keys(tmp_path):
  """A SuperLink with TLS and node authentication: the registered device
  joins, one with an unknown key is refused and exits."""
  tls = security.certificates(tmp_path / 'secrets')
  good = security.node_key(tmp_path / 'secrets', 'device0')
  bad = security.node_key(tmp_path / 'secrets', 'stranger')
  port = processes.free_port()
  home = tmp_path / 'flwr'
  processes.write_federation(home, 'edge0', f'127.0.0.1:{port}', tls['ca'])
  env = processes.flower_env(home)
  procs = processes.Processes(tmp_path / 'logs')
  try:
    link = procs.start('edge0', processes.superlink_command(
        port, tmp_path / 'db.sqlite', tls, auth=True), env)
    processes.wait_port('127.0.0.1', port, 60, link)
    out = subprocess.run([processes._bin('flwr'), 'supernode', 'register',
                          str(good['public']), 'edge0'], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    node = {'role': 'device', 'device': 0, 'edge': 0, 'budget': 1,
            'workdir': str(tmp_path), 'config': ''}
    for name, key in (('device0', good), ('stranger', bad)):
      procs.start(name, processes.supernode_command(
          f'127.0.0.1:{port}', processes.free_port(), node, ca=tls['ca'],
          key=key), env)
    stranger = procs.procs['stranger']
    stranger.wait(timeout=120)
    log = (tmp_path / 'logs' / 'stranger.log').read_text()
    assert stranger.returncode != 0
    assert 'Failed to activate' in log or '2004' in log, log[-2000:]
    assert procs.alive('device0')
    out = subprocess.run([processes._bin('flwr'), 'supernode', 'list',
                          'edge0', '--format', 'json'], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    nodes = json.loads(out.stdout)['nodes']
    assert len(nodes) == 1
  finally:
    procs.stop_all()


# ------------------------------------------- the report tool's inputs




def _report_dirs(tmp_path, net):
  (tmp_path / 'net').mkdir()
  (tmp_path / 'inproc').mkdir()
  (tmp_path / 'net' / 'networked.json').write_text(net)
  device = {'device': 0, 'width_mult': 1.0, 'depth_mult': 1.0,
            'histogram_weighted_accuracy': 0.5}
  (tmp_path / 'inproc' / 'results.json').write_text(
      json.dumps({'devices': [device]}))
  (tmp_path / 'inproc' / 'ledger.json').write_text('[]')
  return [f'--networked={tmp_path}/net', f'--in_process={tmp_path}/inproc']


@pytest.mark.parametrize('net, words', [
    ('[1, 2]', 'it holds a JSON array, not an object'),
    ('null', 'it holds a JSON null, not an object'),
    ('{"devices": 3, "ledger": []}', 'its "devices" section is not a list'),
    ('{"devices": [1], "ledger": []}', 'is not a list of records'),
    ('{"ledger": []}', 'it has no "devices" section'),
    ('{"devices": [{"device": 0}], "ledger": []}', 'has no width_mult'),
    ('{"devices": [], "ledger": {"a": 1}}', '"ledger" section is not a list'),
    ('{"devices": [], "ledger": [{"kind": "x"}]}', 'has no src_tier'),
    ('{"devices": [{"device": [0], "width_mult": 1, "depth_mult": 1, '
     '"histogram_weighted_accuracy": 1}], "ledger": []}',
     'a device that is not a finite number'),
    ('{"devices": [], "ledger": []', 'is not valid JSON'),
])
def test_the_report_names_a_wrong_shaped_file(tmp_path, capsys, net, words):
  argv = _report_dirs(tmp_path, net)
  line = one_line_exit_2(capsys, report.main, argv)
  assert words in line, line
  assert 'networked.json' in line and 'rerun experiments.networked' in line


def test_the_report_compares_well_shaped_files(tmp_path, capsys):
  device = {'device': 0, 'width_mult': 1.0, 'depth_mult': 1.0,
            'histogram_weighted_accuracy': 0.5}
  argv = _report_dirs(tmp_path, json.dumps({'devices': [device],
                                            'ledger': []}))
  assert report.main(argv) == 0
  assert 'every field and every ledger record equal' in \
      capsys.readouterr().out
  (tmp_path / 'inproc' / 'ledger.json').write_text('{"a": 1}')
  line = one_line_exit_2(capsys, report.main, argv)
  assert 'ledger.json' in line and 'rerun experiments.main' in line


# ------------------------------------------------- whole networked runs


def _network(config, **fields):
  config.network.timeout_s = 240.0
  config.network.setup_timeout_s = 600.0
  config.network.join_timeout_s = 180.0
  config.network.run_timeout_s = 1500.0
  config.network.restart_delay_s = 2.0
  # Ports apart from a parallel run's (and the default 19100).
  config.network.base_port = 20000 + (os.getpid() % 400) * 16
  for k, v in fields.items():
    setattr(config.network, k, v)
  return config


def _flower_processes_of(workdir) -> list:
  out = []
  for cmdline in pathlib.Path('/proc').glob('[0-9]*/cmdline'):
    try:
      text = cmdline.read_bytes().replace(b'\0', b' ').decode()
    except OSError:
      continue
    if str(workdir) in text:
      out.append(text)
  return out


@pytest.mark.slow
@pytest.mark.parametrize('warm', [True, False], ids=['warm', 'stock'])
def test_networked_run_equals_the_in_process_run(tmp_path, warm):
  """Every tier its own process over TLS with device keys, one impostor per
  edge, with warm workers or Flower's stock per-message processes: the
  devices' results, importances and the ledger equal the in-process
  loop's; every ledger record travels in a message a bounded envelope
  larger, and the links carry more still."""
  from acme_jax import pipeline
  from acme_jax.networked import launcher
  config = _network(tiny_config(), impostors=1, warm_workers=warm)
  inproc = pipeline.run(tiny_config(), tmp_path / 'inproc', log=lambda *_: 0)
  net = launcher.Launcher(config, tmp_path / 'net', log=lambda *_: 0).run()
  assert not _flower_processes_of(tmp_path / 'net')

  diff = report.compare(net, inproc['devices'], json.loads(
      (tmp_path / 'inproc' / 'ledger.json').read_text()))
  assert diff == {'devices': {}, 'missing': [], 'ledger_equal': True,
                  'compared': 6}
  # The comparison is not vacuous: it sees a changed digest or accuracy.
  tampered = json.loads(json.dumps(net))
  tampered['devices'][0]['importance_sha256'] = ['0' * 64]
  tampered['devices'][1]['test_accuracy'] += 1 / 24
  assert sorted(report.compare(tampered, inproc['devices'], net['ledger'])
                ['devices']) == sorted(d['device'] for d in
                                       tampered['devices'][:2])

  # Flower adds an envelope per message and per array (a tiny model's
  # backbone is ~40 small arrays, so its overhead is large in ratio).
  kinds = net['bytes']['by_kind']
  for kind in ('front', 'histogram', 'backbone', 'importance', 'metrics'):
    k = kinds[kind]
    carried = k.get('carried_ledger_bytes', k['ledger_bytes'])
    assert carried < k['message_bytes'] < \
        3 * carried + 4096 * k['messages'], kind
  # Each ledger kind has its own row, with the in-process ledger's bytes.
  in_process = collections.Counter()
  for r in json.loads((tmp_path / 'inproc' / 'ledger.json').read_text()):
    in_process[r['kind']] += r['bytes']
  assert {k: v['ledger_bytes'] for k, v in kinds.items()
          if v['ledger_bytes']} == dict(in_process)
  assert kinds['signature']['carried_by'] == 'importance'
  assert kinds['importance']['carried_ledger_bytes'] == sum(
      in_process[k] for k in ('importance', 'signature', 'header'))
  for link in net['bytes']['by_link'].values():
    assert link['ledger_bytes'] < link['message_bytes'] < link['wire_bytes']

  # The impostors were refused at the door: nothing of theirs aggregated.
  assert net['impostors'] and all(i['exited'] and i['refusal']
                                  for i in net['impostors'])
  for e, edge in net['edges'].items():
    enrolled = [d['device'] for d in inproc['devices'] if d['edge'] == e]
    for r in edge['rounds']:
      assert r['members'] == r['answered'] == r['pruned'] == enrolled


@pytest.mark.slow
@pytest.mark.parametrize('warm', [True, False], ids=['warm', 'stock'])
def test_networked_run_survives_faults(tmp_path, warm):
  """A device killed mid-round, a device that never answers, an edge
  killed mid-round (and in warm mode a device's worker killed): the rounds
  go on with the devices that answer, the killed device rejoins, the
  worker is started again, the edge resumes from its workdir without
  redoing a finished round, and every process is gone at the end."""
  from acme_jax.networked import launcher
  config = tiny_config()
  config.system.devices_per_edge = (2,)
  config.aggregation.rounds = 2
  faults = ('kill:device1@train.round:0', 'stall:device3@train.round:0',
            'kill:edge0@train.round:1')
  if warm:
    faults += ('kill:worker2@train.round:1',)
  _network(config, timeout_s=120.0, round_wait_s=150.0, faults=faults,
           warm_workers=warm)
  net = launcher.Launcher(config, tmp_path, log=lambda *_: 0).run()
  assert not _flower_processes_of(tmp_path)
  expected = {'device1': 1, 'edge0': 1}
  if warm:  # a device's death takes its worker; worker 2 died alone
    expected.update({'device1.worker': 1, 'device2.worker': 1})
  assert net['restarts'] == expected

  rounds0 = net['edges'][0]['rounds']
  assert [r['answered'] for r in rounds0] == [[0], [0, 1]]
  rounds1 = net['edges'][1]['rounds']
  assert rounds1[0]['answered'] == [2]
  if not warm:
    assert rounds1[1]['answered'] == [2, 3]
  else:
    # Worker 2 died as round 1 reached it: device 2 answered that round
    # only if its worker was back before its ClientApp forwarded.
    edge1_log = (tmp_path / 'edge1' / 'edge.log').read_text()
    assert rounds1[1]['answered'] in ([3], [2, 3])
    if rounds1[1]['answered'] == [3]:
      assert 'device 2: its worker is down' in edge1_log
  assert 'train.round: no reply from device 3 within 120s' in (
      tmp_path / 'edge1' / 'edge.log').read_text()
  # Round 0 was sent once: the restarted edge resumed at round 1.
  sent = [json.loads(l) for l in (tmp_path / 'edge0' / 'messages.jsonl')
          .read_text().splitlines()]
  round0 = [m for m in sent if m['kind'] == 'train.round' and
            m['round'] == 0 and m['direction'] == 'down']
  assert sorted(m['peer'][1] for m in round0) == [0, 1]
  assert sorted(d['device'] for d in net['devices']) == [0, 1, 2, 3]
