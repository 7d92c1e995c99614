"""Trains a split model (and its server-features-only baseline).

  python scripts/train.py --config=configs/adult.py --workdir=/tmp/adult
  python scripts/train.py --config=configs/adult.py:smoke --workdir=/tmp/smoke \
      --config.train.num_epochs=2

Writes config.json and metrics.jsonl to --workdir.
"""

from splitjax import cli, training

if __name__ == "__main__":
  cli.run_app(training.run)
