"""The attack job (scripts/attack.py): what it runs, scores and writes."""

import json

from conftest import small_config
from splitjax import evaluation


def test_attack_job_runs_the_optimiser_on_numeric_private_features(tmp_path):
  # The optimiser's own quality is tested in attacks_test; this is its wiring
  # into the job: its mechanism, records, restarts and scores. Undefended, it
  # recovers the numeric feature far better than the prior's mean (whose MAE
  # is about 0.8 sd for a normal feature), and the categorical and the label.
  c = small_config(data__private_features=("p_cat_0", "p_num_0"),
                   data__synthetic__num_private_numeric=1,
                   data__synthetic__num_examples=1600,
                   attack__names=("prior", "gradmatch"))
  g = c.attack.gradmatch
  g.num_restarts, g.num_steps, g.max_records = 8, 200, 128
  out = evaluation.run(c, str(tmp_path))
  written = json.loads((tmp_path / "attack_metrics.json").read_text())
  assert written["epochs"].keys() == {"2"}
  got = written["epochs"]["2"]
  assert got["gradmatch"]["seconds"] > 0
  prior, found = got["prior"]["features"], got["gradmatch"]["features"]
  assert prior["p_num_0"]["mae_std"] > 0.5, prior["p_num_0"]
  assert found["p_num_0"]["mae_std"] < 0.25, found["p_num_0"]
  assert found["p_cat_0"]["accuracy"] > 0.9 and got["gradmatch"]["label"]["accuracy"] > 0.9
  assert out["audit_violations"] == []
