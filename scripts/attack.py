"""Trains with view capture and runs the configured attacks.

  python scripts/attack.py --config=configs/adult.py --workdir=/tmp/adult_attack
  python scripts/attack.py --config=configs/adult.py:smoke --workdir=/tmp/smoke \
      --config.attack.names="('prior','server_model','exact')"

Writes config.json and attack_metrics.json to --workdir: per attack and
attacked epoch, per-feature and label accuracy, all-correct rate, advantage
over the prior, MAE in standard deviations for numerics, confusion matrices,
and the calibration of Bayesian EXACT's posterior.
"""

from splitjax import cli, evaluation

if __name__ == "__main__":
  cli.run_app(evaluation.run)
