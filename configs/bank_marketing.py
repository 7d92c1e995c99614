"""Bank Marketing (UCI bank-full.csv): marital, education, default, housing, loan private.

Launch (runs offline on the shipped copy):
  python scripts/train.py --config=configs/bank_marketing.py --workdir=/tmp/splitjax/bank
Smoke variant (seconds): --config=configs/bank_marketing.py:smoke
Combined variant: every sigma also with label DP at epsilon_label 1 and 3
(results/bank_marketing/combined/): --config=configs/bank_marketing.py:combined
Sweep (results/bank_marketing/):
  python scripts/sweep.py --config=configs/bank_marketing.py --workdir=workdirs/bank

Expected: ~1 min on a 2-core CPU; test AUC ~0.92 after 3 epochs. The call
`duration` is a server (contact) feature and carries most of the signal, so the
private features add little (~+0.004 AUC).
"""

from splitjax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.data.name = "bank_marketing"
  c.data.private_features = ("marital", "education", "default", "housing", "loan")
  c.train.num_epochs = 3
  configlib.main_sweep(c)  # scripts/sweep.py's grid (results/bank_marketing/)
  variants = configlib.variants(arg, ("smoke", "combined"))
  if "combined" in variants:
    configlib.combined(c)
  if "smoke" in variants:
    configlib.smoke(c)
  return c
