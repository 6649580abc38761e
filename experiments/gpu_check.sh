#!/usr/bin/env bash
# The prepared GPU check (issue 29): one command, from the repository root, on
# a bare GPU machine whose image holds JAX (CUDA), flax, optax, orbax,
# tokenizers, safetensors, torch and transformers but no package index.
#
#   bash experiments/gpu_check.sh          # on the GPU, about 8 minutes
#   JAX_PLATFORMS=cpu bash experiments/gpu_check.sh --dry   # CPU, tiny sizes
#
# Writes under $OUT (a new temporary folder when unset), at most 8 files:
#   env.log        devices, versions, the wheel install
#   a_tests.log    a. pytest tests/test_gpu.py (cuDNN vs XLA attention, bf16
#                     vs fp32 train step)
#   b_bench.log    b. BERT-base/large, T 128/512, bf16: bert_jax cuDNN and
#   b_rows.jsonl      XLA attention, HF PyTorch BertForPreTraining peer
#   c_losses.log   c. python -m experiments.bench_losses
#   d_remat.log    d. one remat / batch-size point, BERT-large T 512
#   d_rows.jsonl
#   gpu_check.md   the Markdown report, also printed last
# Each step is time-boxed (`timeout`); a step that fails or times out is
# reported in the table and the next one still runs. Missing pure-Python
# packages come from the git-ignored folder .whl/ (see BENCHMARKS.md, "GPU
# check"), installed without an index into a private folder; nothing else is
# installed.
set -u -o pipefail

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry) DRY=1 ;;
    *) echo "usage: $0 [--dry]" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
STATUS=$(mktemp "${TMPDIR:-/tmp}/gpu_check_status.XXXXXX")
trap 'rm -f "$STATUS"' EXIT
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 USE_TF=0 \
  TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# Time boxes in seconds (a + b + c + d + setup = 8 minutes on the GPU).
if (( DRY )); then
  # Generous: the dry run checks that the script works, not its timing.
  T_A=300; T_B=600; T_C=300; T_D=300
  DRY_FLAG=--dry
  # bench_losses' own flags, made tiny (they exist in its CLI today).
  LOSSES_ARGS=(--repeats 2 --inner 1 --shapes 4x8x3 --only '^ce$')
else
  # GPU_CHECK_T_A.._D override them (e.g. for a second run of one step).
  T_A=${GPU_CHECK_T_A:-75}; T_B=${GPU_CHECK_T_B:-240}
  T_C=${GPU_CHECK_T_C:-85}; T_D=${GPU_CHECK_T_D:-60}
  DRY_FLAG=
  LOSSES_ARGS=()
fi

step() {  # step NAME SECONDS LOG COMMAND...: runs, tees to LOG, records status
  local name=$1 limit=$2 log=$3; shift 3
  local t0=$SECONDS rc
  echo "=== step $name (time box ${limit} s): $*" | tee "$log"
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$STATUS"
  echo "=== step $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
}

{
  echo "gpu_check $(date -u '+%Y-%m-%d %H:%M:%S UTC'), dry=$DRY, root $ROOT, OUT $OUT"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  if (( ! DRY )) && compgen -G ".whl/*.whl" >/dev/null; then
    # No index here: the wheels of .whl/ only, without their dependencies,
    # into a folder of their own that goes first on the path.
    SITE=${TMPDIR:-/tmp}/gpu_check_site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" .whl/*.whl && export PYTHONPATH="$SITE:$PYTHONPATH"
    echo "installed from .whl/: $(ls .whl)"
  fi
  echo "PYTHONPATH=$PYTHONPATH"
  # Every module the check imports, imported once (and TensorFlow must not
  # be): a missing package shows here first. The dry run's steps import them.
  (( DRY )) || timeout 120 "$PY" - <<'EOF'
import importlib, sys
import jax
for m in ('bert_jax.train', 'bert_jax.heads', 'bert_jax.tasks.pretraining',
          'losses', 'experiments.benchmark', 'experiments.bench_losses',
          'ml_collections', 'pytest', 'torch', 'transformers'):
  try:
    importlib.import_module(m)
  except Exception as e:  # pylint: disable=broad-except
    print(f'IMPORT FAILED {m}: {type(e).__name__}: {e}')
print('tensorflow imported:', 'tensorflow' in sys.modules)
print('jax', jax.__version__, jax.devices())
EOF
} 2>&1 | tee "$OUT/env.log"
# The exports above ran in a pipeline's subshell: repeat the path here.
if (( ! DRY )) && compgen -G ".whl/*.whl" >/dev/null; then
  export PYTHONPATH="${TMPDIR:-/tmp}/gpu_check_site:$PYTHONPATH"
fi

step a "$T_A" "$OUT/a_tests.log" \
  "$PY" -m pytest -q -p no:cacheprovider -o addopts= tests/test_gpu.py -rs
step b "$T_B" "$OUT/b_bench.log" \
  "$PY" -m experiments.gpu_bench rows --part=b --jsonl="$OUT/b_rows.jsonl" \
  --budget-s=$((T_B - 20)) $DRY_FLAG
step c "$T_C" "$OUT/c_losses.log" \
  "$PY" -m experiments.bench_losses "${LOSSES_ARGS[@]}"
step d "$T_D" "$OUT/d_remat.log" \
  "$PY" -m experiments.gpu_bench rows --part=d --jsonl="$OUT/d_rows.jsonl" \
  --budget-s=$((T_D - 10)) $DRY_FLAG

echo
"$PY" -m experiments.gpu_bench render --out-dir="$OUT" --status="$STATUS" $DRY_FLAG
echo "logs and gpu_check.md in $OUT"
