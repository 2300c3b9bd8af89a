"""Datasets: one `load_dataset(config.data)` for every source, and the cloud split."""
import functools
import pathlib

import numpy as np

from acme_jax import choices
from acme_jax.data.base import Dataset, Split
# Image channels and a synthetic source's look-alike are sizes known before
# loading (config validation, plan): `sizes` holds them, below the tiers.
from acme_jax.sizes import channels, like  # noqa: F401 (data_lib.channels)

OFFLINE = choices.OFFLINE_DATASETS
TFDS = choices.TFDS_IMAGE_DATASETS
# Text sources: token ids in Split.images, a TextSpec as input_spec.
TFDS_TEXT = choices.TFDS_TEXT_DATASETS
TEXT = choices.TEXT_DATASETS
SUPPORTED = choices.DATASETS

# config.data.text's fields and defaults, for configs that lack some.
TEXT_DEFAULTS = dict(tokenizer='', max_length=64,
                     wordnet_dir='/usr/share/wordnet',
                     wordnet_pos=('noun', 'verb'), min_examples_per_class=40,
                     max_examples_per_class=400, with_lemma=True)


def is_text_source(name: str) -> bool:
  return name in TEXT


def is_text(dataset_or_config) -> bool:
  """Whether a loaded Dataset holds token ids, or a data config names text."""
  if isinstance(dataset_or_config, Dataset):
    from acme_jax.data import text
    return text.is_text(dataset_or_config)
  return is_text_source(dataset_or_config.name)


def text_option(data_config, field: str):
  """config.data.text.<field>, or its default when the config lacks it."""
  text = data_config.get('text') or {}
  return text.get(field, TEXT_DEFAULTS[field])


def tokenizer_path(data_config, init_checkpoint: str = '') -> str:
  """The tokenizer.json to read: data.text.tokenizer, or ('') the one that
  comes with model.init_checkpoint."""
  path = text_option(data_config, 'tokenizer')
  from acme_jax.data import cloud_corpus
  if cloud_corpus.is_cloud_bpe(path):
    return str(cloud_corpus.path_for(path))
  if path:
    return str(path)
  if not init_checkpoint:
    raise ValueError(
        f'{data_config.name!r} is text and needs a tokenizer: set '
        f'config.data.text.tokenizer to a tokenizer.json, or '
        f'config.model.init_checkpoint to a checkpoint that has one')
  from acme_jax.models import checkpoints
  found = checkpoints.tokenizer_path(checkpoints.resolve(init_checkpoint))
  if found is None:
    raise ValueError(f'checkpoint {init_checkpoint} has no tokenizer.json; '
                     f'set config.data.text.tokenizer to one')
  return str(found)


def check_tokenizer(data_config, model_vocab: int) -> None:
  """What `tokenizer_path` will read, checked before any work: a cloud BPE
  spec of a valid size with its corpus installed, or an existing
  tokenizer.json; either way no larger than the model's vocabulary (a
  larger id would index past the embedding). ValueError names the fault."""
  from acme_jax.data import cloud_corpus
  spec = text_option(data_config, 'tokenizer')
  if cloud_corpus.is_cloud_bpe(spec):
    size = cloud_corpus.vocab_size(spec)
    from acme_jax.data import gcide
    gcide.files(gcide.DEFAULT_DIR)
  elif spec:
    from acme_jax.data import text
    if not pathlib.Path(spec).is_file():
      raise ValueError(f'no tokenizer.json at {spec}')
    try:
      size = text.Tokenizer(spec).vocab_size
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{spec} is not a readable tokenizer.json '
                       f'({" ".join(str(e).split())[:200]})') from e
  else:
    return  # the checkpoint's own, checked with the checkpoint
  if size > model_vocab:
    raise ValueError(f'its {size:,} tokens exceed model.vocab_size = '
                     f'{model_vocab:,}')


def _wordnet_options(data_config) -> dict:
  opt = functools.partial(text_option, data_config)
  pos = opt('wordnet_pos')
  if isinstance(pos, str):  # 'noun,verb'
    pos = [p.strip() for p in pos.split(',') if p.strip()]
  return dict(path=str(opt('wordnet_dir')), pos=tuple(pos),
              with_lemma=bool(opt('with_lemma')),
              min_examples_per_class=opt('min_examples_per_class'),
              max_examples_per_class=opt('max_examples_per_class'),
              validation_fraction=data_config.validation_fraction)


def load_text(data_config, seed: int, init_checkpoint: str = '') -> Dataset:
  """A text source (`TEXT`), tokenized with `tokenizer_path`'s tokenizer.

  Tokenized once per dataset, options and tokenizer: the ids are cached in
  `<cache>/tokens/` ($ACME_JAX_CACHE, else ~/.cache/acme_jax) under a key
  of the options and the tokenizer.json's bytes; a damaged cache file is
  recomputed."""
  import hashlib
  import json
  import pathlib
  from acme_jax.models import checkpoints
  tokenizer = tokenizer_path(data_config, init_checkpoint)
  options = {k: v for k, v in json.loads(data_config.to_json_best_effort()
                                         ).items()
             if k in ('name', 'text', 'validation_fraction', 'data_dir',
                      'max_examples_per_split')}
  source = []  # the dictionary files' identity: edited files re-tokenize
  if data_config.name == 'wordnet':
    root = pathlib.Path(text_option(data_config, 'wordnet_dir'))
    source = [(f.name, f.stat().st_size, f.stat().st_mtime_ns)
              for f in sorted(root.glob('data.*'))] if root.is_dir() else []
  key = hashlib.sha256(json.dumps([options, seed, source], sort_keys=True
                                  ).encode()
                       + pathlib.Path(tokenizer).read_bytes()).hexdigest()[:16]
  path = (checkpoints.cache_dir() / 'tokens' /
          f'{data_config.name.replace("/", "_")}-{key}.npz')
  from acme_jax.data import text
  cached = text.read_token_cache(path)
  if cached is not None:
    return cached
  dataset = _tokenize_text(data_config, seed, tokenizer)
  text.write_token_cache(path, dataset)
  return dataset


def _tokenize_text(data_config, seed: int, tokenizer) -> Dataset:
  max_length = text_option(data_config, 'max_length')
  if data_config.name == 'wordnet':
    from acme_jax.data import wordnet
    return wordnet.load(tokenizer, max_length, seed,
                        **_wordnet_options(data_config))
  from acme_jax.data import tfds_text
  return tfds_text.load(
      data_config.name, tokenizer, max_length, seed,
      validation_fraction=data_config.validation_fraction,
      data_dir=data_config.data_dir or None,
      max_examples_per_split=data_config.max_examples_per_split or None)


def load_dataset(data_config, seed: int, init_checkpoint: str = '') -> Dataset:
  """Loads config.data's source. Text sources take their tokenizer from
  data.text.tokenizer or else `init_checkpoint`; the whole config may be
  passed instead of config.data, and then model.init_checkpoint is used."""
  if 'data' in data_config and 'model' in data_config:  # the whole config
    init_checkpoint = init_checkpoint or data_config.model.get(
        'init_checkpoint', '')
    data_config = data_config.data
  if data_config.name in TEXT:
    return load_text(data_config, seed, init_checkpoint)
  if data_config.name == 'digits':
    from acme_jax.data import digits
    return digits.load(data_config.image_size)
  if data_config.name == 'synthetic':
    from acme_jax.data import synthetic
    s = data_config.synthetic
    return synthetic.load(s.like, data_config.image_size, seed,
                          num_train=s.num_train, num_test=s.num_test,
                          noise=s.noise,
                          validation_fraction=data_config.validation_fraction)
  if data_config.name in TFDS:
    from acme_jax.data import tfds_loader
    return tfds_loader.load(
        data_config.name, data_config.image_size, seed,
        validation_fraction=data_config.validation_fraction,
        data_dir=data_config.data_dir or None,
        max_examples_per_split=data_config.max_examples_per_split or None,
        source_size=data_config.get('source_size') or None)
  raise ValueError(f'unknown dataset {data_config.name!r}; allowed: {SUPPORTED}')


def cloud_device_split(train: Split, cloud_fraction: float, seed: int):
  """(cloud's split, the devices' share): a seeded, stratified, disjoint cut of train."""
  rng = np.random.default_rng(seed)
  cloud, devices = [], []
  for label in np.unique(train.labels):
    members = rng.permutation(np.flatnonzero(train.labels == label))
    n_cloud = int(round(cloud_fraction * len(members)))
    cloud.append(members[:n_cloud])
    devices.append(members[n_cloud:])
  cloud = rng.permutation(np.concatenate(cloud))
  devices = rng.permutation(np.concatenate(devices))
  return train.take(cloud), train.take(devices)


NUM_CLASSES = {'digits': 10, 'cifar10': 10, 'cifar100': 100, 'cars196': 196}


@functools.lru_cache(maxsize=8)
def _wordnet_summary(**options) -> dict:
  from acme_jax.data import wordnet
  return wordnet.summary(**options)


def wordnet_summary(data_config) -> dict:
  """Class count, train + validation size and mean sample bytes of the
  configured WordNet dataset (reads the dictionary, ~1 s, cached)."""
  return _wordnet_summary(**_wordnet_options(data_config))


def num_classes(data_config) -> int:
  if data_config.name == 'wordnet':
    return wordnet_summary(data_config)['num_classes']
  if data_config.name in TFDS_TEXT:
    from acme_jax.data import tfds_text
    return tfds_text.NUM_CLASSES[data_config.name]
  return NUM_CLASSES[like(data_config)]


def train_examples(data_config) -> int:
  """Training-set size before the validation hold-out (TFDS, synthetic;
  WordNet: its examples outside test)."""
  if data_config.name == 'wordnet':
    return wordnet_summary(data_config)['train_examples']
  if data_config.name in TFDS_TEXT:
    from acme_jax.data import tfds_text
    return tfds_text.SOURCES[data_config.name].train_examples
  if data_config.name == 'synthetic' and data_config.synthetic.num_train:
    return data_config.synthetic.num_train
  if data_config.name == 'synthetic':
    from acme_jax.data import synthetic
    return synthetic.SHAPES[like(data_config)][4]
  return TRAIN_EXAMPLES[data_config.name]

# Training-set sizes of the TFDS sources (and digits' fixed train split), for
# the plan tool, which sizes a run from shapes alone without loading data.
TRAIN_EXAMPLES = {'digits': 1257, 'cifar10': 50000, 'cifar100': 50000,
                  'cars196': 8144}

# Bytes one training sample takes as a device stores it (docs/method.md 7), for the
# plan tool: digits 8x8 one byte per pixel; CIFAR 32x32x3 uint8; Cars the
# JPEG bytes TFDS stores, ~118 kB on average (its 1.85 GiB for 16,185 images).
NATIVE_SAMPLE_BYTES = {'digits': 64, 'cifar10': 3072, 'cifar100': 3072,
                       'cars196': 118_000}


def native_sample_bytes(data_config) -> int:
  """Bytes of one sample as a device stores it; for text the mean UTF-8
  size of a raw sentence (a loaded split's raw_nbytes has each one's)."""
  if data_config.name == 'wordnet':
    return int(round(wordnet_summary(data_config)['mean_sample_bytes']))
  if data_config.name in TFDS_TEXT:
    from acme_jax.data import tfds_text
    return tfds_text.SOURCES[data_config.name].mean_sample_bytes
  return NATIVE_SAMPLE_BYTES[like(data_config)]


def model_input_bytes(data_config) -> int:
  """Bytes of one sample as the model reads it: uint8 at the model's
  resolution for images, the int32 padded ids for text."""
  if is_text_source(data_config.name):
    return 4 * text_option(data_config, 'max_length')
  return data_config.image_size ** 2 * channels(data_config)
