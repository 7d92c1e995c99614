"""Draws a finished sweep's plots again, without training.

  python scripts/plot.py --workdir=workdirs/adult [--out=DIR] [--overwrite]

Reads the sweep's privacy_utility.json and config.json and draws
auc_vs_epsilon.png and attack_vs_epsilon.png, and accuracy_over_epochs.png
when the runs' records are there (batches/, which results/ folders leave out),
in --out (default: the workdir). For plots drawn by newer plotting code, or a
sweep run with --config.sweep.plots=False. The tables are read, never written.
Plots already in --out are refused unless --overwrite.
"""

import os

from absl import app, flags, logging

from splitjax import cli, report, sweep
from splitjax.errors import SplitjaxError

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished sweep's folder.")
_OUT = flags.DEFINE_string("out", None, "Folder for the plots (default: --workdir).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace plots already in --out.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_jax()
  out = _OUT.value or _WORKDIR.value
  held = [p for p in report.PLOTS if os.path.exists(os.path.join(out, p))]
  if held and not _OVERWRITE.value:
    cli.fail(f"--out: {out} already holds {', '.join(held)}; pass --overwrite to "
             "replace them, or draw elsewhere")
  try:
    names = sweep.redraw(_WORKDIR.value, out)
  except SplitjaxError as e:
    cli.fail(str(e))
  except OSError as e:
    cli.fail(f"--out: cannot write to {out}: {e.strerror}")
  logging.info("drew %s in %s", ", ".join(names), out)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
