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
  python -m experiments.supernet_value --config=configs/default.py \
      --workdir=runs/default   # subnets vs one model per shape
  python -m benchmarks.latency --config=configs/default.py \
      --workdir=runs/latency_vit   # latency, memory and their predictors
  python -m experiments.main --config=configs/default.py:latency \
      --workdir=runs/latency   # devices budgeted in ms through that table

`:latency` (after the benchmarks.latency command above, on this machine):
the 6 devices are 1x, 2x and 4x slower than the table's machine under each
edge (one value per device: another device count sets its own), each with
a 4 ms budget at batch 1 and a 0.5 or 1 MiB memory budget besides its
parameter budget.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  variant = common.parse_arg(arg, 'configs/default.py',
                             variants=('base', 'latency')).variant
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = _data()
  config.model = _model()
  config.cloud = _cloud()
  config.selection = _selection()
  config.system = _system()
  config.header = _header()
  config.baselines = _baselines()
  config.aggregation = _aggregation()
  config.federated = _federated()
  config.engine = _engine()
  config.network = _network()
  config.between_grid = _between_grid()
  config.supernet_value = _supernet_value()
  config.latency = _latency()
  # Mid-stage checkpoints of the long stages (teacher, both elastic stages,
  # header search, rounds): a rerun of an interrupted run resumes from the
  # last one. Not part of any stage's fingerprint. 0: off.
  config.resume = ml_collections.ConfigDict(dict(every_steps=200))
  if variant == 'latency':
    config.system.hardware.update(dict(
        latency_table='runs/latency_vit/latency.json', batch=1,
        slowdown=(1.0, 2.0, 4.0) * 2, latency_budget_ms=(4.0,),
        memory_budget_mb=('choice', 0.5, 1.0), uplink_mbps=('choice', 5.0, 20.0),
        downlink_mbps=(50.0,)))
  return config


def _data():
  c = ml_collections.ConfigDict()
  c.name = 'digits'  # digits | synthetic | cifar10 | cifar100 | cars196
  c.image_size = 16           # model input side: 8x8 digits are
                              # upsampled per batch; 4x4 patch grid
  c.data_dir = ''             # TFDS data_dir ('' = TFDS default)
  c.validation_fraction = 0.1  # TFDS datasets: held out of train
  c.max_examples_per_split = 0  # TFDS smoke runs; 0 = all
  c.cloud_fraction = 0.5      # share of train kept by the cloud
  c.source_size = 256         # stored side of images that vary in
                              # size (cars196); others keep theirs
  # data.name = 'synthetic': a seeded source with a real dataset's shapes.
  c.synthetic = ml_collections.ConfigDict(dict(
      like='cifar100', num_train=0, num_test=0, noise=0.25))  # 0 = real count

  # Text sources (data.name wordnet | glue/sst2 | imdb_reviews, with
  # model.family = 'bert'): token ids right-padded to max_length; the
  # tokenizer.json path, or '' for the checkpoint's own.
  c.text = ml_collections.ConfigDict(dict(
      tokenizer='', max_length=64, wordnet_dir='/usr/share/wordnet',
      wordnet_pos=('noun', 'verb'), min_examples_per_class=40,
      max_examples_per_class=400, with_lemma=True))
  return c


def _model():
  # Tiny ViT supernet (~200k params). Scaled down from ViT-B/16 (12 layers,
  # 12 heads, 768 hidden, 3072 MLP) to train from scratch here in a minute.
  c = ml_collections.ConfigDict()
  c.family = 'vit'           # vit | bert (text sources)
  c.patch_size = 4           # vit
  c.hidden_size = 64
  c.num_layers = 4
  c.num_heads = 4
  c.mlp_dim = 256
  c.layer_norm_eps = 1e-12   # as google/vit-base-patch16-224
  c.vocab_size = 30522       # bert: BERT's uncased WordPiece
  c.max_positions = 512      # bert: position embeddings
  c.type_vocab_size = 2      # bert: token types
  c.init_checkpoint = ''     # HF ViTForImageClassification dir
  c.dtype = 'float32'        # compute dtype: float32 | bfloat16
                             # (params and optimizer stay float32)
  return c


def _cloud():
  c = ml_collections.ConfigDict()
  c.width_mults = (1.0, 0.75, 0.5, 0.25)  # prototype's lists
  c.depth_mults = (1.0, 0.75, 0.5, 0.25)
  c.batch_size = 64
  c.eval_batch_size = 256
  c.reorder = True           # importance reordering (docs/method.md 3.3)
  # Elastic stages: static (each subnet a static slice, one unrolled
  # program) | sliced (width slices, depths scanned, dropped layers skipped)
  # | masked (every subnet at full size, masks as data); same gradients.
  c.elastic_scheme = 'static'
  # Recompute each subnet's activations in the backward pass: memory of one
  # subnet instead of the grid's sum, for ~1/3 more compute (paper scale).
  c.remat = False
  # Every accelerator of every process on one 'data' mesh axis; parameters
  # replicated | fsdp (sharded along it).
  c.param_sharding = 'replicated'
  # Multi-host: a coordinator address starts jax.distributed with this
  # process count and id; auto uses JAX's detection (TPU pods, SLURM).
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator='', num_processes=1, process_id=0, auto=False,
      cpu_collectives=''))  # gloo: cross-process collectives on CPU
  c.importance_batches = 8

  # Teacher from scratch on digits; the prototype fine-tunes a pre-trained
  # ViT-B/16 with lr 2e-5, which is too small for random init.
  c.teacher = ml_collections.ConfigDict()
  c.teacher.epochs = 60
  c.teacher.learning_rate = 1e-3
  c.teacher.weight_decay = 0.05
  c.teacher.warmup_fraction = 0.1
  c.teacher.clip_norm = 1.0
  c.teacher.max_shift = 1    # random-shift augmentation (pixels)

  # Elastic distillation, docs/method.md 3.3. Prototype: lr 2e-5, 3 epochs; scaled
  # to lr 5e-4 and more epochs since the tiny model starts far from converged.
  c.width_stage = ml_collections.ConfigDict()
  c.width_stage.epochs = 15
  c.width_stage.learning_rate = 5e-4
  c.width_stage.weight_decay = 1e-4
  c.width_stage.warmup_fraction = 0.1
  c.width_stage.clip_norm = 1.0
  c.width_stage.max_shift = 1
  c.width_stage.lambda_logits = 1.0   # prototype
  c.width_stage.lambda_hidden = 0.1   # prototype

  c.depth_stage = ml_collections.ConfigDict()
  c.depth_stage.epochs = 15
  c.depth_stage.learning_rate = 5e-4
  c.depth_stage.weight_decay = 1e-4
  c.depth_stage.warmup_fraction = 0.1
  c.depth_stage.clip_norm = 1.0
  c.depth_stage.max_shift = 1
  c.depth_stage.lambda_logits = 1.0   # prototype
  c.depth_stage.lambda_hidden = 1.0   # prototype
  # Stage 2's teacher: width_stage (DynaBERT: the width-elastic model at the
  # student's width) | width_stage_full (it at full width) | teacher (the
  # fine-tuned teacher). The prototype's stage 2 loads the width-elastic
  # model but trains on hard labels only: it computes the teacher's outputs
  # and never uses them.
  c.depth_stage.teacher = 'width_stage'
  return c


def _selection():
  # Selection at the cloud (docs/method.md 4): prototype values.
  c = ml_collections.ConfigDict()
  c.cost_model = 'exact'   # exact | paper (ViT-B/16 stand-in)
  c.grid_size = 20         # G: predict on a G x G ratio grid
  c.cells = 10             # K
  c.sigma = 1e-6
  c.size_constraint = 0.8  # normalised, for the cloud's picks
  c.front = 'pfg'          # pfg | non_dominated (report)
  # Baselines random / traverse / worst / ... only among ratios that realise
  # a real subnet (>= 1 head and layer); False = the prototype's behaviour.
  c.baselines_realisable_only = True
  # The edges rank the trained subnets by their per-class validation
  # accuracy: measured (the cloud measured every shipped subnet) | predicted
  # (the quadratic surface, which smooths the grid).
  c.edge_accuracy = 'measured'
  return c


def _between_grid():
  # Shapes between the trained grid's points, (depth, width) paired. Widths
  # snap to whole heads and depths to whole layers as the grid's do, so on
  # this 4-layer, 4-head ViT every one of them is a grid cell (the grid
  # holds all 16 uniform shapes); 12-head, 6-layer MiniLM has real ones.
  c = ml_collections.ConfigDict()
  c.depths = (1.0, 1.0, 0.875)
  c.widths = (0.625, 0.875, 1.0)
  # The main loop's edges may deliver them (measured on validation like
  # the grid); experiments.supernet_value compares both ways regardless.
  c.deliver = False
  return c


def _latency():
  # benchmarks.latency: inference latency and peak memory of subnets and
  # headers on this backend, and the predictors fitted on them.
  c = ml_collections.ConfigDict()
  c.warmup = 10               # untimed runs of each compiled program
  c.repeats = 100             # timed runs: median, 10th, 90th percentile
  c.round_robin = 16          # programs timed in turn, one call each (their
                              # weights held at once): a slow spell of the
                              # machine lands on all of them
  c.batches = (1, 32)         # one input, and a device's batch
  c.between_samples = 16      # shapes off the grid, drawn among all the
                              # supernet's uniform ones (none on this ViT)
  c.header_samples = 24       # headers: random cells, 1..max cells,
  c.header_keeps = (1.0, 0.5, 0.25)  # pruned to these channel shares
  c.test_share = 0.25         # of models held out of every fit
  return c


def _supernet_value():
  # experiments.supernet_value: the supernet's subnets against one model
  # per shape, distilled from the cut teacher (the depth stage's losses and
  # optimizer) or trained from scratch (`scratch`, the teacher's recipe).
  c = ml_collections.ConfigDict()
  c.repeats = 3               # each redraws every arm's data order and init
  # The grid cells compared, depths paired with widths; () = the grid's
  # diagonal, smallest to full (here (0.25, 0.25) ... (1, 1)).
  c.depths = ()
  c.widths = ()
  c.arms = ('distilled', 'scratch')
  c.budgets = ('equal_steps', 'equal_compute')
  c.budget_counts = (4, 16, 64)  # N budgets served: the cost table
  c.baselines_from_supernet = True  # every federated method again, from
                                    # the supernet's subnets
  c.scratch = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, weight_decay=0.05, warmup_fraction=0.1,
      clip_norm=1.0, max_shift=1))
  return c


def _system():
  # Devices and edges (docs/method.md 1, 6). Budgets in parameters (backbone +
  # header); () = spread over [smallest, largest] grid subnet + allowance.
  c = ml_collections.ConfigDict()
  c.num_edges = 2
  c.devices_per_edge = (3,)   # one count for all, or one per edge
  c.budgets = ()
  c.budget_draw = 'linspace'  # linspace | uniform (seeded)
  c.header_allowance = 40000  # parameters reserved for the header
  c.partition = 'dirichlet'   # iid | dirichlet | shards | IID | C2..C4
  c.dirichlet_alpha = 0.5
  c.shards_per_device = 2
  c.fraction_per_class = 0.1  # category setups (prototype: 10%)
  # Category setups: disjoint (devices sharing a class get different
  # samples) | independent (each device sampled on its own, the prototype's)
  c.category_sampling = 'disjoint'
  c.local_val_fraction = 0.2
  c.local_test_fraction = 0.2
  c.profile = ml_collections.ConfigDict(dict(
      g_n=100.0, delta_g=10.0, l_n=1.0, delta_l=0.1, p=128.0, g_beta=50.0,
      k=10.0))                            # docs/method.md 4.2, prototype constants
  # Devices as hardware (docs/hardware.md; acme_jax/hardware/profile.py):
  # a benchmarks.latency table of this backend, the batch a deployed
  # model's latency is read at, and per device (a spec: (x,) all, one per
  # device, ('uniform', lo, hi), ('choice', v, ...)) its slowdown against
  # the table's machine, latency and memory budgets (0: none) and links.
  c.hardware = ml_collections.ConfigDict(dict(
      latency_table='', batch=1, slowdown=(1.0,), latency_budget_ms=(0.0,),
      memory_budget_mb=(0.0,), uplink_mbps=(0.0,), downlink_mbps=(0.0,)))
  return c


def _header():
  # Header NAS on devices (docs/method.md 5): the prototype's ENAS child and
  # controller; scaled down where noted, to fit tiny local datasets (~70
  # samples) and minutes of CPU.
  c = ml_collections.ConfigDict()
  c.features_from = 'last_hidden'  # prototype; | final_norm
  c.num_channels = 32         # prototype 256
  c.num_nodes = 3             # nodes per cell (prototype's
                              # train_search.py default 3; run_nas.sh 1)
  c.num_layers = 0            # 0 = prototype rule: 1 if w*d > .25
                              # else 3; the child has it + 2 cells
  c.search_epochs = 8         # prototype 130
  c.finetune_epochs = 12      # prototype 50
  c.finetune_lrs = (0.01, 0.03, 0.1)  # peak lr, best on local val
  c.batch_size = 32           # prototype 128
  c.lr_max = 0.1              # prototype: cosine 0.1 -> 5e-4, SGDR
  c.lr_min = 5e-4
  c.lr_period = 10            # SGDR: first cycle (epochs), then
  c.lr_period_mult = 2        # each cycle twice as long
  c.grad_clip = 0.0           # 0 = none (prototype); ENAS: 5
  c.momentum = 0.9            # prototype
  c.weight_decay = 1e-4       # prototype
  c.dropout_rate = 0.1        # prototype
  c.controller_hidden = 100   # prototype
  c.temperature = 5.0         # prototype
  c.tanh_constant = 1.1       # prototype
  c.op_tanh_reduce = 2.5      # prototype
  c.controller_lr = 0.0025    # prototype (Adam, betas .1/.999)
  c.controller_steps_per_epoch = 10  # prototype 300
  c.entropy_weight = 1e-4     # prototype
  c.baseline_decay = 0.99     # prototype
  c.reward_scale = 100.0      # prototype: accuracy in percent
  # The final training of a header (and of every head compared with it):
  # cosine (annealed per step to lr_min at its end) | sgdr (the prototype's
  # warm restarts, which can end near the peak).
  c.final_schedule = 'cosine'
  # Final architecture: prototype (each epoch's arch at its peak running
  # train accuracy, best on local validation) | sample (best of
  # num_final_archs controller samples, ENAS's derive step).
  c.derive = 'prototype'
  c.num_final_archs = 8       # for derive = sample
  # The found arch is then trained for finetune_epochs from fresh weights
  # (scratch: ENAS's final retraining) or from the search's shared weights
  # (shared: the prototype). On digits `shared` loses 3-10 points: with a
  # few dozen search steps each path's shared weights are barely trained
  # (experiments.header_ablation measures it).
  c.final_weights = 'scratch'
  return c


def _baselines():
  # Fixed-head baselines (AdamW), trained for the same epochs as search +
  # fine-tune, each with its best learning rate on local validation data.
  c = ml_collections.ConfigDict()
  c.kinds = ('linear', 'mlp', 'mixer', 'cnn_project')
  c.learning_rates = (1e-3, 3e-3, 1e-2, 3e-2)  # best on val
  c.depth_fractions = (1.0, 0.75, 0.5, 0.25)
  c.repeats = 1            # configs/paper_tables.py: 5
  c.ablation_depths = (1.0, 0.5)  # experiments.header_ablation
  # experiments.header_budget: training samples per device (at most what it
  # has; digits gives ~70) and search budgets (see there).
  c.train_sizes = (20, 40, 70)
  c.search_budgets = ('default', 'x4', 'prototype')
  return c


def _aggregation():
  # Personalized architecture aggregation (docs/method.md 6).
  c = ml_collections.ConfigDict()
  c.rounds = 2
  c.prune_ratio = 0.3    # prototype: 10-50%
  c.local_epochs = 4
  c.finetune_epochs = 4
  c.taylor = 'squared'   # (g dL/dg)^2 (NVlabs) | abs_sum
  c.signature = 'features'  # features | histogram
  c.signature_samples = 200  # prototype
  # Common backbone of feature signatures: smallest (the smallest grid
  # subnet, which fits every device's budget) | full (the prototype's, which
  # computes signatures centrally; the full supernet exceeds small budgets).
  c.reference_backbone = 'smallest'
  c.js_variant = 'standard'  # textbook JS | prototype
  c.temperature = 1.0    # prototype (plain softmax)
  c.self_weight = -1.0   # < 0: no override (prototype)
  c.mode = 'pruning_per_emd'  # ACME, for the main devices
  # How the rounds train: header (the header's optimizer from each device's
  # fine-tuning rate, each phase annealed) | sgd (a constant `lr`,
  # `momentum`, `batch_size`: the prototype's 1e-3, 0.5, 64).
  c.optimizer = 'header'
  c.lr = 1e-3
  c.momentum = 0.5
  c.batch_size = 64
  # What a device may prune: all (every gate it uses) | separable (its
  # separable convs' channels alone, the prototype's).
  c.prune_set = 'all'
  # The pruning criterion smoothed over rounds (NVlabs' momentum; the
  # prototype's 0.9); 0 = each round's alone.
  c.criterion_momentum = 0.0
  c.finetune_last = True  # the last round fine-tunes after pruning
                          # (the prototype's prunes and evaluates)
  # The comparison experiment (experiments/aggregation.py):
  c.modes = ('wo_pruning', 'pruning_alone', 'pruning_avg',
                              'pruning_per_js', 'pruning_per_emd')
  c.temperatures = (1.0, 0.05)  # for the personalized modes
  c.setups = ('IID', 'C2', 'C3', 'C4')
  c.fraction_per_class = 0.15  # prototype 10%; digits is tiny
  # Device test sets in the comparison: 'local' (its own ~10 held-out samples)
  # or 'class_matched' (the test split's samples of the device's classes).
  c.test_on = 'class_matched'
  c.repeats = 1          # configs/paper_tables.py: 5
  return c


def _federated():
  # The federated baselines (experiments.baselines, acme_jax/federated/):
  # the same devices, budgets and ledger as ACME, hierarchical rounds.
  c = ml_collections.ConfigDict()
  c.methods = ('fedavg', 'fedper', 'heterofl', 'fjord', 'depthfl')
  c.setups = ('dirichlet', 'IID', 'C2', 'C3', 'C4')
  c.rounds = 10
  c.local_epochs = 1
  c.cloud_every = 2          # the cloud averages the edges every k rounds
  c.batch_size = 32
  # SGD as the methods' papers, each rate annealed by cosine to the last
  # step; every method runs at each peak and keeps the one with the best
  # mean device validation accuracy (ACME's header picks its rate on
  # local validation data too).
  c.lrs = (0.01, 0.03)
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.finetune_epochs = 2      # FedAvg's local fine-tuning at the end
  c.kd_weight = 0.5          # FjORD's self-distillation
  c.kd_temperature = 1.0     # FjORD's and DepthFL's distillation
  c.repeats = 1              # configs/paper_tables.py: 5
  return c


def _engine():
  c = ml_collections.ConfigDict()
  c.strategy = 'auto'         # auto | loop | vmap | sharded
  # Users processed at once by the stacked strategies (0: all); bounds the
  # device stage's accelerator memory, so thousands of users stream through.
  c.chunk = 0
  return c


def _network():
  # Networked mode (`python -m experiments.networked`): every tier its own
  # OS process on Flower; edge e's SuperLink listens on base_port + e.
  c = ml_collections.ConfigDict()
  c.host = '127.0.0.1'
  c.base_port = 19100
  # One long-lived worker per node holds JAX, the node's data and compiled
  # programs; Flower's per-message ClientApp only forwards to it. False:
  # stock Flower (every message computed in its own fresh process).
  c.warm_workers = True
  c.tls = True             # every link; certificates per run
  c.auth = True            # edges admit registered keys only
  c.timeout_s = 300.0      # a round's reply, then go on
  c.setup_timeout_s = 1800.0  # features, header NAS
  c.join_timeout_s = 300.0  # nodes joining an edge
  c.round_wait_s = 30.0    # for devices that left, per round
  c.run_timeout_s = 3600.0
  c.min_devices = 1        # per edge and round, else fail
  # Requests an edge has out at once (0: all its devices). Real devices
  # compute in parallel; on one machine this bounds the ClientApp processes.
  c.max_in_flight = 0
  c.retries = 2            # setup requests, cloud requests
  c.max_restarts = 2       # per tier process (launcher)
  c.restart_delay_s = 5.0
  # A killed device's key is refused until its old session expires (Flower:
  # two missed 30 s heartbeats); restarts keep trying this long.
  c.rejoin_timeout_s = 180.0
  c.count_bytes = True     # TCP bytes per link (relays)
  # Security check: SuperNodes per edge with keys the edge never registered,
  # each claiming to be one of its devices (they must be refused).
  c.impostors = 0
  # Fault injection, e.g. ('kill:device1@train.round:0',
  # 'kill:edge0@train.round:1', 'stall:device2@train.round:0').
  c.faults = ()
  return c
