"""MovieLens 100K, label rating >= 4: gender, age bucket, occupation private.

MovieLens may not be redistributed, so it is never shipped: name a folder with
the official files (u.data, u.user, u.item) or let TFDS download ml-100k.zip.

Launch:
  python scripts/train.py --config=configs/movielens_100k.py \
      --config.data.manual_dir=/path/to/ml-100k --workdir=/tmp/splitjax/ml100k
Smoke variant (seconds): --config=configs/movielens_100k.py:smoke
Combined variant: every sigma also with label DP at epsilon_label 1 and 3:
--config=configs/movielens_100k.py:combined
Sweep (results/movielens_100k/):
  python scripts/sweep.py --config=configs/movielens_100k.py \
      --config.data.manual_dir=/path/to/ml-100k --workdir=workdirs/ml100k

The server holds movie id, genres and release year. The user id is off the
server by default (it would explain the user's rating bias on its own and
leave the private demographics nothing to add); put it there with
  --config.data.server_features="('user_id','movie_id','release_year',...)".

Expected: ~1 min on a 2-core CPU; see the closing note of issue 2 for the
measured AUC and its gain over the server-features-only model.
"""

from splitjax import configlib
from splitjax.data import official


def get_config(arg=None):
  c = configlib.base_config()
  c.data.name = "movielens_100k"
  c.data.private_features = ("gender", "age_bucket", "occupation")
  c.data.server_features = ("movie_id", "release_year") + tuple(
      n for n in official.MOVIELENS.names if n.startswith("genre_"))
  c.train.num_epochs = 5
  configlib.main_sweep(c)  # scripts/sweep.py's grid (results/movielens_100k/)
  # Bayes's private features each from x_s alone, not the default chain: the
  # auxiliary sample is 8,000 ratings with only 163 distinct (gender, age,
  # occupation) combinations, and the chain's occupation link, given gender
  # and age, overfits them. At f13b8e4 the chain cost Bayes 0.8 to 2.8
  # points on occupation (0.221 -> 0.193 at sigma 4; its prior alone 0.194,
  # the majority value 0.222) for +0.7 on gender
  # (results/movielens_100k/README.md). With each head shrunk toward the aux
  # frequencies (78afd57) the chain alone still scores occupation 0.197 on
  # the targets against the majority value's 0.222 (prior_accuracy.md).
  c.attack.bayes.prior = "label_given_private"
  variants = configlib.variants(arg, ("smoke", "combined"))
  if "combined" in variants:
    configlib.combined(c)
    # 57 runs' server views (~271 MiB each, 15 GiB) exceed sweep.max_view_gb:
    # three batches of 19.
    c.sweep.max_group_size = 19
  if "smoke" in variants:
    configlib.smoke(c)
  return c
