"""Your own CSV file: every column's role declared on the command line.

The file's header row names its columns; each must be declared categorical,
numeric, the label or ignored (`splitjax/data/user_csv.py`). Categorical
vocabularies are the sorted distinct values in the file; the test split is a
fixed random `data.csv.test_fraction` of the rows (`data.csv.split_seed`).

Launch (the committed results' grid on your file; :smoke for a seconds-long
check of the declarations first):
  python scripts/sweep.py --config=configs/user_csv.py --workdir=workdirs/mine \
      --config.data.csv.path=mine.csv \
      --config.data.csv.categorical="('city','gender')" \
      --config.data.csv.numeric="('age','income')" \
      --config.data.csv.label=bought \
      --config.data.private_features="('gender',)"
Expected: 35 s on the 2-core CPU for a 3,000-row file of four features (one
private) and a binary label: 27 runs x 3 epochs, then EXACT, Bayesian EXACT,
the baselines and the label-only attacks; Adult's 32,561 rows take about 3
min (configs/adult.py). Without noise, EXACT recovers every private value and
label of the attacked records.

Other fields: --config.data.csv.delimiter=';',
--config.data.csv.ignore="('id',)". EXACT needs a grid for each numeric
private feature: --config.attack.exact.numeric_grids="('age:17:90:1',)"
(see configs/adult.py).
"""

from splitjax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.data.name = "csv"
  c.train.num_epochs = 3
  configlib.main_sweep(c)
  if arg == "smoke":
    configlib.smoke(c)
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; known: smoke")
  return c
