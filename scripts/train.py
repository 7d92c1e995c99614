"""Trains a split model (and its server-features-only baseline).

  python scripts/train.py --config=configs/adult.py --workdir=/tmp/adult
  python scripts/train.py --config=configs/adult.py:smoke --workdir=/tmp/smoke \
      --config.train.num_epochs=2

Writes config.json and metrics.jsonl to --workdir.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from splitjax import training
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
    training.run(_CONFIG.value, _WORKDIR.value)
  except SplitjaxError as e:
    print(f"splitjax: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
