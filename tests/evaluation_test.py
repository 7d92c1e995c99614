"""The attack job (scripts/attack.py): what it runs, scores and writes."""

import json

import pytest

from conftest import small_config
from splitjax import audit, evaluation


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


def test_bayes_numeric_prior_is_a_laplace_around_the_server_model(tmp_path):
  # Bayes's private numerics have a prior on their grid: 'uniform' none, the
  # other kinds a Laplace around the server model's regression of x_s, its
  # scale the held-out MAE. Under clipping (C 0.05) and noise (sigma 1) one
  # release says little about p_num_0; measured MAE (sd) on the targets: the
  # server model 0.611, Bayes with the chain prior 0.576, with 'uniform'
  # 0.814 (about the prior baseline's 0.807: the median of a near-flat
  # posterior). Tolerances: 0.01 sd below the server model, 0.1 below uniform.
  def run(prior, workdir):
    c = small_config(data__private_features=("p_cat_0", "p_num_0"),
                     data__synthetic__num_private_numeric=1,
                     data__synthetic__num_examples=1600,
                     attack__names=("prior", "server_model", "bayes_exact"),
                     attack__exact__numeric_grids=("p_num_0:-3:3:0.25",),
                     attack__bayes__prior=prior, defence__clip=True, defence__noise=True,
                     defence__clip_norm=0.05, defence__noise_multiplier=1.0,
                     train__num_epochs=1)
    out = evaluation.run(c, str(tmp_path / workdir))
    assert out["audit_violations"] == []
    got = json.loads((tmp_path / workdir / "attack_metrics.json").read_text())["epochs"]["1"]
    return {k: got[k]["features"]["p_num_0"]["mae_std"]
            for k in ("prior", "server_model", "bayes_exact")}

  chain, uniform = run("chain", "chain"), run("uniform", "uniform")
  assert chain["server_model"] == uniform["server_model"]
  assert chain["bayes_exact"] < chain["server_model"] - 0.01, chain
  assert uniform["bayes_exact"] > chain["bayes_exact"] + 0.1, (chain, uniform)


def test_an_attack_on_fewer_records_is_compared_and_audited_on_them(tmp_path,
                                                                    monkeypatch):
  # Under attack.exact.max_steps EXACT sees the first steps' records only.
  # Its advantage over the prior, the baselines it is read beside, and its
  # audit ceilings are all over those records, not over every target.
  spied = []
  real = audit.ceilings

  def spy(kappas, *args, **kw):
    out = real(kappas, *args, **kw)
    spied.append((len(next(iter(kappas.values()))), out))
    return out

  monkeypatch.setattr(audit, "ceilings", spy)
  c = small_config(attack__names=("prior", "server_model", "exact"),
                   attack__exact__max_steps=2, defence__clip=True,
                   defence__noise=True, defence__clip_norm=0.05,
                   defence__noise_multiplier=1.0, train__num_epochs=1)
  out = evaluation.run(c, str(tmp_path))
  assert out["audit_violations"] == []
  got = json.loads((tmp_path / "attack_metrics.json").read_text())["epochs"]["1"]
  ex, prior = got["exact"], got["prior"]
  assert ex["num_records"] <= 2 * c.train.batch_size < prior["num_records"], (
      ex["num_records"], prior["num_records"])
  same = ex["baselines_on_same_records"]
  assert {k: v["num_records"] for k, v in same.items()} == {
      "prior": ex["num_records"], "server_model": ex["num_records"]}
  for name, m in ex["features"].items():
    assert m["advantage_over_prior"] == pytest.approx(
        m["accuracy"] - same["prior"]["features"][name]["accuracy"])
  assert ex["label"]["advantage_over_prior"] == pytest.approx(
      ex["label"]["accuracy"] - same["prior"]["label"]["accuracy"])
  # One ceilings call per record set: every target, and EXACT's own.
  sizes = dict(spied)
  assert sorted(sizes) == sorted({ex["num_records"], prior["num_records"]}), sizes
  assert ex["ceilings"] == sizes[ex["num_records"]]
  assert got["ceilings"] == sizes[prior["num_records"]]
  assert ex["ceilings"] != got["ceilings"]  # kappa differs between the sets
  for name, m in [*ex["features"].items(), ("label", ex["label"])]:
    assert m["audit"]["ceiling"] == ex["ceilings"][name]
