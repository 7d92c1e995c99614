"""Several finished sweeps of one data set on one figure.

  python scripts/compare.py --workdirs=results/adult/clip_norm_grid/c0.1,results/adult/clip_norm_grid/c1.0 \
      [--names="C=0.1,C=1"] [--attack=bayes_exact] --out=FILE.png [--overwrite]

From each sweep's privacy_utility.json and config.json (no training): test
AUC against epsilon, the attack's accuracy against epsilon on every private
feature and the label, and the trade-off (test AUC against the attack's
accuracy on the label), one colour per sweep. Each sweep's series is its
cut-layer noise rows; its clip alone and undefended rows are points on the
trade-off panel. Sweeps that differ in one setting (the clip norm, the
tower) at the same sigmas share their epsilons, so their points line up.
An --out already there is refused unless --overwrite.
"""

import os

from absl import app, flags, logging

from splitjax import cli, report
from splitjax.errors import SplitjaxError

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Finished sweeps' folders, one data set.")
_NAMES = flags.DEFINE_list("names", None, "A name per workdir (default: folder names).")
_ATTACK = flags.DEFINE_string("attack", "bayes_exact", "The attack whose accuracy is drawn.")
_OUT = flags.DEFINE_string("out", None, "The figure to write (.png).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
flags.mark_flags_as_required(["workdirs", "out"])


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_jax()
  out = _OUT.value
  if not out.endswith(".png"):
    cli.fail(f"--out: {out} is not a .png file")
  if os.path.exists(out) and not _OVERWRITE.value:
    cli.fail(f"--out: {out} already exists; pass --overwrite to replace it, or "
             "write elsewhere")
  workdirs = _WORKDIRS.value
  names = _NAMES.value or [os.path.basename(os.path.normpath(w)) for w in workdirs]
  try:
    report.compare(workdirs, names, out, _ATTACK.value)
  except SplitjaxError as e:
    cli.fail(str(e))
  except OSError as e:
    cli.fail(f"--out: cannot write {out}: {e.strerror}")
  logging.info("drew %s", out)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
