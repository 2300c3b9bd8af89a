"""Offline default: ACME on scikit-learn's digits with a tiny ViT supernet.

Runs on a laptop CPU in minutes, no download. The method's numbers are the
prototype's where they fit this scale; scaled-down values say so.

  python -m experiments.main --config=configs/default.py --workdir=runs/default
  python -m experiments.headers --config=configs/default.py --workdir=runs/default
  python -m experiments.aggregation --config=configs/default.py --workdir=runs/default
  python -m experiments.main --config=configs/default.py --workdir=runs/w \
      --config.cloud.width_mults=0.5,1.0 --config.seed=3
  python -m experiments.networked --config=configs/default.py \
      --workdir=runs/networked   # every tier its own process, on Flower
"""
import ml_collections


def get_config(arg=None):
  del arg  # no variants
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'digits'  # digits | synthetic | cifar10 | cifar100 | cars196
  config.data.image_size = 16           # model input side: 8x8 digits are
                                        # upsampled per batch; 4x4 patch grid
  config.data.data_dir = ''             # TFDS data_dir ('' = TFDS default)
  config.data.validation_fraction = 0.1  # TFDS datasets: held out of train
  config.data.max_examples_per_split = 0  # TFDS smoke runs; 0 = all
  config.data.cloud_fraction = 0.5      # share of train kept by the cloud
  config.data.source_size = 256         # stored side of images that vary in
                                        # size (cars196); others keep theirs
  # data.name = 'synthetic': a seeded source with a real dataset's shapes.
  config.data.synthetic = ml_collections.ConfigDict(dict(
      like='cifar100', num_train=0, num_test=0, noise=0.25))  # 0 = real count

  # Text sources (data.name wordnet | glue/sst2 | imdb_reviews, with
  # model.family = 'bert'): token ids right-padded to max_length; the
  # tokenizer.json path, or '' for the checkpoint's own.
  config.data.text = ml_collections.ConfigDict(dict(
      tokenizer='', max_length=64, wordnet_dir='/usr/share/wordnet',
      wordnet_pos=('noun', 'verb'), min_examples_per_class=40,
      max_examples_per_class=400, with_lemma=True))

  # Tiny ViT supernet (~200k params). Scaled down from ViT-B/16 (12 layers,
  # 12 heads, 768 hidden, 3072 MLP) to train from scratch here in a minute.
  config.model = ml_collections.ConfigDict()
  config.model.family = 'vit'           # vit | bert (text sources)
  config.model.patch_size = 4           # vit
  config.model.hidden_size = 64
  config.model.num_layers = 4
  config.model.num_heads = 4
  config.model.mlp_dim = 256
  config.model.layer_norm_eps = 1e-12   # as google/vit-base-patch16-224
  config.model.vocab_size = 30522       # bert: BERT's uncased WordPiece
  config.model.max_positions = 512      # bert: position embeddings
  config.model.type_vocab_size = 2      # bert: token types
  config.model.init_checkpoint = ''     # HF ViTForImageClassification dir
  config.model.dtype = 'float32'        # compute dtype: float32 | bfloat16
                                        # (params and optimizer stay float32)

  config.cloud = ml_collections.ConfigDict()
  config.cloud.width_mults = (1.0, 0.75, 0.5, 0.25)  # prototype's lists
  config.cloud.depth_mults = (1.0, 0.75, 0.5, 0.25)
  config.cloud.batch_size = 64
  config.cloud.eval_batch_size = 256
  config.cloud.reorder = True           # importance reordering (ACME.md 3.3)
  # Elastic stages: static (each subnet a static slice, one unrolled
  # program) | sliced (width slices, depths scanned, dropped layers skipped)
  # | masked (every subnet at full size, masks as data); same gradients.
  config.cloud.elastic_scheme = 'static'
  # Recompute each subnet's activations in the backward pass: memory of one
  # subnet instead of the grid's sum, for ~1/3 more compute (paper scale).
  config.cloud.remat = False
  # Every accelerator of every process on one 'data' mesh axis; parameters
  # replicated | fsdp (sharded along it).
  config.cloud.param_sharding = 'replicated'
  # Multi-host: a coordinator address starts jax.distributed with this
  # process count and id; auto uses JAX's detection (TPU pods, SLURM).
  config.cloud.distributed = ml_collections.ConfigDict(dict(
      coordinator='', num_processes=1, process_id=0, auto=False,
      cpu_collectives=''))  # gloo: cross-process collectives on CPU
  config.cloud.importance_batches = 8

  # Teacher from scratch on digits; the prototype fine-tunes a pre-trained
  # ViT-B/16 with lr 2e-5, which is too small for random init.
  config.cloud.teacher = ml_collections.ConfigDict()
  config.cloud.teacher.epochs = 60
  config.cloud.teacher.learning_rate = 1e-3
  config.cloud.teacher.weight_decay = 0.05
  config.cloud.teacher.warmup_fraction = 0.1
  config.cloud.teacher.clip_norm = 1.0
  config.cloud.teacher.max_shift = 1    # random-shift augmentation (pixels)

  # Elastic distillation, ACME.md 3.3. Prototype: lr 2e-5, 3 epochs; scaled
  # to lr 5e-4 and more epochs since the tiny model starts far from converged.
  config.cloud.width_stage = ml_collections.ConfigDict()
  config.cloud.width_stage.epochs = 15
  config.cloud.width_stage.learning_rate = 5e-4
  config.cloud.width_stage.weight_decay = 1e-4
  config.cloud.width_stage.warmup_fraction = 0.1
  config.cloud.width_stage.clip_norm = 1.0
  config.cloud.width_stage.max_shift = 1
  config.cloud.width_stage.lambda_logits = 1.0   # prototype
  config.cloud.width_stage.lambda_hidden = 0.1   # prototype

  config.cloud.depth_stage = ml_collections.ConfigDict()
  config.cloud.depth_stage.epochs = 15
  config.cloud.depth_stage.learning_rate = 5e-4
  config.cloud.depth_stage.weight_decay = 1e-4
  config.cloud.depth_stage.warmup_fraction = 0.1
  config.cloud.depth_stage.clip_norm = 1.0
  config.cloud.depth_stage.max_shift = 1
  config.cloud.depth_stage.lambda_logits = 1.0   # prototype
  config.cloud.depth_stage.lambda_hidden = 1.0   # prototype
  # Stage 2's teacher: width_stage (DynaBERT: the width-elastic model at the
  # student's width) | width_stage_full (the prototype's code: it at full
  # width) | teacher (the fine-tuned teacher).
  config.cloud.depth_stage.teacher = 'width_stage'

  # Selection at the cloud (ACME.md 4): prototype values.
  config.selection = ml_collections.ConfigDict()
  config.selection.cost_model = 'exact'   # exact | paper (ViT-B/16 stand-in)
  config.selection.grid_size = 20         # G: predict on a G x G ratio grid
  config.selection.cells = 10             # K
  config.selection.sigma = 1e-6
  config.selection.size_constraint = 0.8  # normalised, for the cloud's picks
  config.selection.front = 'pfg'          # pfg | non_dominated (report)
  # Baselines random / traverse / worst / ... only among ratios that realise
  # a real subnet (>= 1 head and layer); False = the prototype's behaviour.
  config.selection.baselines_realisable_only = True
  # The edges rank the trained subnets by their per-class validation
  # accuracy: measured (the cloud measured every shipped subnet) | predicted
  # (the quadratic surface, which smooths the grid).
  config.selection.edge_accuracy = 'measured'

  # Devices and edges (ACME.md 1, 6). Budgets in parameters (backbone +
  # header); () = spread over [smallest, largest] grid subnet + allowance.
  config.system = ml_collections.ConfigDict()
  config.system.num_edges = 2
  config.system.devices_per_edge = (3,)   # one count for all, or one per edge
  config.system.budgets = ()
  config.system.budget_draw = 'linspace'  # linspace | uniform (seeded)
  config.system.header_allowance = 40000  # parameters reserved for the header
  config.system.partition = 'dirichlet'   # iid | dirichlet | shards | IID | C2..C4
  config.system.dirichlet_alpha = 0.5
  config.system.shards_per_device = 2
  config.system.fraction_per_class = 0.1  # category setups (prototype: 10%)
  config.system.local_val_fraction = 0.2
  config.system.local_test_fraction = 0.2
  config.system.profile = ml_collections.ConfigDict(dict(
      g_n=100.0, delta_g=10.0, l_n=1.0, delta_l=0.1, p=128.0, g_beta=50.0,
      k=10.0))                            # ACME.md 4.2, prototype constants

  # Header NAS on devices (ACME.md 5): the prototype's ENAS child and
  # controller; scaled down where noted, to fit tiny local datasets (~70
  # samples) and minutes of CPU.
  config.header = ml_collections.ConfigDict()
  config.header.features_from = 'last_hidden'  # prototype; | final_norm
  config.header.num_channels = 32         # prototype 256
  config.header.num_nodes = 3             # nodes per cell (prototype 5)
  config.header.num_layers = 0            # 0 = prototype rule: 1 if w*d > .25
                                          # else 3; the child has it + 2 cells
  config.header.search_epochs = 8         # prototype 130
  config.header.finetune_epochs = 12      # prototype 50
  config.header.finetune_lrs = (0.01, 0.03, 0.1)  # peak lr, best on local val
  config.header.batch_size = 32           # prototype 128
  config.header.lr_max = 0.1              # prototype: cosine 0.1 -> 5e-4, SGDR
  config.header.lr_min = 5e-4
  config.header.lr_period = 10            # SGDR: first cycle (epochs), then
  config.header.lr_period_mult = 2        # each cycle twice as long
  config.header.grad_clip = 0.0           # 0 = none (prototype); ENAS: 5
  config.header.momentum = 0.9            # prototype
  config.header.weight_decay = 1e-4       # prototype
  config.header.dropout_rate = 0.1        # prototype
  config.header.controller_hidden = 100   # prototype
  config.header.temperature = 5.0         # prototype
  config.header.tanh_constant = 1.1       # prototype
  config.header.op_tanh_reduce = 2.5      # prototype
  config.header.controller_lr = 0.0025    # prototype (Adam, betas .1/.999)
  config.header.controller_steps_per_epoch = 10  # prototype 300
  config.header.entropy_weight = 1e-4     # prototype
  config.header.baseline_decay = 0.99     # prototype
  config.header.reward_scale = 100.0      # prototype: accuracy in percent
  # Final architecture: prototype (each epoch's arch at its peak running
  # train accuracy, best on local validation) | sample (best of
  # num_final_archs controller samples, ENAS's derive step).
  config.header.derive = 'prototype'
  config.header.num_final_archs = 8       # for derive = sample
  # The found arch is then trained for finetune_epochs from fresh weights
  # (scratch: ENAS's final retraining) or from the search's shared weights
  # (shared: the prototype). On digits `shared` loses 3-10 points: with a
  # few dozen search steps each path's shared weights are barely trained
  # (experiments.header_ablation measures it).
  config.header.final_weights = 'scratch'

  # Fixed-head baselines (AdamW), trained for the same epochs as search +
  # fine-tune, each with its best learning rate on local validation data.
  config.baselines = ml_collections.ConfigDict()
  config.baselines.kinds = ('linear', 'mlp', 'mixer', 'cnn_project')
  config.baselines.learning_rates = (1e-3, 3e-3, 1e-2, 3e-2)  # best on val
  config.baselines.depth_fractions = (1.0, 0.75, 0.5, 0.25)
  config.baselines.repeats = 1            # configs/paper_tables.py: 5
  config.baselines.ablation_depths = (1.0, 0.5)  # experiments.header_ablation

  # Personalized architecture aggregation (ACME.md 6).
  config.aggregation = ml_collections.ConfigDict()
  config.aggregation.rounds = 2
  config.aggregation.prune_ratio = 0.3    # prototype: 10-50%
  config.aggregation.local_epochs = 4
  config.aggregation.finetune_epochs = 4
  config.aggregation.taylor = 'squared'   # (g dL/dg)^2 (NVlabs) | abs_sum
  config.aggregation.signature = 'features'  # features | histogram
  config.aggregation.signature_samples = 200  # prototype
  # Common backbone of feature signatures: smallest (the smallest grid
  # subnet, which fits every device's budget) | full (the prototype's, which
  # computes signatures centrally; the full supernet exceeds small budgets).
  config.aggregation.reference_backbone = 'smallest'
  config.aggregation.js_variant = 'standard'  # textbook JS | prototype
  config.aggregation.temperature = 1.0    # prototype (plain softmax)
  config.aggregation.self_weight = -1.0   # < 0: no override (prototype)
  config.aggregation.mode = 'pruning_per_emd'  # ACME, for the main devices
  # The comparison experiment (experiments/aggregation.py):
  config.aggregation.modes = ('wo_pruning', 'pruning_alone', 'pruning_avg',
                              'pruning_per_js', 'pruning_per_emd')
  config.aggregation.temperatures = (1.0, 0.05)  # for the personalized modes
  config.aggregation.setups = ('IID', 'C2', 'C3', 'C4')
  config.aggregation.fraction_per_class = 0.15  # prototype 10%; digits is tiny
  # Device test sets in the comparison: 'local' (its own ~10 held-out samples)
  # or 'class_matched' (the test split's samples of the device's classes).
  config.aggregation.test_on = 'class_matched'
  config.aggregation.repeats = 1          # configs/paper_tables.py: 5

  config.engine = ml_collections.ConfigDict()
  config.engine.strategy = 'auto'         # auto | loop | vmap | sharded
  # Users processed at once by the stacked strategies (0: all); bounds the
  # device stage's accelerator memory, so thousands of users stream through.
  config.engine.chunk = 0

  # Networked mode (`python -m experiments.networked`): every tier its own
  # OS process on Flower; edge e's SuperLink listens on base_port + e.
  config.network = ml_collections.ConfigDict()
  config.network.host = '127.0.0.1'
  config.network.base_port = 19100
  config.network.tls = True             # every link; certificates per run
  config.network.auth = True            # edges admit registered keys only
  config.network.timeout_s = 300.0      # a round's reply, then go on
  config.network.setup_timeout_s = 1800.0  # features, header NAS
  config.network.join_timeout_s = 300.0  # nodes joining an edge
  config.network.round_wait_s = 30.0    # for devices that left, per round
  config.network.run_timeout_s = 3600.0
  config.network.min_devices = 1        # per edge and round, else fail
  # Requests an edge has out at once (0: all its devices). Real devices
  # compute in parallel; on one machine this bounds the ClientApp processes.
  config.network.max_in_flight = 0
  config.network.retries = 2            # setup requests, cloud requests
  config.network.max_restarts = 2       # per tier process (launcher)
  config.network.restart_delay_s = 5.0
  # A killed device's key is refused until its old session expires (Flower:
  # two missed 30 s heartbeats); restarts keep trying this long.
  config.network.rejoin_timeout_s = 180.0
  config.network.count_bytes = True     # TCP bytes per link (relays)
  # Security check: SuperNodes per edge with keys the edge never registered,
  # each claiming to be one of its devices (they must be refused).
  config.network.impostors = 0
  # Fault injection, e.g. ('kill:device1@train.round:0',
  # 'kill:edge0@train.round:1', 'stall:device2@train.round:0').
  config.network.faults = ()

  return config
