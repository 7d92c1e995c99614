"""Every data set in one sweep: Adult, Bank Marketing and MovieLens-100k.

  python scripts/sweep.py --config=configs/all_datasets.py --workdir=workdirs/all
  python scripts/sweep.py --config=configs/all_datasets.py:adult,bank_marketing,smoke \\
      --workdir=/tmp/all_smoke

Each data set runs its own config (configs/<name>.py, with the variants given
after the names, e.g. smoke) as its own sweep, in <workdir>/<name>/: its
settings differ in shape from the other data sets', so each is its own shape
group. <workdir>/summary.{csv,md} then lists every data set's rows. Override
one data set's field with e.g. --config.datasets.adult.sweep.seeds='(0,)'.
MovieLens-100k is never shipped: it needs ../shared/data (see the README).

Expected on a 2-core CPU: about the sum of the three sweeps, ~4 min (Adult)
+ the Bank and MovieLens times in results/<name>/README.md.
"""

import importlib.util
import os

import ml_collections

NAMES = ("adult", "bank_marketing", "movielens_100k")


def _load(name: str, variant: str | None):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
  spec = importlib.util.spec_from_file_location(f"splitjax_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def get_config(arg=None):
  tokens = [t for t in (arg or "").split(",") if t]
  names = [t for t in tokens if t in NAMES] or list(NAMES)
  variant = ",".join(t for t in tokens if t not in NAMES) or None
  c = ml_collections.ConfigDict()
  try:
    c.datasets = ml_collections.ConfigDict({n: _load(n, variant) for n in names})
  except ValueError as e:  # A token that is neither a data set nor a variant.
    raise ValueError(f"{e}; data sets: {', '.join(NAMES)}") from None
  return c
