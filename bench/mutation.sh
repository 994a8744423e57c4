#!/usr/bin/env bash
# Mutation testing with mutmut (not part of CI: it reruns the covering tests once per mutant).
#
#   bash bench/mutation.sh                       # the default module/test pairs below
#   bash bench/mutation.sh stages/video/sampling.py "tests/test_video_sampling.py tests/test_sampling_properties.py"
#   bash bench/mutation.sh stages/retrieval/rerank.py "tests/test_rerank.py" "not 512"   # third: a pytest -k filter
#   MUTATION_OUT=/tmp/mut bash bench/mutation.sh          # keep each module's results and run log there
#   MUTATION_ONLY="stages/contract/tasks.py stages/features/store.py" bash bench/mutation.sh   # a subset of the default pairs
#   MUTATION_ONLY=stages/features/store.py MUTATION_NAMES=/tmp/mut/store.results.txt bash bench/mutation.sh
#       # only the mutants named in a file (first word of each line): re-test an earlier run's survivors
#
# Each pair is mutated in a throw-away copy of the committed tree (git archive HEAD), so neither mutmut's
# mutants/ folder nor its cache lands in the checkout. Prints mutmut's per-mutant results and the score
# (killed / (killed + survived)); survivors are listed so each can be killed by a test or explained.
# Needs the `bench` extra (pip install -e '.[bench]').
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, symlink kept (the venv's own interpreter)
"$PY" -c "import mutmut" 2>/dev/null || { echo "mutmut is missing: pip install -e '.[bench]'" >&2; exit 2; }
MUTMUT="$(dirname "$PY")/mutmut"

OUT=${MUTATION_OUT:-}
[ -n "$OUT" ] && mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)

# module | covering tests | optional pytest -k filter (drops slow parametrisations that add no coverage).
# The CLI-level tests (test_evaluate_stage.py, the pipeline end-to-end tests) are left out: each takes
# seconds per mutant; the library tests and the *_edges/_contract test files cover the same code directly.
# preprocess.py runs test_preprocess_edges.py alone (torchvision as the reference): test_geometry.py and
# test_golden_geometry.py decode and compress videos, over a minute per mutant on a 2-core machine.
if [ $# -ge 2 ]; then
  PAIRS=("$1|$2|${3:-}")
else
  PAIRS=(
    "stages/video/sampling.py|tests/test_video_sampling.py tests/test_sampling_properties.py tests/test_sampling_edges.py|"
    "stages/backbones/preprocess.py|tests/test_preprocess_edges.py|"
    "stages/retrieval/metrics.py|tests/test_retrieval_metrics.py tests/test_metrics_edges.py tests/test_pair_ranks_edges.py|"
    "stages/retrieval/pair_ranks.py|tests/test_retrieval_metrics.py tests/test_metrics_edges.py tests/test_pair_ranks_edges.py|"
    "stages/retrieval/blocks.py|tests/test_retrieval_metrics.py tests/test_metrics_edges.py tests/test_pair_ranks_edges.py|"
    "stages/retrieval/conventions.py|tests/test_retrieval_metrics.py tests/test_conventions_edges.py|"
    "stages/retrieval/sk_norm.py|tests/test_rerank.py tests/test_sk_norm_edges.py|not 512"
    "stages/retrieval/rerank.py|tests/test_rerank.py tests/test_rerank_edges.py|not 512"
    "stages/contract/tasks.py|tests/test_tasks.py tests/test_tasks_contract.py|"
    "stages/features/store.py|tests/test_store.py tests/test_store_edges.py|"
  )
fi

for pair in "${PAIRS[@]}"; do
  module=${pair%%|*}
  rest=${pair#*|}
  tests=${rest%%|*}
  kfilter=${rest#*|}
  if [ -n "${MUTATION_ONLY:-}" ] && [[ " $MUTATION_ONLY " != *" $module "* ]]; then continue; fi
  existing=""
  for t in $tests; do [ -e "$t" ] && existing="$existing $t"; done
  tests=${existing# }
  work=$(mktemp -d)
  git archive HEAD | tar -x -C "$work"
  {
    echo
    echo "[mutmut]"
    echo "source_paths = stages/"
    echo "only_mutate = $module"
    echo "also_copy ="
    echo "    pipeline/"
    echo "    configs/"
    echo "    data/"
    echo "pytest_add_cli_args_test_selection ="
    for t in $tests; do echo "    $t"; done
    # forkserver: each mutant's pytest is forked from a server that has only collected the tests. Forking
    # the main process instead (mutmut's "fork") copies numba's running OpenMP thread pool into the child,
    # which aborts there (every retrieval mutant would read "suspicious").
    echo "process_isolation = ${MUTATION_ISOLATION:-forkserver}"
    printf 'pytest_add_cli_args =\n    -p\n    no:cacheprovider\n'  # a list: one argument a line
    [ -n "$kfilter" ] && printf '    -k\n    %s\n' "$kfilter"
  } >> "$work/setup.cfg"
  echo "== $module  (tests: $tests${kfilter:+; -k \"$kfilter\"})"
  t0=$(date +%s)
  names=()  # MUTATION_NAMES=FILE: test only the mutants named there (e.g. an earlier run's survivors)
  if [ -n "${MUTATION_NAMES:-}" ]; then mapfile -t names < <(grep -o "^ *[^ :]*" "$MUTATION_NAMES" | tr -d ' '); fi
  (cd "$work" && PYTHONPATH="$work" "$MUTMUT" run "${names[@]}" > "$work/run.log" 2>&1) || { echo "mutmut failed:" >&2; tail -5 "$work/run.log" >&2; }
  (cd "$work" && "$MUTMUT" results --all true 2>/dev/null || "$MUTMUT" results 2>/dev/null) > "$work/results.txt" || true
  killed=$(grep -c ": killed" "$work/results.txt" || true)
  suspicious=$(grep -c ": suspicious" "$work/results.txt" || true)
  survived=$(grep -c ": survived" "$work/results.txt" || true)
  other=$(grep -c -v -E ": (killed|survived)" "$work/results.txt" || true)
  total=$((killed + survived))
  score=$(awk -v k="$killed" -v t="$total" 'BEGIN { if (t > 0) printf "%.3f", k / t; else print "n/a" }')
  echo "   killed $killed, survived $survived, other $other (suspicious $suspicious), score $score, $(( $(date +%s) - t0 )) s"
  grep ": survived" "$work/results.txt" | sed 's/^/   SURVIVED /' || true
  if [ -n "$OUT" ]; then
    name=$(basename "$module" .py)
    cp "$work/results.txt" "$OUT/$name.results.txt"; cp "$work/run.log" "$OUT/$name.run.log"
    (cd "$work" && grep ": survived" results.txt | cut -d: -f1 | "$PY" "$REPO/bench/mutation_diffs.py") \
      > "$OUT/$name.survivors.diff" 2>/dev/null || true
    echo "$module killed=$killed survived=$survived other=$other suspicious=$suspicious score=$score seconds=$(( $(date +%s) - t0 ))" >> "$OUT/summary.txt"
  fi
  rm -rf "$work"
done
