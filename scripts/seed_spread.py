"""How far a finished sweep's intervals over few seeds can be trusted.

  python scripts/seed_spread.py --workdir=workdirs/adult_seeds10 [--subset=3]
      [--metrics=test_auc,exact/label] [--half_width=0.01] [--out=FILE]

Reads the sweep's privacy_utility.json (every seed's value of every metric)
and writes a Markdown page, by default <workdir>/seed_spread.md: per metric
and setting, the mean ± 95 % t-interval over all seeds, the seed-to-seed
standard deviation, the half-widths of the intervals that --subset seeds
alone would have reported (disjoint blocks of consecutive seeds), how many of
those miss the all-seeds mean, and the seeds an interval of ± --half_width
needs. Run a sweep with more seeds than usual (--config.sweep.seeds) to ask
whether its usual number is enough. A page already there is refused unless
--overwrite.
"""

import os

from absl import app, flags, logging

from splitjax import cli, report
from splitjax import workdir as wd
from splitjax.errors import SplitjaxError

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished sweep's folder.")
_SUBSET = flags.DEFINE_integer("subset", 3, "Seeds per block.", lower_bound=2)
_METRICS = flags.DEFINE_list("metrics", None, "Per-seed metrics (default: test_auc "
                             "and every attack's).")
_HALF_WIDTH = flags.DEFINE_float("half_width", 0.01, "Target half-width of a 95 % "
                                 "interval, for the seeds-needed column.", lower_bound=1e-9)
_OUT = flags.DEFINE_string("out", None, "Page to write (default <workdir>/seed_spread.md).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  cli.no_arguments(argv)
  out = _OUT.value or os.path.join(_WORKDIR.value, "seed_spread.md")
  if os.path.exists(out) and not _OVERWRITE.value:
    cli.fail(f"--out: {out} already exists; pass --overwrite to replace it, or "
             "write elsewhere")
  try:
    sweep = report.read_sweep(_WORKDIR.value)
    metrics = _METRICS.value or report.default_metrics(sweep["rows"])
    spread = report.seed_spread(sweep["rows"], metrics, _SUBSET.value)
  except SplitjaxError as e:
    cli.fail(str(e))
  command = wd.command_line()
  page = report.seed_spread_markdown(sweep, spread, _SUBSET.value, _HALF_WIDTH.value,
                                     command)
  try:
    wd.write_text(out, page)
  except OSError as e:
    cli.fail(f"--out: cannot write {out}: {e.strerror}")
  logging.info("%s", report.seed_spread_summary(spread, _SUBSET.value))
  logging.info("wrote %s", out)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
