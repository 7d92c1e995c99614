"""How well each of Bayesian EXACT's priors guesses the targets on its own.

  python scripts/prior_accuracy.py --config=configs/adult.py --workdir=workdirs/adult_priors

No training and no release: the limit sigma -> inf of Bayesian EXACT, for
every attack.bayes.prior but 'uniform', beside the 'prior' and
'server_model' baselines. Writes prior_accuracy.json and .md (and
config.json) to --workdir and prints the table: per private categorical,
the label and the all-correct rate, on the attack's target records, and per
private numeric the MAE of each prior's median on its
attack.exact.numeric_grids grid and the rate within half a unit of its
fullest half-unit window. A workdir that already holds a result is
refused.
"""

from splitjax import cli, evaluation

if __name__ == "__main__":
  cli.run_app(evaluation.prior_accuracy)
