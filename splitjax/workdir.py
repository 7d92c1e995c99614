"""Run outputs: atomic writes, provenance, and refusing to overwrite results.

A finished file is written to a temporary name in the same folder and renamed,
so a crash never leaves half a result, and a workdir that already holds a
finished result is refused rather than overwritten.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile

import jax
import numpy as np

from splitjax import sharding
from splitjax.errors import ConfigError


def git_commit() -> str:
  """The commit of the splitjax checkout, with '-dirty' for local changes.

  $SPLITJAX_GIT_COMMIT, when set, overrides it: for a tree copied to another
  machine without (or with a stale) .git. Without either: 'unknown'.
  """
  if os.environ.get("SPLITJAX_GIT_COMMIT"):
    return os.environ["SPLITJAX_GIT_COMMIT"]
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, check=True,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=here, check=True, capture_output=True,
                           text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return commit + ("-dirty" if dirty else "")


def software() -> str:
  """What besides the config and seed decides the numbers, e.g. 'jax 0.10.2,
  jaxlib 0.10.2, numpy 2.4.6, python 3.11.7 on cpu'.

  The same config and seed give identical numbers with the same jax and
  device; another jax version may compile the same program to round
  differently (README, "Sweeps").
  """
  try:
    jaxlib = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    jaxlib = "unknown"
  return (f"jax {jax.__version__}, jaxlib {jaxlib}, numpy {np.__version__}, "
          f"python {platform.python_version()} on {jax.devices()[0].device_kind}")


def provenance(config_hash: str, **extra) -> dict:
  """What every result records: the config hash, the commit, the software
  and any `extra` fields (a run's seed)."""
  return {"config_hash": config_hash, **extra, "git_commit": git_commit(),
          "software": software()}


def command_line() -> str:
  """This process's command line, as a shell would take it back."""
  return "python " + shlex.join(sys.argv)


def check_writable(workdir: str) -> None:
  """Raises ConfigError unless `workdir` is a folder this process can write
  in, or can be made one. It leaves nothing behind: folders it had to make
  for the probe are removed again."""
  target = os.path.abspath(workdir)
  missing, probe = [], target
  while not os.path.lexists(probe):
    missing.append(probe)
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise ConfigError(f"--workdir: {probe} exists and is not a folder")
  try:
    os.makedirs(target, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".tmp-probe")
    os.close(fd)
    os.unlink(tmp)
  except OSError as e:
    raise ConfigError(f"--workdir: cannot write in {target}: {e.strerror}") from None
  finally:
    for folder in missing:  # Deepest first; a job that fails later made none.
      try:
        os.rmdir(folder)
      except OSError:
        pass


def refuse_finished(workdir: str, *names: str) -> None:
  """Raises ConfigError if `workdir` already holds any of the finished files
  (process 0's workdir, on every process of a multi-host run)."""
  sharding.from_process_0(_refuse_finished, workdir, names)


def _refuse_finished(workdir: str, names) -> None:
  for name in names:
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      raise ConfigError(f"--workdir: {path} holds a finished result; choose "
                        "another workdir (results are never overwritten)")


def is_writer() -> bool:
  """Whether this process writes results: process 0 of a multi-host run."""
  return jax.process_index() == 0


def rename(src: str, dst: str) -> None:
  """Renames a finished file into place (process 0 only; see is_writer)."""
  if is_writer():
    os.replace(src, dst)


def publish(tmp: str, path: str) -> None:
  """Renames a finished temporary file into place, readable as a normal file
  would be (mkstemp creates it 0600)."""
  if not is_writer():  # Multi-host: process 0 writes the results.
    os.unlink(tmp)
    return
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (temporary file, then rename); on
  process 0 only (see is_writer)."""
  if not is_writer():
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    publish(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_json(path: str, obj) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str, rows) -> None:
  write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
