#!/usr/bin/env bash
# Run a paper's small reproduction sweep and report on it (docs/reproductions.md discusses the results).
# Usage: scripts/reproduce.sh PAPER [OUTPUT_DIR]
#   PAPER: paper000 | paper001 | paper002 | paper003 | paper004 | all
#   OUTPUT_DIR: default outputs/reproductions; each paper writes OUTPUT_DIR/PAPER/{sweep*,report*}
# The full-scale presets are the same names without `_small` (configs/experiment/PAPER/), meant
# for a cluster: kdrun experiment=paper002/kappa_sweep hydra/launcher=slurm
set -euo pipefail
paper="${1:?usage: scripts/reproduce.sh paper000|paper001|paper002|paper003|paper004|all [OUTPUT_DIR]}"
root="${2:-outputs/reproductions}"
export KDRUN_OUTPUT_ROOT="${KDRUN_OUTPUT_ROOT:-$root}"   # the teacher store lives here too
quiet=(trainer.enable_progress_bar=false)

sweep() {  # sweep DIR OVERRIDES...: one kdrun multirun into DIR (skipped when DIR already holds results)
  local dir="$1"; shift
  if [[ -f "$dir/multirun.yaml" && -z "${FORCE:-}" ]]; then echo "== $dir exists (FORCE=1 reruns)"; return; fi
  echo "== kdrun $* -> $dir"
  kdrun "$@" "hydra.sweep.dir=$dir" "${quiet[@]}" > "$dir.log" 2>&1 || { echo "sweep failed, see $dir.log"; exit 1; }
}

case "$paper" in
  paper000)
    out="$root/paper000"; mkdir -p "$out"
    sweep "$out/sweep" experiment=paper000/late_switch_small
    kdrun-report "$out/sweep" --out "$out/report" --title "Paper 000: late switching (small)" \
      --compare schedule.at=0.0 --against schedule.at=1.0 --pair-by seed ;;
  paper001)
    out="$root/paper001"; mkdir -p "$out"
    sweep "$out/sweep_bayes" experiment=paper001/bayes_vs_onehot_small
    sweep "$out/sweep_distorted" experiment=paper001/distorted_teachers_small
    sweep "$out/sweep_teacher_mse" experiment=paper001/teacher_mse_small
    kdrun-report "$out/sweep_bayes" --out "$out/report_bayes" --title "Paper 001: Bayes distillation vs one-hot (small)" \
      --compare loss=soft_ce --against loss=ce --pair-by seed \
      --metrics 'student/test/auroc,student/test/acc,student/test/nll,student/test/mse_to_bayes'
    kdrun-report "$out/sweep_distorted" --out "$out/report_distorted" --title "Paper 001: miscalibrated teachers (small)" \
      --compare teacher.oracle_options.distortion=8 --against teacher.oracle_options.distortion=1 \
      --alternative less --pair-by seed --metrics 'student/test/auroc,student/test/acc,student/test/nll'
    kdrun-report "$out/sweep_teacher_mse" --out "$out/report_teacher_mse" --title "Paper 001: teacher MSE and student AUC (small)" \
      --correlate teacher/train/mse_to_bayes:student/test/auroc --metrics 'student/test/auroc,teacher/train/mse_to_bayes' ;;
  paper002)
    out="$root/paper002"; mkdir -p "$out"
    sweep "$out/sweep" experiment=paper002/kappa_sweep_small
    kdrun-report "$out/sweep" --out "$out/report" --title "Paper 002: KD vs label training over kappa (small)" \
      --compare loss=kl --against loss=ce --pair-by seed \
      --metrics 'student/test/acc,student/test/nll,student/test/agreement,student/train/agreement,student/test/cka'
    kdrun-report "$out/sweep" --out "$out/report_ls" --title "Paper 002: label smoothing vs label training (small)" \
      --compare loss=label_smoothing --against loss=ce --pair-by seed --metrics 'student/test/acc,student/test/nll' \
      --no-figures ;;
  paper003)
    out="$root/paper003"; mkdir -p "$out"
    sweep "$out/sweep_kd_rcd" experiment=paper003/controls_small
    sweep "$out/sweep_siddo" experiment=paper003/siddo_small
    metrics='student/test/agreement,student/test/activation_distance,student/test/js_divergence,student/test/rank_disagreement,student/test/prediction_disagreement,student/test/agreement_teacher_correct,student/test/agreement_teacher_incorrect,student/test/acc'
    kdrun-report "$out/sweep_kd_rcd" --out "$out/report_kd_vs_rcd" --title "Paper 003: KD vs RCD (small)" \
      --compare loss=kd --against loss=rcd --pair-by seed --metrics "$metrics"
    for alpha in 0.1 0.5 0.9; do
      kdrun-report "$out/sweep_kd_rcd" "$out/sweep_siddo" --out "$out/report_kd${alpha}_vs_siddo" --no-figures \
        --title "Paper 003: KD (alpha=$alpha) vs SIDDO (small)" \
        --compare loss=kd "loss.alpha=$alpha" --against loss=ce --pair-by seed --metrics "$metrics"
    done ;;
  paper004)
    out="$root/paper004"; mkdir -p "$out"
    if [[ ! -f "$out/search/ptloss_epsilon.json" ]]; then
      echo "== kdrun-ptloss-search -> $out/search"
      kdrun-ptloss-search experiment=paper004/ptloss_synthetic_small hydra.mode=RUN "hydra.run.dir=$out/search" \
        search.max_order=3 search.trials=50 "${quiet[@]}" > "$out/search.log" 2>&1
    fi
    sweep "$out/sweep_baselines" experiment=paper004/ptloss_synthetic_small
    sweep "$out/sweep_ptloss" experiment=paper004/ptloss_synthetic_small loss=ptloss \
      "loss.epsilon_file=$(cd "$out/search" && pwd)/ptloss_epsilon.json" 'hydra.sweeper.params={seed: "0,1,2"}'
    kdrun-report "$out/sweep_baselines" "$out/sweep_ptloss" --out "$out/report" \
      --title "Paper 004: PTLoss vs KL and baselines (small)" --compare loss=ptloss --against loss=kl --pair-by seed \
      --metrics 'student/test/acc,student/test/nll,student/test/ece,student/test/mse_to_bayes,student/val/acc' ;;
  all)
    for p in paper000 paper001 paper002 paper003 paper004; do "$0" "$p" "$root"; done ;;
  *)
    echo "unknown paper '$paper'; allowed: paper000 paper001 paper002 paper003 paper004 all" >&2; exit 2 ;;
esac
