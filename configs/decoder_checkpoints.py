"""ACME on published decoder checkpoints, from a local copy (no download at
run time): their exact published shapes, so `config.validate` compares the
folder's config.json with them before any work.

  python -m experiments.main --config=configs/decoder_checkpoints.py:smollm2_135m \
      --config.model.init_checkpoint=/models/SmolLM2-135M --workdir=runs/smollm2
  python -m experiments.main --config=configs/decoder_checkpoints.py:qwen25_05b \
      --config.model.init_checkpoint=/models/Qwen2.5-0.5B --workdir=runs/qwen
  python -m experiments.main --config=configs/decoder_checkpoints.py:llama32_1b \
      --config.model.init_checkpoint=/models/Llama-3.2-1B --workdir=runs/llama
  # The SmolLM2-135M shape with random weights through the whole loop (a
  # slow smoke of scale on a CPU; no checkpoint needed):
  python -m experiments.main --config=configs/decoder_checkpoints.py:smollm2_135m_random \
      --workdir=runs/smollm2_random

A checkpoint variant reads the folder's tokenizer.json and skips the
cloud's pretraining (the checkpoint is pre-trained); the folder is
`model.init_checkpoint` (default `checkpoints/<name>`, relative to the
working directory). Shapes, from each model's published config.json:

  SmolLM2-135M  30 layers, 576 wide, 9 query / 3 KV heads of 64, SwiGLU
                1,536, vocabulary 49,152, tied, rope_theta 1e5
  Qwen2.5-0.5B  24 layers, 896 wide, 14 query / 2 KV heads of 64, SwiGLU
                4,864, vocabulary 151,936, tied, q/k/v biases, rope_theta 1e6
  Llama-3.2-1B  16 layers, 2,048 wide, 32 query / 8 KV heads of 64, SwiGLU
                8,192, vocabulary 128,256, tied, rope_theta 5e5 with llama3
                scaling (factor 32)
The data and devices are configs/decoder_wordnet.py's smoke (WordNet
glosses, six users), so a run measures the pipeline at the model's scale.
"""
from configs import common
from configs import decoder_wordnet

SHAPES = {
    'smollm2_135m': dict(num_layers=30, hidden_size=576, num_heads=9,
                         num_kv_heads=3, head_dim=64, mlp_dim=1536,
                         vocab_size=49152, tie_word_embeddings=True,
                         rope_theta=100000.0, layer_norm_eps=1e-5,
                         max_positions=8192),
    'qwen25_05b': dict(num_layers=24, hidden_size=896, num_heads=14,
                       num_kv_heads=2, head_dim=64, mlp_dim=4864,
                       vocab_size=151936, tie_word_embeddings=True,
                       qkv_bias=True, rope_theta=1000000.0,
                       layer_norm_eps=1e-6, max_positions=32768),
    'llama32_1b': dict(num_layers=16, hidden_size=2048, num_heads=32,
                       num_kv_heads=8, head_dim=64, mlp_dim=8192,
                       vocab_size=128256, tie_word_embeddings=True,
                       rope_theta=500000.0, layer_norm_eps=1e-5,
                       max_positions=131072),
}
FOLDERS = {'smollm2_135m': 'checkpoints/SmolLM2-135M',
           'qwen25_05b': 'checkpoints/Qwen2.5-0.5B',
           'llama32_1b': 'checkpoints/Llama-3.2-1B'}


def get_config(arg=None):
  arg = common.parse_arg(arg, 'configs/decoder_checkpoints.py',
                         variants=tuple(SHAPES) +
                         ('smollm2_135m_random',)).variant
  config = decoder_wordnet.get_config('smoke')
  name = arg.replace('_random', '')
  config.model.qkv_bias = False
  config.model.update(SHAPES[name])
  # Widths keep whole KV groups: SmolLM2's 3 are 3 and 2 at 1 and 0.5.
  config.cloud.width_mults = (1.0, 0.5)
  if arg.endswith('_random'):
    # Random weights: the cloud pretrains briefly on its own corpus with a
    # BPE of the checkpoint's vocabulary size.
    config.data.text.tokenizer = f'gcide-bpe:{config.model.vocab_size}'
    # Ten glosses per supersense: the loop at this scale in well under an
    # hour of a 2-core CPU (a step of the 135M model takes seconds).
    config.data.text.min_examples_per_class = 10
    config.data.text.max_examples_per_class = 10
    config.cloud.pretrain.blocks = 64
    config.cloud.teacher.epochs = 1
    config.cloud.batch_size = 8
    config.cloud.eval_batch_size = 32
  else:
    config.model.init_checkpoint = FOLDERS[name]
    config.data.text.tokenizer = ''     # the checkpoint's tokenizer.json
    config.cloud.teacher.epochs = 1
    config.cloud.batch_size = 8
    config.cloud.eval_batch_size = 32
  return config
