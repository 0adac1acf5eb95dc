"""Every default value and threshold of byoc_torch, in one place.

Place in the data flow: read by :mod:`byoc_torch.options` (the option defaults), by the CLI
(so it never re-types a default) and by the stages that have internal limits. Nothing else
defines a default: change it here and every reader follows.
"""

from __future__ import annotations

# -- compile options (byoc_torch.Options) ---------------------------------------------------------
# "host": this machine's CPU, {"kind": "llvm", "mcpu": <its LLVM name>} (byoc_torch.cpu).
TARGET = "host"
# 1 = off: absorbing small TVM blocks measured 1.01-1.55x slower (docs/performance.md).
MIN_BLOCK_SIZE = 1
REQUIRE_FULL_COMPILATION = False
VERIFY = True
RUN_DECOMPOSITIONS = True
KEEP_PARAMS_AS_INPUT = False
# None = torch.get_num_threads(), capped by the cores available (threads.default_threads).
NUM_THREADS = None

# Random inputs (verification without example inputs, Dynamo's fake inputs, tuning's timing
# inputs; byoc_torch.tensors.random_tensor): integers are drawn from [0, RANDOM_INT_HIGH).
RANDOM_INT_HIGH = 4

# -- driver ---------------------------------------------------------------------------------------
# Build-failure and verification rounds before compile gives up (each round moves >= 1 node).
MAX_COMPILE_ROUNDS = 12

# -- loading artifacts ----------------------------------------------------------------------------
# Artifacts byoc_torch.load keeps loaded (TVM's load_module retains ~130 KB per call).
LOADED_ARTIFACTS_KEPT = 16
# byoc_torch.load refuses a file without byoc_torch's seal (byoc_torch.artifact_file) unless
# the caller passes allow_unsealed=True.
LOAD_ALLOW_UNSEALED = False

# -- runtime --------------------------------------------------------------------------------------
# Byte alignment TVM's compiled kernels assume of their inputs.
TVM_ALIGNMENT = 64
# Rounds TVM's idle pool workers spin-yield before sleeping (TVM's own default: 300000), set
# through the environment unless the user set it: 0 = sleep at once, never compete with LibTorch.
TVM_THREAD_POOL_SPIN_COUNT = 0

# -- CLI and measurements -------------------------------------------------------------------------
DEMO_MODEL = "demo"
LATENCY_WARMUP = 10
LATENCY_REPEAT = 100

# -- robust timing (byoc_torch.timing.robust_times, used by measured placement) -------------------
# One sample makes as many calls as fit in this many ms; rounds of one sample per contestant,
# more rounds (up to the max) while a spread is high.
TIMING_SAMPLE_MS = 0.5
TIMING_ROUNDS = 15
TIMING_MAX_ROUNDS = 45
# The estimate is this quantile of the kept samples; the spread is how far this upper quantile
# lies above it, relative. A spread above TIMING_NOISY_SPREAD is re-measured, then "noisy".
TIMING_QUANTILE = 0.2
TIMING_SPREAD_QUANTILE = 0.6
TIMING_NOISY_SPREAD = 0.25
# A sample whose wall/CPU-time ratio is this many times its contestant's usual one was
# descheduled (another process ran) and is dropped.
TIMING_DESCHEDULED_FACTOR = 1.5
# A faster contestant replaces a simpler one only when its best samples (in both halves of the
# rounds), or its time up to its measured spread, are below the simpler one's less this share
# (byoc_torch.timing.choose).
TIMING_MARGIN = 0.05

# -- measured placement ---------------------------------------------------------------------------
# "measured": every region runs where it measured faster; "tvm": TVM runs all it can convert.
PLACEMENT = "measured"
PLACEMENTS = ("measured", "tvm")
# A region moves to LibTorch only when it saves more than this share of its TVM time and more
# than this many ms: differences inside timing noise keep TVM's placement.
PLACEMENT_MARGIN = 0.05
PLACEMENT_MARGIN_MS = 0.0005
# A region whose TVM kernels take, at the best of two calls, this many times its LibTorch time and
# at least PLACEMENT_HOPELESS_MS is not timed further in TVM: no crossing saved can make up for it,
# and timing it fully costs seconds (HF GPT-2's untuned TVM addmm, 96 ms against 0.7 ms in
# LibTorch, was 5.8 of the 12 s its regions took to time).
PLACEMENT_HOPELESS_FACTOR = 10.0
PLACEMENT_HOPELESS_MS = 1.0
# The whole-model check (byoc_torch.placement.end_to_end): candidates modelled within this
# factor of the best are built and timed end to end, robustly (byoc_torch.timing), in at least
# this many interleaved rounds.
PLACEMENT_CHECK_FACTOR = 3.0
PLACEMENT_CHECK_ROUNDS = 15
# ... in this many passes, this many seconds apart: on a busy host, load that slowed one
# candidate through a whole pass (the built-in demo's package 30 % over its quiet time for
# one compile's check, the next compiles' checks not) rarely covers every pass.
PLACEMENT_CHECK_PASSES = 3
PLACEMENT_CHECK_PAUSE_S = 0.1
# A candidate whose first call is this many times slower than another's, and slower than
# PLACEMENT_CHECK_SLOW_MS, is not timed further (faster calls cost little to time, and a
# single call of a fast model is too noisy on a busy machine to rule it out).
PLACEMENT_CHECK_FIRST_CALL_FACTOR = 10.0
PLACEMENT_CHECK_SLOW_MS = 100.0

# -- LibTorch subgraph executors (byoc_torch.aot_inductor) -----------------------------------------
# "auto": a subgraph runs its AOTInductor package when it measured faster than its TorchScript
# beyond the timing margin;
# "aot_inductor": whenever the package compiles and agrees; "torchscript": never.
TORCH_EXECUTOR = "auto"
TORCH_EXECUTORS = ("auto", "aot_inductor", "torchscript")
# "auto" compiles no package for a subgraph whose TorchScript takes less than this (ms per call):
# an AOTInductor compile costs seconds, and below this a faster kernel gains little.
AOTI_MIN_SUBGRAPH_MS = 0.5
# Measured placement builds the whole model as one AOTInductor package (the "all-aot-inductor"
# candidate) when all-LibTorch is modelled at this or more. Far below the models it pays for:
# at 0.5 ms the built-in cnn (modelled 0.49 ms on a quiet machine, more under load) got the
# candidate only while the machine was busy, and placements flipped between 0.33x and 0.67x
# eager (benchmarks/placement_stability.py). At 0.1 ms the same happened to the built-in demo
# (modelled 0.089 ms on a quiet Zen 4 host): all-tvm, 0.61x eager, when quiet; all-aot-inductor,
# 0.42x, in two of three busy compiles. Below 0.02 ms a model is mostly call overhead.
AOTI_MIN_MODEL_MS = 0.02
# Runs of the built model per executor when "auto" compares them, in alternating rounds (the
# package kept only when faster beyond TIMING_MARGIN in both halves of the rounds, or beyond its
# spread: byoc_torch.timing.choose).
AOTI_MEASURE_ROUNDS = 6
# Measured placement compiles at most this many regions (the slowest in LibTorch, each at
# least AOTI_MIN_SUBGRAPH_MS) into AOTInductor packages to time them as a third executor: a
# package costs seconds to compile (cached by key afterwards).
AOTI_MAX_REGIONS = 2
# What AOTInductor packages make of the float32 matrices multiplied by mm / addmm / linear
# (frozen_weights.matmul_weights):
# * "packed": frozen in with the other parameters; inductor packs them for oneDNN's
#   _linear_pointwise (in AOT mode it cannot use MKL's packed sgemm).
# * "transposed": frozen in, stored transposed ((in, out), the layout a linear multiplies by):
#   MKL's sgemm still copies the weight into its panels on every call, but from this layout
#   the copy is cheaper (perf: `scopy_down16` in place of `scopy_right16`); inductor's oneDNN
#   weight packing is off in those packages (unless an ATen convolution there needs it).
# * "panels": frozen in, in 16-column panels for the runtime's own multiply
#   (torch.ops.byoc_torch.linear_panels, runtime/linear_panels.cc), which reads them as they
#   lie: no per-call copy of the weight, and its own split of the work over the threads.
# * "inputs": package inputs, passed by the runtime at each call; MKL's sgemm on the transposed
#   view of the one copy TVM keeps.
# Which of oneDNN's packed multiplies and MKL's sgemm is faster depends on the CPU
# (benchmarks/aoti_freezing.py, x eager, interleaved medians): on a Zen 3 host (AVX2) frozen
# and packed was slower, HF BERT 1.11 against 0.83 as inputs at one thread; on a Zen 4 host
# (AVX-512) it is faster, HF BERT 0.64 against 0.74 at one thread and 0.62 against 0.77 at two.
# MKL's sgemm on transposed matrices against on the transposed view, BERT's 17 multiplies at
# one thread on the Zen 3 host: 0.95 (GPT 0.93, ViT 0.92). The panels against sgemm on
# transposed matrices, same multiplies and host: 0.95 / 0.96 / 0.85 at one thread, 0.87 / 0.74 /
# 0.67 at two.
# None: measured on this CPU on the model's own multiplies, "packed", "transposed" and "panels";
# a string forces one. A frozen weight lives once: TVM's copy is dropped from the calls of the
# subgraphs whose packages run (codegen.weights_in_packages_only).
AOTI_MATMUL_WEIGHTS: str | None = None
# Whether multiplies that read the same input (an attention's query, key and value projections) and
# whose matrices are frozen and packed for oneDNN become one multiply by the concatenated matrices
# in AOTInductor packages (inductor's cpp.enable_concat_linear, off in inductor by default: not
# faster for every shape and CPU). One call instead of three saves ATen's per-call setup of a oneDNN
# multiply (about 14 us a call on the Zen 4 host) and gives oneDNN a wider matrix; HF ViT's package
# went from 0.65x to 0.63x eager at one thread, 0.51x to 0.48x at two.
# None: measured on this CPU on the model's own groups (frozen_weights.concat_multiplies); True /
# False force it.
AOTI_CONCAT_MULTIPLIES: bool | None = None
# Whether AOTInductor packages run float32 2-d convolutions through the runtime's own oneDNN op
# (torch.ops.byoc_torch.conv2d_onednn: primitive and packed weight built once) instead of ATen's
# mkldnn._convolution_pointwise, which pays oneDNN's setup on every call (about 25 us on the
# Zen 4 host). HF ResNet's package (one thread, interleaved, batch norms folded either way):
# 1.10 -> 0.87 ms, at two threads 0.75 -> 0.51 ms; the built-in cnn 0.099 -> 0.068 ms.
# None: measured on this CPU on the model's own convolutions (onednn_convolutions.onednn_verdict);
# True / False force it. Needs a runtime built with oneDNN (the onednn-cpu-gomp wheel).
AOTI_ONEDNN_CONVOLUTIONS: bool | None = None
# That measurement times the model's most frequent convolution shapes while their floating-point
# operations per round stay within this (the first shape is always timed).
AOTI_CONV_PROBE_FLOPS = 2e8
# The measurement of oneDNN's packed multiplies against MKL's sgemm times the model's most
# frequent multiply shapes, rows capped at this (the rows of a batch of 128 tokens), ...
AOTI_MATMUL_PROBE_ROWS = 128
# ... while their floating-point operations per round stay within this (about 10 ms at one
# thread here; the first shape is always timed).
AOTI_MATMUL_PROBE_FLOPS = 1e9
# Constants of this many bytes or more that no convolution reads (embedding tables) are inputs of
# AOTInductor packages, not frozen in: freezing gains them nothing (it folds batch norms into
# convolutions and prepacks weights; it does nothing to a gather), and one shared with the rest of
# the model (a tied embedding) would live twice. HF BERT's word embeddings are 31 MB.
AOTI_FROZEN_MAX_BYTES = 256 << 10
# Largest value a package's program computes from no input that is computed once at compile time
# and stored in the package (byoc_torch.constant_folding): an attention mask of 128x128 floats is
# 64 KB; past this a value is recomputed on every call rather than read from memory.
AOTI_FOLD_MAX_BYTES = 4 << 20
# Bytes of AOTInductor packages kept in memory for the process (byoc_torch.compile_cache.MEMORY).
AOTI_MEMORY_CACHE_BYTES = 256 << 20

# -- default schedules (byoc_torch.schedules) ------------------------------------------------------
# A kernel runs its outer loop in parallel only from this many elements on: below it, waking
# the thread pool costs more than the work it shares.
SCHEDULE_PARALLEL_MIN_ELEMENTS = 1 << 14
# A block is inlined into its consumer only while the merged expression, Let-bound values
# counted in full where used (what TVM's analyzer walks), stays this small: tanh(tanh(x)) of
# fast_math is about 1e6 (0.24 s of LLVM codegen), tanh(tanh(tanh(x))) 3e8 (83 s).
SCHEDULE_INLINE_MAX_SIZE = 2_000_000

# -- tuning ---------------------------------------------------------------------------------------
# MetaSchedule trials spent on the TVM kernels; 0 = no tuning (a database is still applied).
TUNE_TRIALS = 0
# Seeds each task's random state, so a budget gives reproducible candidates.
TUNE_SEED = 0
# MetaSchedule's default cost model ("random": no training, cheap) and search strategy.
TUNE_COST_MODEL = "xgb"
TUNE_STRATEGY = "evolutionary"
# MetaSchedule's batch size; smaller when the budget is split thinly.
TUNE_MAX_TRIALS_PER_ITER = 64
# tuning_measure.time_function: runs per repeat, repeats (the median is reported), and the
# least duration of one repeat.
TUNE_TIMING_NUMBER = 10
TUNE_TIMING_REPEAT = 5
TUNE_TIMING_MIN_REPEAT_MS = 50

# -- byoc-torch bench (byoc_torch.tools.overhead) ------------------------------------------------
# A timing whose (p90 - p10) / median exceeds this was taken on a busy machine: bench warns.
BENCH_BUSY_SPREAD = 0.5
# The plot's y axis is logarithmic when the plotted latencies span more than this factor.
BENCH_LOG_Y_RANGE = 10.0

# -- torch.compile backend (byoc_torch.dynamo) ---------------------------------------------------
# Variants one Dynamo graph compiles for the values it specializes (a float attribute Dynamo
# passes as a tensor, a SymFloat, a carrier size torch.export fixed): past this many, the graph
# runs in PyTorch (a value that changes every call would otherwise compile every call).
DYNAMO_MAX_VARIANTS = 4
