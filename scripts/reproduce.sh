#!/usr/bin/env bash
# Run a paper's small reproduction sweep and report on it (docs/reproductions.md discusses the results).
# Usage: scripts/reproduce.sh PAPER [OUTPUT_DIR]
#   PAPER: paper000 | paper001 | paper002 | paper003 | paper003_text | paper004 | paper000_text | paper004_text | all
#   OUTPUT_DIR: default outputs/reproductions; each paper writes OUTPUT_DIR/PAPER/{sweep*,report*}
# The full-scale presets are the same names without `_small` (configs/experiment/PAPER/), meant
# for a cluster: kdrun experiment=paper002/kappa_sweep hydra/launcher=slurm
set -euo pipefail
paper="${1:?usage: scripts/reproduce.sh paper000|paper001|paper002|paper003|paper003_text|paper004|paper000_text|paper004_text|all [OUTPUT_DIR]}"
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
    sweep "$out/sweep_converse" experiment=paper000/late_switch_small schedule.from=kd schedule.to=ce \
      'hydra.sweeper.params={schedule.at: "0.5", seed: "range(0,10)"}'
    # claim 5: the underfitting with twice the training, and with half the batch (twice the steps)
    sweep "$out/sweep_long" experiment=paper000/late_switch_small teacher.epochs=60 student.epochs=60 \
      'hydra.sweeper.params={schedule.at: "0.0,1.0"}'
    sweep "$out/sweep_small_batch" experiment=paper000/late_switch_small data.batch_size=32 \
      'hydra.sweeper.params={schedule.at: "0.0,1.0"}'
    kdrun-report "$out/sweep" --out "$out/report" --title "Paper 000: KD vs one-hot and late switching (small)" \
      --compare schedule.at=0.0 --against schedule.at=1.0 --pair-by seed --phi-color noise \
      --metrics 'student/test/acc,student/test/nll,student/test/agreement'
    # underfitting: KD's train accuracy and phi gaps below the one-hot student's (one-sided, less)
    kdrun-report "$out/sweep" --out "$out/report_underfit" --title "Paper 000: KD underfits (small)" \
      --compare schedule.at=0.0 --against schedule.at=1.0 --pair-by seed --alternative less --no-figures \
      --metrics 'student/train/acc,student/train/phi_gap_q1_minus_q4,student/test/phi_gap_q1_minus_q4,student/train/phi_gap_q1,student/test/phi_gap_q1,student/train/phi_gap_noisy,student/test/phi_gap_true_q1_minus_q4'
    for arm in long small_batch; do
      kdrun-report "$out/sweep_$arm" --out "$out/report_underfit_$arm" --title "Paper 000: KD underfits, $arm (small)" \
        --compare schedule.at=0.0 --against schedule.at=1.0 --pair-by seed --alternative less --no-figures \
        --metrics 'student/train/phi_gap_q1_minus_q4,student/test/phi_gap_q1_minus_q4,student/train/phi_gap_q1'
    done
    for at in 0.25 0.5 0.75; do
      kdrun-report "$out/sweep" --out "$out/report_switch_$at" --title "Paper 000: one-hot until $at, then KD (small)" \
        --compare "schedule.at=$at" --against schedule.at=1.0 --pair-by seed --no-figures \
        --metrics 'student/test/acc,student/test/nll'
    done
    kdrun-report "$out/sweep" "$out/sweep_converse" --out "$out/report_converse" --no-figures \
      --title "Paper 000: KD until 0.5, then one-hot, against KD throughout (small)" \
      --compare schedule.from=kd --against schedule.from=ce schedule.at=0.0 --pair-by seed --alternative less \
      --metrics 'student/test/acc,student/test/nll' ;;
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
    sweep "$out/sweep_temperature" experiment=paper002/temperature_small
    sweep "$out/sweep_temperature_low" experiment=paper002/temperature_small 'hydra.sweeper.params={loss.temperature: "0.1"}'
    # hard teacher labels: the teacher fits its N samples, so for kappa <= 1 its argmax is the label
    sweep "$out/sweep_hard" experiment=paper002/kappa_sweep_small loss=kd_hard \
      'hydra.sweeper.params={data.kappa: "0.05,0.1", seed: "range(0,10)"}'
    # claim 12: kappa* against the student's size (CNN students of width 0.25, 0.5, 1; the teacher is width 1)
    sweep "$out/sweep_student_size" experiment=paper002/student_size_small
    kdrun-report "$out/sweep_student_size" --out "$out/report_student_size" \
      --title "Paper 002: KD vs label training over kappa, by student width (small)" \
      --compare loss=kl --against loss=ce --pair-by seed --metrics 'student/test/acc,student/test/nll'
    kdrun-report "$out/sweep" --out "$out/report" --title "Paper 002: KD vs label training over kappa (small)" \
      --compare loss=kl --against loss=ce --pair-by seed \
      --metrics 'student/test/acc,student/test/nll,student/test/agreement,student/train/agreement,student/test/cka' \
      --correlate student/test/agreement:student/test/acc student/test/cka:student/test/acc
    kdrun-report "$out/sweep" --out "$out/report_ls" --title "Paper 002: label smoothing vs label training (small)" \
      --compare loss=label_smoothing --against loss=ce --pair-by seed --metrics 'student/test/acc,student/test/nll' \
      --no-figures
    kdrun-report "$out/sweep" --out "$out/report_kd_vs_ls" --title "Paper 002: KD vs label smoothing (small)" \
      --compare loss=kl --against loss=label_smoothing --pair-by seed --metrics 'student/test/acc,student/test/nll' \
      --no-figures
    kdrun-report "$out/sweep_temperature" --out "$out/report_temperature" --title "Paper 002: temperature 20 vs 1 (small)" \
      --compare loss.temperature=20 --against loss.temperature=1 --pair-by seed \
      --metrics 'student/test/acc,student/test/nll,student/test/agreement,student/train/agreement'
    kdrun-report "$out/sweep_temperature" --out "$out/report_temperature_4" --title "Paper 002: temperature 4 vs 1 (small)" \
      --compare loss.temperature=4 --against loss.temperature=1 --pair-by seed \
      --metrics 'student/test/acc,student/test/nll' --no-figures
    kdrun-report "$out/sweep_temperature" "$out/sweep_temperature_low" --out "$out/report_temperature_low" --no-figures \
      --title "Paper 002: temperature 0.1 vs 1 (small)" --compare loss.temperature=0.1 --against loss.temperature=1 \
      --pair-by seed --alternative less --metrics 'student/test/acc,student/test/nll'
    kdrun-report "$out/sweep" "$out/sweep_hard" --out "$out/report_hard" --no-figures \
      --title "Paper 002: hard teacher labels vs label training (small)" \
      --compare loss=kd_hard --against loss=ce --pair-by seed --alternative two-sided \
      --metrics 'student/test/acc,student/test/nll' ;;
  paper003)
    out="$root/paper003"; mkdir -p "$out"
    # two teachers: memorised (clean digits, train NLL ~0.001) and with a non-trivial training loss
    # (25% flipped labels, stopped before it memorises them): the paper's moderator
    sweep "$out/sweep_kd_rcd" experiment=paper003/controls_small
    sweep "$out/sweep_siddo" experiment=paper003/siddo_small
    sweep "$out/sweep_moderator_kd_rcd" experiment=paper003/moderator_small
    sweep "$out/sweep_moderator_siddo" experiment=paper003/moderator_siddo_small
    sweep "$out/sweep_width" experiment=paper003/width_small
    # temperature (claim 6): KD at T = 4 against the same SIDDO students and against KD at T = 1
    sweep "$out/sweep_moderator_t4" experiment=paper003/moderator_small loss=kd \
      'hydra.sweeper.params={loss.temperature: "4.0", loss.alpha: "0.5,0.9"}'
    metrics='student/test/agreement,student/test/activation_distance,student/test/js_divergence,student/test/rank_disagreement,student/test/agreement_teacher_correct,student/test/agreement_teacher_incorrect,student/test/agreement_incorrect_minus_correct,student/test/acc'
    for regime in "" moderator_; do
      name="${regime:-memorised_}"; name="${name%_}"
      kdrun-report "$out/sweep_${regime}kd_rcd" --out "$out/report_${name}_kd_vs_rcd" \
        --title "Paper 003: KD vs RCD, $name teacher (small)" \
        --compare loss=kd --against loss=rcd --pair-by seed --metrics "$metrics"
      for alpha in 0.1 0.5 0.9; do
        figures=(--no-figures); [[ $alpha == 0.9 ]] && figures=()  # one set: every condition's delta vs SIDDO
        kdrun-report "$out/sweep_${regime}kd_rcd" "$out/sweep_${regime}siddo" --out "$out/report_${name}_kd${alpha}_vs_siddo" \
          "${figures[@]}" --title "Paper 003: KD (alpha=$alpha) vs SIDDO, $name teacher (small)" \
          --compare loss=kd "loss.alpha=$alpha" --against loss=ce --pair-by seed --metrics "$metrics"
      done
    done
    for alpha in 0.5 0.9; do
      kdrun-report "$out/sweep_moderator_t4" "$out/sweep_moderator_siddo" --out "$out/report_moderator_kd${alpha}_t4_vs_siddo" \
        --no-figures --title "Paper 003: KD (alpha=$alpha, T=4) vs SIDDO, moderator teacher (small)" \
        --compare loss=kd "loss.alpha=$alpha" --against loss=ce --pair-by seed --metrics "$metrics"
      kdrun-report "$out/sweep_moderator_t4" "$out/sweep_moderator_kd_rcd" --out "$out/report_moderator_kd${alpha}_t4_vs_t1" \
        --no-figures --title "Paper 003: KD (alpha=$alpha) at T=4 vs T=1, moderator teacher (small)" \
        --compare loss.temperature=4.0 "loss.alpha=$alpha" --against loss.temperature=1.0 "loss.alpha=$alpha" loss=kd \
        --pair-by seed --alternative less --metrics 'student/test/acc,student/test/agreement_teacher_correct,student/test/agreement_teacher_incorrect'
    done
    kdrun-report "$out/sweep_width" --out "$out/report_width" --title "Paper 003: KD vs label training by student width (small)" \
      --compare loss=kd --against loss=ce --pair-by seed \
      --metrics 'student/test/agreement_teacher_correct,student/test/agreement_teacher_incorrect,student/test/agreement_incorrect_minus_correct,student/test/acc' ;;
  paper003_text)
    # paper 003's adversarial "the" -> "tha" teacher, on the embedded corpus with micro-GPTs
    out="$root/paper003_text"; mkdir -p "$out"
    sweep "$out/sweep_kd_rcd" experiment=paper003/tinyshakespeare_adversarial_small
    sweep "$out/sweep_siddo" experiment=paper003/tinyshakespeare_adversarial_siddo_small
    probe='student/test/probe_adversarial_rate,student/test/probe_adversarial_prob,student/test/probe_expected_rate,student/test/acc,student/test/agreement'
    kdrun-report "$out/sweep_kd_rcd" "$out/sweep_siddo" --out "$out/report" \
      --title "Paper 003: adversarial transfer, KD vs RCD (small, text)" --compare loss=kd --against loss=rcd \
      --pair-by seed --metrics "$probe"
    for alpha in 0.1 0.5 0.9; do
      kdrun-report "$out/sweep_kd_rcd" "$out/sweep_siddo" --out "$out/report_kd${alpha}_vs_siddo" --no-figures \
        --title "Paper 003: adversarial transfer, KD (alpha=$alpha) vs SIDDO (small, text)" \
        --compare loss=kd "loss.alpha=$alpha" --against loss=ce --pair-by seed --metrics "$probe"
      kdrun-report "$out/sweep_kd_rcd" "$out/sweep_siddo" --out "$out/report_rcd${alpha}_vs_siddo" --no-figures \
        --title "Paper 003: RCD (alpha=$alpha) vs SIDDO (small, text)" --alternative two-sided \
        --compare loss=rcd "loss.alpha=$alpha" --against loss=ce --pair-by seed --metrics "$probe"
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
      "loss.epsilon_file=$(cd "$out/search" && pwd)/ptloss_epsilon.json" 'hydra.sweeper.params={seed: "range(0,10)"}'
    sweep "$out/sweep_teacher_quality" experiment=paper004/teacher_quality_small
    # searched against random coefficients (Fig. 4b): the searched epsilon joins the preset's five random ones
    searched=$(python -c "import json, sys; e = json.load(open(sys.argv[1]))['epsilon']; print('[' + ','.join(map(repr, e)) + ']')" \
      "$out/search/ptloss_epsilon.json")
    random_epsilon=("[6.007,1.968]" "[-0.549,-0.818]" "[7.946,9.04]" "[5.673,7.024]" "[4.98,9.286]")
    sweep "$out/sweep_random_epsilon" experiment=paper004/random_epsilon_small \
      "hydra.sweeper.params={loss.epsilon: \"$searched,$(IFS=,; echo "${random_epsilon[*]}")\"}"
    # the same at orders M = 1 and 3 (Fig. 4b: does the searched-random gap widen with M?): the search's
    # best candidate of that order against five epsilon drawn as the preset's (default_rng(0), U[-1, 10]^M)
    declare -A random_by_order=(
      [1]="[6.007] [1.968] [-0.549] [-0.818] [7.946]"
      [3]="[6.007,1.968,-0.549] [-0.818,7.946,9.04] [5.673,7.024,4.98] [9.286,7.974,-0.97] [8.431,-0.631,7.026]")
    for order in 1 3; do
      best_of_order=$(python -c "import csv, json, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r['order'] == sys.argv[2] and r['converged'] == 'True']
print('[' + ','.join(map(repr, json.loads(min(rows, key=lambda r: float(r['score']))['epsilon']))) + ']')" \
        "$out/search/candidates.csv" "$order")
      read -r -a drawn <<< "${random_by_order[$order]}"
      sweep "$out/sweep_random_epsilon_m$order" experiment=paper004/random_epsilon_small \
        "hydra.sweeper.params={loss.epsilon: \"$best_of_order,$(IFS=,; echo "${drawn[*]}")\"}"
      for index in "${!drawn[@]}"; do
        kdrun-report "$out/sweep_random_epsilon_m$order" --out "$out/report_m${order}_searched_vs_random_$index" \
          --no-figures --title "Paper 004: searched epsilon (M = $order) vs random ${drawn[$index]} (small)" \
          --compare "loss.epsilon=$best_of_order" --against "loss.epsilon=${drawn[$index]}" --pair-by seed \
          --metrics 'student/test/acc,student/test/nll,student/test/mse_to_bayes'
      done
    done
    # the same with an overfit, overconfident teacher (50 epochs): its own search, then KL against PTLoss
    if [[ ! -f "$out/search_overfit/ptloss_epsilon.json" ]]; then
      echo "== kdrun-ptloss-search -> $out/search_overfit"
      kdrun-ptloss-search experiment=paper004/ptloss_synthetic_small teacher.epochs=50 hydra.mode=RUN \
        "hydra.run.dir=$out/search_overfit" search.max_order=3 search.trials=50 "${quiet[@]}" > "$out/search_overfit.log" 2>&1
    fi
    sweep "$out/sweep_overfit" experiment=paper004/ptloss_synthetic_small teacher.epochs=50 \
      "+loss_options.ptloss.epsilon_file=$(cd "$out/search_overfit" && pwd)/ptloss_epsilon.json" \
      'hydra.sweeper.params={loss: "kl,ptloss"}'
    kdrun-report "$out/sweep_baselines" "$out/sweep_ptloss" --out "$out/report" \
      --title "Paper 004: PTLoss vs KL and baselines (small)" --compare loss=ptloss --against loss=kl --pair-by seed \
      --metrics 'student/test/acc,student/test/nll,student/test/ece,student/test/mse_to_bayes,student/val/acc'
    for baseline in temperature_scaling label_smoothed_teacher focal_kd; do
      kdrun-report "$out/sweep_baselines" "$out/sweep_ptloss" --out "$out/report_vs_$baseline" --no-figures \
        --title "Paper 004: PTLoss vs $baseline (small)" --compare loss=ptloss --against "loss=$baseline" --pair-by seed \
        --metrics 'student/test/acc,student/test/nll,student/test/mse_to_bayes'
    done
    kdrun-report "$out/sweep_overfit" --out "$out/report_overfit" --no-figures \
      --title "Paper 004: PTLoss vs KL, overfit teacher (small)" --compare loss=ptloss --against loss=kl --pair-by seed \
      --metrics 'student/test/acc,student/test/nll,student/test/mse_to_bayes'
    for index in "${!random_epsilon[@]}"; do
      kdrun-report "$out/sweep_random_epsilon" --out "$out/report_searched_vs_random_$index" --no-figures \
        --title "Paper 004: searched epsilon vs random ${random_epsilon[$index]} (small)" \
        --compare "loss.epsilon=$searched" --against "loss.epsilon=${random_epsilon[$index]}" --pair-by seed \
        --metrics 'student/test/acc,student/test/nll,student/test/mse_to_bayes'
    done
    kdrun-report "$out/sweep_teacher_quality" --out "$out/report_teacher_quality" \
      --title "Paper 004: teacher distance to p* and student accuracy (small)" \
      --metrics 'teacher/test/mse_to_bayes,teacher/test/acc,student/test/acc,student/test/mse_to_bayes' \
      --correlate teacher/test/mse_to_bayes:student/test/acc teacher/test/acc:student/test/acc ;;
  paper000_text)
    # paper 000's text setting (IMDB's Small -> Small, T = 16) with tiny random-weight RoBERTas on the embedded
    # sentiment task (on the embedded entailment task tiny RoBERTas learn only one cue: docs/reproductions.md)
    out="$root/paper000_text"; mkdir -p "$out"
    sweep "$out/sweep" experiment=paper000/text_imdb_small
    kdrun-report "$out/sweep" --out "$out/report" --title "Paper 000: KD vs one-hot and late switching (small, text)" \
      --compare schedule.at=0.0 --against schedule.at=1.0 --pair-by seed \
      --metrics 'student/test/acc,student/test/nll,student/train/acc,student/test/agreement' ;;
  paper004_text)
    # paper 004's T5 -> BERT setting with tiny random-weight models on the embedded tasks (labels withheld)
    out="$root/paper004_text"; mkdir -p "$out"
    for spec in sst2:experiment=paper004/nlp_sst2_small mnli:experiment=paper004/nlp_mnli_small; do
      task="${spec%%:*}" preset="${spec#*:}"
      if [[ ! -f "$out/search_$task/ptloss_epsilon.json" ]]; then
        echo "== kdrun-ptloss-search -> $out/search_$task"
        kdrun-ptloss-search "$preset" hydra.mode=RUN "hydra.run.dir=$out/search_$task" \
          search.max_order=5 > "$out/search_$task.log" 2>&1 || { echo "search failed, see $out/search_$task.log"; exit 1; }
      fi
      sweep "$out/sweep_baselines_$task" "$preset"
      sweep "$out/sweep_ptloss_$task" "$preset" loss=ptloss \
        "loss.epsilon_file=$(cd "$out/search_$task" && pwd)/ptloss_epsilon.json" 'hydra.sweeper.params={seed: "0,1,2"}'
      kdrun-report "$out/sweep_baselines_$task" "$out/sweep_ptloss_$task" --out "$out/report_$task" \
        --title "Paper 004: PTLoss vs KL and baselines, $task (small, text)" --compare loss=ptloss --against loss=kl \
        --pair-by seed --metrics 'student/test/acc,student/test/nll,student/test/ece,student/val/acc'
    done ;;
  all)
    for p in paper000 paper001 paper002 paper003 paper003_text paper004 paper000_text paper004_text; do "$0" "$p" "$root"; done ;;
  *)
    echo "unknown paper '$paper'; allowed: paper000 paper001 paper002 paper003 paper003_text paper004 paper000_text paper004_text all" >&2; exit 2 ;;
esac
