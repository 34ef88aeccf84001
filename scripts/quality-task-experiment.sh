#!/usr/bin/env bash
# Issue 11, second runs: does a language adapter under the task adapter help on the embedded base? Task adapters
# with the language adapter of scripts/quality-experiment.sh stacked under them, against task-only ones trained
# with the same settings and seeds: the packaged default set's recipes (seq_bn, lr 1e-3, head lr 1e-2; NER: 1,000
# training sentences, 3 epochs, 128-token windows, IOB repaired; topic: SIB-200, 3 epochs, 64 tokens).
#
# Usage: PYTHON=/path/to/.venv/bin/python nice -n 19 env OMP_NUM_THREADS=1 bash scripts/quality-task-experiment.sh
# Env:   PYTHON, DATA, QUALITY (as quality-experiment.sh: the language adapters are read from $QUALITY/store),
#        LANGS (default "yor_Latn hau_Latn"), SEEDS (default "1 2"), KIND (language adapter kind, default seq_bn),
#        TASK (ner or topic, default ner).
#
# Resumable like quality-experiment.sh: a run whose directory holds run.json is skipped; an interrupted one
# resumes from its checkpoint. Nothing is published: every figure is in the run's run.json (test metrics and the
# majority baseline), gathered by `langadapt report $QUALITY/task-runs/*`.
# Budget: about 6 minutes a run on one core here (94 steps of 32 sentences, dev and test scoring): 8 runs, ~50 min.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data}
QUALITY=${QUALITY:-/work/quality}
LANGS=${LANGS:-"yor_Latn hau_Latn"}
SEEDS=${SEEDS:-"1 2"}
KIND=${KIND:-seq_bn}
TASK=${TASK:-ner}
RUNS=$QUALITY/task-runs

short_code() {  # MasakhaNER names Swahili by its macrolanguage folder
  case "$1" in swh_Latn) echo swa ;; *) echo "${1%_*}" ;; esac
}

failed=()
for lang in $LANGS; do
  case "$TASK" in
    ner)
      dir=$DATA/ner/masakhaner2/$(short_code "$lang") ext=txt
      recipe=(--epochs 3 --max-length 128 --max-train-examples 1000 --max-eval-examples 500 --repair-iob) ;;
    topic)
      dir=$DATA/topic/sib200/$lang ext=tsv
      recipe=(--epochs 3 --max-length 64) ;;
    *) echo "unknown TASK $TASK (ner, topic)" >&2; exit 2 ;;
  esac
  for seed in $SEEDS; do
    for arm in task-only "lang-$KIND"; do
      out=$RUNS/$lang-$TASK-$arm-s$seed
      if [ -f "$out/run.json" ]; then
        echo "== $lang $TASK $arm seed $seed: finished, skipped"
        continue
      fi
      extra=()
      if [ "$arm" != task-only ]; then
        extra=(--lang-adapter "$lang-mlm-$KIND")
      fi
      echo "== $lang $TASK $arm seed $seed ($(date -u +%FT%TZ))"
      started=$SECONDS
      if "$PYTHON" -m langadapt.cli train task --lang "$lang" --task "$TASK" --base embedded \
        --store "$QUALITY/store" --kind seq_bn --lr 1e-3 --head-lr 1e-2 --seed "$seed" --no-publish \
        --train "$dir/train.$ext" --dev "$dir/dev.$ext" --test "$dir/test.$ext" "${recipe[@]}" \
        --out "$out" "${extra[@]}"; then
        echo "== $lang $TASK $arm seed $seed: done in $((SECONDS - started)) s"
      else
        echo "== $lang $TASK $arm seed $seed: FAILED after $((SECONDS - started)) s"
        failed+=("$lang-$TASK-$arm-s$seed")
      fi
    done
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "== failed: ${failed[*]}"
  exit 1
fi
echo "== all task runs finished; report: $PYTHON -m langadapt.cli report $RUNS/* -o task-report.md"
