"""The main job: a privacy-utility sweep, trained, attacked and accounted.

  python scripts/sweep.py --config=configs/adult.py --workdir=workdirs/adult_sweep
  python scripts/sweep.py --config=configs/adult.py:smoke --workdir=/tmp/smoke_sweep
  python scripts/sweep.py --config=configs/all_datasets.py --workdir=workdirs/all

Trains every setting x seed of `config.sweep` (one vmapped program per shape
group), runs `config.attack.names` after every epoch up to the attacked one,
accounts epsilon, audits each attack against its ceiling, and writes
privacy_utility.{csv,json,md} and PNG plots to --workdir (see
splitjax/sweep.py and splitjax/report.py). Rerun with the same config to
resume after an interruption; a workdir of another config is refused. A
config with `datasets` (configs/all_datasets.py) sweeps each data set into
<workdir>/<name>/ and writes <workdir>/summary.{csv,md}.
"""

from splitjax import cli, sweep

if __name__ == "__main__":
  cli.run_app(sweep.main)
