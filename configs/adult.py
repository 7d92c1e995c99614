"""Adult (UCI), default split: sex, race, relationship, marital-status private.

Launch (runs offline on the shipped copy):
  python scripts/train.py --config=configs/adult.py --workdir=/tmp/splitjax/adult
Smoke variant (seconds): --config=configs/adult.py:smoke

Expected: ~1 min on a 2-core CPU; test AUC ~0.91 after 5 epochs, ~+0.05 over the
server-features-only model (measured 0.9115 vs 0.8583 at commit 049fe72).
"""

from splitjax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.data.name = "adult"
  c.data.private_features = ("marital-status", "relationship", "race", "sex")
  c.train.num_epochs = 5
  if arg == "smoke":
    c.data.max_train_examples = 2048
    c.data.max_test_examples = 1024
    c.model.server_hidden = (32,)
    c.model.cut_dim = 16
    c.model.device_hidden = (16,)
    c.train.num_epochs = 2
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; known: smoke")
  return c
