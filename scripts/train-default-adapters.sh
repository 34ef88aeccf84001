#!/usr/bin/env bash
# Retrain the default adapter set shipped in src/langadapt/default_adapters (15 task adapters on the embedded base,
# and the language-ID head for lang "auto").
# Usage: scripts/train-default-adapters.sh [task ...]   (tasks: topic sentiment ner lid; default: all four)
# Env: DATA (default ../shared/data), STORE (default src/langadapt/default_adapters), RUNS (default runs/default-adapters),
#      LANGS (default "hau_Latn yor_Latn swh_Latn ibo_Latn kin_Latn"), LANGADAPT (default .venv/bin/langadapt).
# Every adapter publishes atomically, so an interrupted run loses at most the adapter in progress; rerunning a
# language/task pair whose run directory holds a checkpoint resumes it.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data}
STORE=${STORE:-src/langadapt/default_adapters}
RUNS=${RUNS:-runs/default-adapters}
LANGS=${LANGS:-"hau_Latn yor_Latn swh_Latn ibo_Latn kin_Latn"}
LANGADAPT=${LANGADAPT:-.venv/bin/langadapt}
TASKS=("$@")
[ ${#TASKS[@]} -eq 0 ] && TASKS=(topic sentiment ner lid)

# The settings every default adapter shares: the paper's seq_bn task adapter and batch 32, but a higher learning rate
# (1e-4 does not leave the majority class on e5-small within these budgets). Topic and NER (retrained for issue 11)
# use reduction factor RF (default 4: a 96-unit bottleneck on this 384-wide base, chosen on dev by
# scripts/default-set-choices.sh rf over 16, the paper's, and 8, which gives the paper's 48 units); sentiment, not
# retrained since, keeps the paper's 16 so that this script still reproduces the shipped adapters.
# See docs/default-adapters.md.
RF=${RF:-4}
COMMON=(--base embedded --store "$STORE" --kind seq_bn --lr 1e-3 --head-lr 1e-2 --seed 42 --fp16-weights --publish)

short_code() {  # AfriSenti and MasakhaNER name Swahili by its macrolanguage folder
  case "$1" in swh_Latn) echo swa ;; *) echo "${1%_*}" ;; esac
}

train() {  # lang task data-dir extension [extra flags...]
  local lang=$1 task=$2 dir=$3 ext=$4
  shift 4
  echo "== $lang $task ($(date -u +%H:%M:%S))"
  "$LANGADAPT" train task --lang "$lang" --task "$task" "${COMMON[@]}" \
    --train "$dir/train.$ext" --dev "$dir/dev.$ext" --test "$dir/test.$ext" \
    --out "$RUNS/$lang-$task" "$@"
}

for task in "${TASKS[@]}"; do
  [ "$task" = lid ] && continue
  for lang in $LANGS; do
    code=$(short_code "$lang")
    case "$task" in
      topic)  # the whole split (701 sentences), 128 tokens (64 cut 379 of 701 Yoruba sentences), up to 10 epochs
        train "$lang" topic "$DATA/topic/sib200/$lang" tsv --reduction-factor "$RF" --epochs 10 --patience 3 \
          --max-length 128 ;;
      sentiment)  # Swahili has 1,811 training tweets (the others 3,200 after the cap): 6 epochs instead of 2
        epochs=2; [ "$lang" = swh_Latn ] && epochs=6
        train "$lang" sentiment "$DATA/sentiment/afrisenti/$code" tsv --epochs "$epochs" --max-length 64 \
          --max-train-examples 3200 --max-eval-examples 500 --max-test-examples 2000 ;;
      ner)  # every training sentence (5,716-7,825); a seeded 500 of dev choose the checkpoint. Kinyarwanda, the
        # largest split, got 2 epochs (489 steps, as many as Hausa's 3) to fit the CPU time of the retraining.
        epochs=3; [ "$lang" = kin_Latn ] && epochs=2
        train "$lang" ner "$DATA/ner/masakhaner2/$code" txt --reduction-factor "$RF" --epochs "$epochs" \
          --max-length 128 --max-eval-examples 500 --repair-iob ;;
      *) echo "unknown task $task (topic, sentiment, ner, lid)" >&2; exit 2 ;;
    esac
  done
done

# The language-identification head (lang "auto"): a softmax over mean sub-word embeddings, from SIB-200's 36 languages.
if [[ " ${TASKS[*]} " == *" lid "* ]]; then
  echo "== language ID ($(date -u +%H:%M:%S))"
  "$LANGADAPT" train lid --data "$DATA/topic/sib200" --base embedded --store "$STORE"
fi
