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

# model and cloud
MODEL_FAMILIES = ('vit', 'bert')
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
HEAD_KINDS = ('linear', 'mlp', 'mixer', 'cnn_project')

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

# client engine
STRATEGIES = ('auto', 'loop', 'vmap', 'sharded')
