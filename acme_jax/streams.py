"""Named PRNG streams: every key and seed the run derives, in one place.

A stream is folded into its parent key (`jax.random.fold_in(parent, S)`) or
added to a seed, so adding a stream never shifts another's. The values are
fixed: changing one changes every result that draws from it.
"""

# Folded into jax.random.key(config.seed).
TEACHER_INIT = 0         # fresh supernet weights
HEAD_INIT = 1            # a fresh classifier on an imported checkpoint
DEVICES = 2              # the main job's device stage
HEADERS_EXPERIMENT = 3   # experiments.headers and header_ablation
AGGREGATION_EXPERIMENT = 4
BUDGET_EXPERIMENT = 5    # experiments.header_budget
ENGINE_EXPERIMENT = 6    # experiments.engine_equivalence
BASELINES_EXPERIMENT = 7  # experiments.baselines
PERSONAL_LM_EXPERIMENT = 8  # experiments.personal_lm
SUPERNET_VALUE_EXPERIMENT = 9  # experiments.supernet_value: fresh inits

# Added to config.seed: the elastic stages' data order and augmentation.
WIDTH_STAGE_SEED = 1
DEPTH_STAGE_SEED = 2
PRETRAIN_SEED = 3         # a fresh decoder's language-model pretraining
DISTILLED_SEED = 4        # experiments.supernet_value's one-shape models:
SCRATCH_SEED = 5          # distilled, and trained from scratch
LATENCY_SAMPLES = 6       # benchmarks.latency: the shapes and headers drawn
LATENCY_SPLIT = 7         # and the models held out of the predictors' fits

# Folded into a device-stage key (the main job's, or an experiment setup's).
HEADER_SEARCH = 0        # then folded with each device id
ROUNDS = 1               # then folded with the round, then the phase
HEADER_INIT = 2          # then folded with each edge id: its headers' seed

# Folded into a device's own key.
FINETUNE = 11            # fine-tuning of a found architecture
RANDOM_ARCH = 5          # header_ablation's random architectures
# Within the device-stage programs (device/nas.py).
SEARCH_BATCHES = 1       # host RNG of the search's batch order
TRAIN_BATCHES = 2        # host RNG of fixed-arch training's batch order
TRAIN_STATE = 3          # the device state's key during fixed-arch training
FINAL_ARCHS = 7          # archs drawn from a trained controller (derive)

# A fixed head's dropout key, folded from its init key (device/heads.py).
HEAD_DROPOUT = 1

# Added to the partition seed: category setups draw each class's samples
# independently of the class groups (data/partition.py).
CATEGORY_SAMPLES = 1

# Round phases, folded into a round's key.
LOCAL_TRAINING, FINETUNING = 0, 1

