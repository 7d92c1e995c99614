"""Trains with view capture and runs the configured attacks.

  python scripts/attack.py --config=configs/adult.py --workdir=/tmp/adult_attack
  python scripts/attack.py --config=configs/adult.py:smoke --workdir=/tmp/smoke \
      --config.attack.names="('prior','server_model','exact')"

Writes config.json and attack_metrics.json to --workdir: per attack and
attacked epoch, per-feature and label accuracy, all-correct rate, advantage
over the prior, MAE in standard deviations for numerics, confusion matrices,
and the calibration of Bayesian EXACT's posterior.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from splitjax import evaluation
from splitjax.errors import SplitjaxError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:variant]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder for this run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    evaluation.run(_CONFIG.value, _WORKDIR.value)
  except SplitjaxError as e:
    print(f"splitjax: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
