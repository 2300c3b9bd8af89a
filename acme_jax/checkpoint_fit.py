"""Whether `config.model.init_checkpoint` fits the config: read from the
checkpoint's config.json alone, before anything is loaded or trained (part
of `config.validate`)."""
from acme_jax import sizes
from acme_jax.errors import ConfigError


def validate(config):
  """A checkpoint must exist and fit config.model and the data: read from
  its config.json alone, before anything is loaded or trained."""
  path = config.model.init_checkpoint
  if not path:
    return
  if config.model.get('family', 'vit') == 'bert':
    _validate_text(config)
    return
  if config.model.get('family', 'vit') == 'decoder':
    _validate_decoder(config)
    return
  from acme_jax.models import hf_import
  try:
    problems = hf_import.mismatches(
        hf_import.read_config(path), config.model, config.data.image_size,
        sizes.channels(config.data))
  except ValueError as e:
    raise ConfigError('model.init_checkpoint', path, str(e)) from e
  if problems:
    raise ConfigError('model.init_checkpoint', path,
                      'does not fit the config: ' + '; '.join(problems))


def _validate_text(config):
  """A BERT checkpoint (directory or pip:) must exist and match
  config.model, read from its config.json; a text source needs a tokenizer."""
  from acme_jax.models import checkpoints, hf_import
  path = config.model.init_checkpoint
  try:
    local = checkpoints.resolve(path)
    hf = hf_import.read_config(str(local))
  except ValueError as e:
    raise ConfigError('model.init_checkpoint', path, str(e)) from e
  model = config.model
  wanted = {
      'hidden_size': model.hidden_size,
      'num_hidden_layers': model.num_layers,
      'num_attention_heads': model.num_heads,
      'intermediate_size': model.mlp_dim,
      'vocab_size': model.vocab_size,
      'max_position_embeddings': model.max_positions,
      'type_vocab_size': model.type_vocab_size
  }
  problems = [f'{k} {hf.get(k)} vs config.model {v}'
              for k, v in wanted.items() if hf.get(k) != v]
  if hf.get('model_type', 'bert') != 'bert':
    problems.append(f'model_type {hf.get("model_type")!r} is not bert')
  if problems:
    raise ConfigError('model.init_checkpoint', path,
                      'does not fit the config: ' + '; '.join(problems))
  if (not config.data.text.tokenizer and
      checkpoints.tokenizer_path(local) is None):
    raise ConfigError('data.text.tokenizer', '',
                      f'{path} has no tokenizer.json; give its path')


def _validate_decoder(config):
  """An HF Llama / Qwen2 / Mistral checkpoint: supported, and its sizes are
  config.model's (the published shapes a real-checkpoint config states)."""
  from acme_jax.models import checkpoints, hf_decoder, hf_import
  path = config.model.init_checkpoint
  try:
    hf = hf_import.read_config(str(checkpoints.resolve(path)))
    model = hf_decoder.decoder_from_hf_config(hf)
  except ValueError as e:
    raise ConfigError('model.init_checkpoint', path, str(e)) from e
  m = config.model
  wanted = {'hidden_size': (model.hidden_size, m.hidden_size),
            'num_hidden_layers': (model.num_layers, m.num_layers),
            'num_attention_heads': (model.num_heads, m.num_heads),
            'num_key_value_heads': (model.num_kv_heads, m.num_kv_heads),
            'intermediate_size': (model.mlp_dim, m.mlp_dim),
            'vocab_size': (model.vocab_size, m.vocab_size),
            'tie_word_embeddings': (model.tie_word_embeddings,
                                    bool(m.get('tie_word_embeddings'))),
            'q/k/v biases': (model.qkv_bias, bool(m.get('qkv_bias'))),
            'head_dim': (model.resolved_head_dim(),
                         sizes.decoder_head_dim(m))}
  problems = [f'{k} {got} vs config.model {want}'
              for k, (got, want) in wanted.items() if got != want]
  if problems:
    raise ConfigError('model.init_checkpoint', path,
                      'does not fit the config: ' + '; '.join(problems))
