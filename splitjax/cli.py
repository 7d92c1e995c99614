"""The absl plumbing every script shares: --config, --workdir, one-line errors."""

import sys
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

from splitjax.errors import SplitjaxError


def run_app(job: Callable[[object, str], object]) -> None:
  """Defines --config (locked) and --workdir, then runs job(config, workdir).

  A SplitjaxError (bad config, bad data, a failed audit) prints one line,
  `splitjax: error: ...`, and exits with status 2.
  """
  config = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (configs/*.py[:variant]).",
      lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Output folder for this run.")
  distributed = flags.DEFINE_bool(
      "distributed", False, "Call jax.distributed.initialize() first (multi-host: "
      "run the same command on every host; see the README).")
  coordinator = flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0 (with --distributed; "
      "omit on TPU, Slurm or Open MPI, where it is detected).")
  num_processes = flags.DEFINE_integer("num_processes", None, "With --distributed.")
  process_id = flags.DEFINE_integer("process_id", None, "With --distributed.")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if distributed.value:
      import jax
      jax.distributed.initialize(coordinator.value, num_processes.value,
                                 process_id.value)
    try:
      job(config.value, workdir.value)
    except SplitjaxError as e:
      print(f"splitjax: error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(main)
