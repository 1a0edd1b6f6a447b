"""Default: MHD on the embedded digits, 5 clients, complete graph, 3 heads.

Runs offline in about a minute on 2 CPU cores:

    python launch.py --config=configs/default.py --workdir=/tmp/mhd_default

Each client owns two of the ten digit classes (skew 0.9: 90% of its private
examples come from them); 30% of the training images form the unlabelled
public set. Switch distillation off with
`--config.nu_main=0 --config.nu_aux=0 --config.nu_emb=0`, or use one head
(`--config.num_heads=1`) for naive distillation.

This file is the config reference: every field is documented by the comment
beside it or by the comment block just above it (tests/test_configs.py checks
that none is left without). Every field can be overridden on the command line
by its dotted name, e.g. `--config.data.batch_size=64`.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0                 # partition, init, sampling and target draws derive from it
  c.num_steps = 1500         # training steps
  c.log_every = 100          # progress line and metrics.jsonl record every N steps (the only
                             # host sync)
  c.eval_every = 500         # evaluation every N steps (and at the end)
  # How clients run inside the step (docs/scale.md): 'vmap' batches all clients into one
  # program; 'hybrid' keeps vmap but writes each client's convolutions out one by one;
  # 'loop' writes every client out inside one jit; 'auto' measures them (below).
  c.strategy = 'auto'        # auto | vmap | hybrid | loop
  c.strategy_measure_steps = 3  # auto, models with convolutions: time vmap, hybrid and loop
                             # for N steps each after compiling and train with the fastest (cached
                             # in $MHD_STRATEGY_CACHE or ~/.cache/mhd_jax/strategies.json);
                             # 0 = no measuring, the static rule: 'loop' on CPU for models
                             # with convolutions, else 'vmap'
  c.num_devices = 0          # devices the client axis is sharded over (0 = all)
  # How many clients' state the devices hold at once (docs/scale.md, "Cohorts").
  c.population = ml_collections.ConfigDict()
  c.population.resident = 0  # K >= 1: the population's state lives in host memory and each step
                             # streams it through the devices K clients at a time (what every
                             # client sends, then each cohort's update; the same step); K >= N
                             # or 0 while they fit: every client resident. 0 = auto: resident
                             # when XLA's memory analysis says the step fits the devices, else
                             # cohorts of the largest K that fits (logged)
  # jax.profiler trace of steps start_step .. start_step + num_steps - 1 into WORKDIR/profile/
  # (open with TensorBoard's profile plugin, or perfetto_trace.json.gz at ui.perfetto.dev).
  c.profile = ml_collections.ConfigDict()
  c.profile.start_step = 0   # first traced step (>= 1 when num_steps > 0)
  c.profile.num_steps = 0    # steps traced; 0 = no profile
  c.distributed = ml_collections.ConfigDict()  # multi-host start-up (jax.distributed)
  c.distributed.initialize = False     # True on multi-host TPU pods / GPU clusters
  c.distributed.coordinator_address = ''  # '' = let JAX detect the cluster; else 'host:port'
  c.distributed.num_processes = 0      # passed to jax.distributed.initialize when
  c.distributed.process_id = -1        # coordinator_address is set

  # Orbax checkpoints in WORKDIR/checkpoints; a run on a workdir that holds some
  # resumes from the latest that verifies (docs/durable_runs.md: what may change).
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 500   # save every N steps, and always at the end; 0 = only at the end
  c.checkpoint.keep = 3      # how many of the latest checkpoints to keep

  c.num_clients = 5          # N, the clients of the population
  c.num_heads = 3            # 1 = naive distillation, >= 2 = MHD

  c.data = ml_collections.ConfigDict()
  c.data.name = 'digits'     # 'digits' or 'mnist1d' (embedded) or a TFDS name
  c.data.data_dir = ''       # TFDS data_dir ('' = TFDS default)
  c.data.train_split = 'train'  # TFDS split for training (embedded datasets: unused; the
                             # digits split by split_seed and test_fraction, mnist1d by num_test)
  c.data.eval_split = 'test'   # TFDS split for evaluation (embedded datasets: unused)
  c.data.image_size = 8      # TFDS: output height and width
  c.data.augment = 'none'    # TFDS: 'imagenet' | 'cifar' | 'none'
  c.data.split_seed = 0      # digits: seed of the fixed train/test split
  c.data.test_fraction = 0.25  # digits: fraction held out for evaluation
  c.data.num_samples = 5000  # mnist1d: examples generated (a multiple of 10; cached on disk)
  c.data.num_test = 1000     # mnist1d: the last num_test of them are the test set (5000 and
                             # 1000: the published dataset and split)
  c.data.batch_size = 32     # private examples per client per step
  c.data.public_batch_size = 64  # public examples per step, shared by all clients
  c.data.eval_batch_size = 512  # evaluation batch (the last batch is padded and masked)

  c.partition = 'skew'       # 'skew' | 'dirichlet'
  c.skew = 0.9               # probability that a private example goes to an owner of its
                             # class (else to a random client): 0 = iid, 1 = disjoint
  c.class_layout = 'interleaved'  # skew with more clients than classes: client i owns class
                             # i mod C ('interleaved') or floor(i C / N) ('bands': runs of
                             # neighbouring ids share a class; docs/scale.md, population study)
  c.dirichlet_alpha = 0.5    # partition = 'dirichlet': concentration of the label partition
  c.public_fraction = 0.3    # fraction of the training set made public (unlabelled); 0 = none
                             # (embedded datasets, runs that do not distil: topology='none')

  # none | complete | ring | chain | star | islands | random_regular | explicit | erdos_renyi |
  # small_world | torus | random_geometric (the random ones are drawn from seed)
  c.topology = 'complete'
  c.num_islands = 2          # topology = 'islands'
  c.degree = 2               # topology = 'random_regular'; 'small_world': lattice neighbours (even)
  c.adjacency = ''           # topology = 'explicit': rows separated by ';', e.g. '0 1; 1 0'
  c.edge_prob = 0.5          # topology = 'erdos_renyi': probability of each link
  c.rewire_prob = 0.1        # topology = 'small_world': probability that a link is rewired
  c.grid_rows = 0            # topology = 'torus': grid rows, dividing num_clients (0 = squarest)
  c.radius = 0.5             # topology = 'random_geometric': link length in the unit square
  # How each client's candidates are gathered in the step (docs/scale.md): 'dense' mixes over
  # all N clients (time and memory ~ N^2), 'sparse' over a padded neighbour table of each
  # client's links (~ N d, d the largest degree); both give the same step. 'auto' takes the
  # table when no client has links to more than a quarter of the population (every sparse
  # graph), dense otherwise (e.g. the complete graph). The run logs which one runs.
  c.exchange = 'auto'        # auto | dense | sparse

  # A network that changes with the step (mhd_jax/network/graph_schedule.py, participation.py, lag.py,
  # docs/dynamics.md). Every draw depends only on (seed, step): a resume is exact. The defaults
  # are the paper's setting: the fixed graph, every client every step, no lag.
  c.dynamics = ml_collections.ConfigDict()
  c.dynamics.schedule = 'static'   # static | matching | edge_failure | cycle (graph_schedule.py)
  c.dynamics.failure_p = 0.0       # schedule = 'edge_failure': probability a link fails at a step
  c.dynamics.cycle_graphs = ''     # schedule = 'cycle': graphs separated by '|', each a topology
                                   # name with overrides of its fields, e.g.
                                   # 'ring | islands:num_islands=3 | erdos_renyi:edge_prob=0.3'
                                   # (graph i's seed is seed + i unless it sets seed=)
  c.dynamics.cycle_every = 1       # schedule = 'cycle': steps on each graph before the next
  c.dynamics.participation = 'all'  # all | bernoulli | trace | stragglers (participation.py)
  c.dynamics.availability = 1.0    # participation = 'bernoulli': probability a client takes part
  c.dynamics.trace_file = ''       # participation = 'trace': .npy or text (.csv/.txt) of 0/1,
                                   # num_clients rows, >= num_steps columns; column s-1 = step s
  c.dynamics.straggler_fraction = 0.0  # participation = 'stragglers': share of clients that
                                   # straggle (round(fraction * num_clients), drawn from seed)
  c.dynamics.straggler_every = 1   # participation = 'stragglers': a straggler takes part every
                                   # N steps, the i-th one at steps s with (s - 1) % N == i % N
  c.dynamics.staleness = 0         # tau: targets from neighbours' tau-steps-old models (0 = live);
                                   # costs one extra public forward per client per step and a
                                   # buffer of tau steps of public outputs (docs/dynamics.md)

  c.nu_main = 1.0            # weight of head-0 distillation
  c.nu_aux = 1.0             # weight of the auxiliary heads' distillation
  c.nu_emb = 0.0             # weight of embedding distillation
  c.temperature = 1.0        # KD temperature T (losses scaled by T^2)
  # How a head's target is built from its candidates: most_confident | mean | random |
  # confidence_weighted | neighbours_first | neighbour_and_self, or a score rule that mixes the
  # candidates weighted by edge weight x score^target_power: confidence_weighted |
  # relative_confidence | certainty_weighted | exp_entropy_weighted | class_relative.
  # confidence_weighted is the measured MHD recipe (docs/results.md, "When do auxiliary heads
  # help?"); the rules' formulas are in docs/algorithm.md.
  c.target = 'confidence_weighted'
  c.target_power = 1.0       # score rules: each score raised to this power (1 = the score;
                             # larger = closer to most_confident)
  c.include_self = False     # aux head k also distils from the client's own head k-1
  c.average_every = 0        # FedAvg / gossip baseline: every N steps each client averages
                             # its weights with its in-neighbours' (W = D^-1 (A + I), within
                             # its group: same-architecture clients only); 0 = off

  c.model = ml_collections.ConfigDict()
  # mlp | cnn | resnet18 | resnet34 | resnet18_cifar | resnet34_cifar (cnn and the ResNets: 2-D
  # images only), or the published MNIST-1D models at their published sizes (any input):
  # linear (no hidden layer) | mnist1d_mlp | mnist1d_cnn | mnist1d_gru (mhd_jax/models/mnist1d.py)
  c.model.name = 'mlp'
  c.model.width = 128        # MLP units / CNN base channels / ResNet base width (64 canonical)
  c.model.depth = 2          # MLP layers / CNN stages (mlp / cnn only)
  c.model.dtype = 'float32'  # computation dtype ('bfloat16' on accelerators); params stay float32
  c.model.aux_backbone_grad = True  # aux-head losses reach the backbone (else only their head)
  c.model.norm = 'batch'     # ResNets: 'batch' (BatchNorm) | 'group' (GroupNorm, no batch
                             # statistics: what dp.enabled needs); mlp and cnn have no norm
  c.model.fused_passes = False  # one model call per client on [private; public], batch
                             # statistics per segment (same results up to float rounding;
                             # fewer, larger convs). Off: 1.25x slower on 2 CPU cores, and
                             # slower on a GPU at N = 8 (docs/scale.md)

  # Heterogeneous populations: c.groups.NAME = {'num_clients': n, 'model': {...overrides of
  # c.model}}, in client order; empty = one group of c.model (see configs/digits_hetero.py).
  c.groups = ml_collections.ConfigDict()

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'  # 'adam' (AdamW) | 'sgd' (Nesterov momentum)
  c.optimizer.learning_rate = 1e-3  # peak learning rate (as in optax)
  c.optimizer.momentum = 0.9  # sgd only
  c.optimizer.weight_decay = 0.0  # decoupled weight decay (AdamW; sgd: added to the gradient)
  c.optimizer.schedule = 'constant'  # 'constant' | 'cosine' (decays to 0 at num_steps)
  c.optimizer.warmup_steps = 0  # linear warm-up steps before the schedule
  c.optimizer.grad_clip = 0.0  # global-norm clip per client; 0 = off

  # What each client sends (its softmax outputs on the public batch) and how it is encoded;
  # the options compose (mhd_jax/wire/compression.py). Defaults send everything as float32.
  c.wire = ml_collections.ConfigDict()
  c.wire.topk = 0            # classes sent per example: the k largest with their ids (the
                             # receiver spreads the rest evenly); 0 = all C
  c.wire.bits = 32           # 32 (float32) | 8 | 4: integer codes on a per-row float16 scale
  c.wire.heads_sent = 0      # only source heads 0..m-1 are sent (receivers' heads that read
                             # a later one get no neighbour target); 0 = all
  c.wire.every = 1           # outputs are sent on every r-th step only (none in between)

  # DP-SGD on each client's private term (mhd_jax/wire/privacy.py, docs/privacy.md): per-example
  # clipping and Gaussian noise; ε per client at dp.delta, by the PLD accountant, assuming
  # Poisson sampling with q = data.batch_size / (the client's private examples).
  c.dp = ml_collections.ConfigDict()
  c.dp.enabled = False       # True needs a model without BatchNorm (mlp, cnn, or a ResNet
                             # with model.norm='group')
  c.dp.noise_multiplier = 1.0  # sigma: noise std = sigma * clip_norm per coordinate; > 0 with DP
  c.dp.clip_norm = 1.0       # C: each example's whole-gradient L2 norm is clipped to C
  c.dp.delta = 1e-5          # the delta of the reported (epsilon, delta); in (0, 1)
  return c
