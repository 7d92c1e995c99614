"""The absl plumbing every script shares: --config, --workdir, one-line errors."""

import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags
import ml_collections
from ml_collections import config_flags

from splitjax.errors import SplitjaxError


def fail(message: str) -> NoReturn:
  """Bad input: one line, `splitjax: error: ...`, and exit status 2."""
  print(f"splitjax: error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(2)


def no_arguments(argv: list[str]) -> None:
  """Every option is a --flag: a stray word (a path without its --flag, a
  flag missing its dashes) is bad input, refused in one line."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])} (every option is a "
         "--flag; see --help)")


def _flag_error(e: Exception, argv: list[str]) -> str:
  """One line for an exception raised while parsing the flags: a misspelt
  --config.<field>, an unloadable config file, a value of the wrong type."""
  if isinstance(e, flags.Error):  # A value absl or ml_collections refused.
    head, _, trace = str(e).partition("Traceback (most recent call last):")
    return f"{head} {trace.strip().splitlines()[-1]}" if trace.strip() else head
  if isinstance(e, (AttributeError, KeyError)):  # --config.<path> names no field?
    text = e.args[0] if e.args else ""
    text = text.args[0] if isinstance(text, BaseException) and text.args else str(text)
    name = text.splitlines()[0].strip("'\"") if text else "?"
    hint = " ".join(line for line in text.splitlines()[1:] if "Did you mean" in line)
    given = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    flag = next((g for g in given if name in g.split(".")[1:]), None)
    if flag:
      return f"{flag}: no such config field {name!r}" + (f" ({hint})" if hint else "")
  config = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)
  if config is not None:
    path = config.split(":", 1)[0]
    if not os.path.isfile(path):
      return f"--config: no such file: {path}"
  root = e
  while root.__cause__ or root.__context__:  # The first failure, not its echoes.
    root = root.__cause__ or root.__context__
  where = f"--config={config}: " if config else ""
  return f"{where}{type(root).__name__}: {root}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; any failure prints one line and exits with status 2
  (absl would print a traceback for a misspelt config field). --help exits 0."""
  try:
    return flags.FLAGS(argv)
  except SystemExit as e:  # absl's --help, --helpfull and --helpxml print,
    if e.code == 1:        # then exit with status 1; asking for help is no error.
      sys.exit(0)
    raise
  except Exception as e:  # Anything raised while parsing flags is bad input.
    fail(_flag_error(e, argv))


def quiet_jax() -> None:
  """Off a TPU, jax's first backend start logs at INFO that libtpu is
  missing: a line before every one-line error, and noise in every log. Its
  warnings (e.g. a GPU without CUDA jaxlib) still show."""
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def run_app(job: Callable[[object, str], object]) -> None:
  """Defines --config (locked) and --workdir, then runs job(config, workdir).

  Bad flags (a misspelt config field, a missing config file, a wrong type)
  and a SplitjaxError (bad config, bad data, a failed audit) print one line,
  `splitjax: error: ...`, and exit with status 2.
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
    no_arguments(argv)
    quiet_jax()
    if distributed.value:
      import jax
      try:
        jax.distributed.initialize(coordinator.value, num_processes.value,
                                   process_id.value)
      except Exception as e:  # A missing or wrong coordinator, id or count.
        fail("--distributed: jax.distributed.initialize() failed (give "
             "--coordinator_address, --num_processes and --process_id, or run "
             f"where JAX detects them: TPU, Slurm, Open MPI): {e}")
    else:
      given = [f"--{f.name}" for f in (coordinator, num_processes, process_id)
               if flags.FLAGS[f.name].present]
      if given:
        fail(f"{', '.join(given)}: only with --distributed")
    loaded = config.value
    if not isinstance(loaded, ml_collections.ConfigDict):
      try:  # A config file that failed to load stands in a proxy that raises.
        loaded.to_dict()
      except AttributeError:  # Not the proxy: get_config returned something else.
        pass
      except Exception as e:  # Bad input, as in parse_flags.
        fail(_flag_error(e, sys.argv))
      fail(f"--config: get_config() returned {type(loaded).__name__}, not a ConfigDict")
    try:
      from splitjax import sharding, workdir as wd  # After distributed init.
      if distributed.value:
        sharding.from_process_0(wd.check_writable, workdir.value)
      else:  # Without starting a backend, so a bad config is the only line printed.
        wd.check_writable(workdir.value)
      job(loaded, workdir.value)
    except SplitjaxError as e:
      fail(str(e))

  app.run(main, flags_parser=parse_flags)
