#!/usr/bin/env bash
# Issue 11, part 3: the dev-set comparisons behind the retrained default set's settings (docs/default-adapters.md).
# Each comparison is one setting varied with everything else fixed; figures are the runs' validation (dev)
# metrics in run.json; test figures are recorded too but not used to choose.
#   rf:  seq_bn reduction factor 16 (the paper's, 24 units on this 384-wide base) vs 8 vs 4, on Hausa NER at the old
#        default recipe (1,000 sentences, 3 epochs, 128-token windows); rf 16 is $QUALITY/task-runs/*-task-only-s*.
#
# Usage: PYTHON=/path/to/.venv/bin/python nice -n 19 env OMP_NUM_THREADS=1 bash scripts/default-set-choices.sh [rf]
# Env:   PYTHON, DATA, QUALITY (as quality-task-experiment.sh), SEEDS (default "1").
# Resumable: a run whose directory holds run.json is skipped; an interrupted one resumes from its checkpoint.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data}
QUALITY=${QUALITY:-/work/quality}
SEEDS=${SEEDS:-1}
RUNS=$QUALITY/choice-runs
CHOICES=("$@")
[ ${#CHOICES[@]} -eq 0 ] && CHOICES=(rf)

run() {  # name, then train-task flags
  local name=$1 out=$RUNS/$1
  shift
  if [ -f "$out/run.json" ]; then echo "== $name: finished, skipped"; return 0; fi
  echo "== $name ($(date -u +%FT%TZ))"
  local started=$SECONDS
  "$PYTHON" -m langadapt.cli train task --base embedded --store "$QUALITY/store" --kind seq_bn --lr 1e-3 \
    --head-lr 1e-2 --no-publish --out "$out" "$@" || { echo "== $name: FAILED"; return 1; }
  echo "== $name: done in $((SECONDS - started)) s"
}

for choice in "${CHOICES[@]}"; do
  case "$choice" in
    rf)
      ner=$DATA/ner/masakhaner2/hau
      for seed in $SEEDS; do
        for rf in 8 4; do
          run "hau_Latn-ner-rf$rf-s$seed" --lang hau_Latn --task ner --seed "$seed" --reduction-factor "$rf" \
            --train "$ner/train.txt" --dev "$ner/dev.txt" --test "$ner/test.txt" --epochs 3 --max-length 128 \
            --max-train-examples 1000 --max-eval-examples 500 --repair-iob
        done
      done ;;
    *) echo "unknown choice $choice (rf)" >&2; exit 2 ;;
  esac
done
