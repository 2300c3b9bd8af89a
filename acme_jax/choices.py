"""The allowed values of the config's enumerated fields, in one place.

A leaf module: validation (`config.py`) reads what a field may be without
importing the tier that acts on it, and each tier module takes its names
from here, so the two never disagree.
"""

# data
OFFLINE_DATASETS = ('digits', 'synthetic')
TFDS_IMAGE_DATASETS = ('cifar10', 'cifar100', 'cars196')
TFDS_TEXT_DATASETS = ('glue/sst2', 'imdb_reviews', 'ag_news_subset')
TEXT_DATASETS = ('wordnet',) + TFDS_TEXT_DATASETS
DATASETS = OFFLINE_DATASETS + TFDS_IMAGE_DATASETS + TEXT_DATASETS
SYNTHETIC_LIKE = ('digits', 'cifar10', 'cifar100', 'cars196')
RANDOM_PARTITIONS = ('iid', 'dirichlet', 'shards')
CATEGORY_PARTITIONS = ('IID', 'C2', 'C3', 'C4')
PARTITIONS = RANDOM_PARTITIONS + CATEGORY_PARTITIONS
# Category setups: devices sharing a class get disjoint samples, or each is
# sampled on its own (the prototype's; devices may share samples).
CATEGORY_SAMPLING = ('disjoint', 'independent')

# model and cloud
MODEL_FAMILIES = ('vit', 'bert', 'decoder')
DTYPES = ('float32', 'bfloat16')
ELASTIC_SCHEMES = ('sliced', 'masked', 'static')
# Stage 2's teacher: the width-elastic model at the student's width
# (DynaBERT), it at full width, or the fine-tuned teacher.
STAGE2_TEACHERS = ('width_stage', 'width_stage_full', 'teacher')
PARAM_SHARDINGS = ('replicated', 'fsdp')
CPU_COLLECTIVES = ('', 'gloo', 'mpi')

# selection
COST_MODELS = ('paper', 'exact')
FRONTS = ('pfg', 'non_dominated')
EDGE_ACCURACY = ('measured', 'predicted')
BUDGET_DRAWS = ('linspace', 'uniform')

# device
FEATURE_SOURCES = ('last_hidden', 'final_norm')
DERIVES = ('prototype', 'sample')
FINAL_WEIGHTS = ('shared', 'scratch')
# The final training's learning rate: annealed per step to its end, or the
# prototype's per-epoch cosine with warm restarts.
FINAL_SCHEDULES = ('cosine', 'sgdr')
HEAD_KINDS = ('linear', 'mlp', 'mixer', 'cnn_project')
# experiments.header_budget: the config's search, four times its epochs, or
# the prototype's ratio of search steps to training samples.
SEARCH_BUDGETS = ('default', 'x4', 'prototype')

# aggregation rounds
MODES = ('wo_pruning', 'pruning_alone', 'pruning_avg', 'pruning_per_js',
         'pruning_per_emd')
PERSONALIZED_MODES = ('pruning_per_js', 'pruning_per_emd')
TAYLOR = ('squared', 'abs_sum')
SIGNATURE_KINDS = ('histogram', 'features')
JS_VARIANTS = ('standard', 'prototype')
# The common backbone whose CLS features make signatures: the full supernet
# (the prototype's) or the smallest grid subnet.
REFERENCE_BACKBONES = ('full', 'smallest')
TEST_ON = ('local', 'class_matched')
# The rounds' optimizer: the header's own (each device's fine-tuning rate,
# the final training's schedule) or SGD at a constant rate (the prototype).
ROUND_OPTIMIZERS = ('header', 'sgd')
# What a device may prune: every gate it uses, or its separable convs' alone
# (the prototype: no stem or cell-output channel).
PRUNE_SETS = ('all', 'separable')

# federated baselines (experiments.baselines)
FEDERATED_METHODS = ('fedavg', 'fedper', 'heterofl', 'fjord', 'depthfl')

# client engine
STRATEGIES = ('auto', 'loop', 'vmap', 'sharded')

# experiments.supernet_value: one model per shape, distilled from the cut
# teacher or trained from scratch, at equal steps per model or with all of
# the grid's models together costing what the supernet cost.
SUPERNET_VALUE_ARMS = ('distilled', 'scratch')
SUPERNET_VALUE_BUDGETS = ('equal_steps', 'equal_compute')
