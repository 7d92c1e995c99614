"""Shared fixtures: one TFDS cache per test session, the shared data copies;
one XLA compilation cache per test run, and XLA flags that compile faster."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from splitjax import configlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("SPLITJAX_SHARED_DATA",
                             os.path.join(REPO, "..", "shared", "data"))


_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = []
# XLA's CPU backend at LLVM optimisation level 1 with its expensive passes
# off. Compiling was half of the suite's CPU time (the tests' programs are
# many and their arrays small); with these flags the suite used a fifth
# less CPU (README), and the programs run about as fast. At level 0,
# jaxlib 0.10.2 computed a NaN gradient for gradmatch's fused loss (the
# same ops one by one gave the right number), so not lower than 1.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=1",
                      "--xla_llvm_disable_expensive_passes=true")


def pytest_configure(config):
  """Points JAX's persistent compilation cache at one folder for the whole
  run: the xdist workers (started after this, in the controller) and every
  subprocess a test starts inherit it through the environment. Many tests
  compile the same programs (the sweep tests' grid in-process, in the
  kill-and-resume and sharding subprocesses); a cached executable is the
  same code, so the numbers do not change, only the time. A folder the
  caller set is used and kept; one made here is removed at the end."""
  del config
  _compile_faster()
  if _CACHE_ENV not in os.environ:
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="splitjax-xla-cache-")
    _OWN_CACHE.append(os.environ[_CACHE_ENV])
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  import jax  # Possibly imported already, before the variables were set.
  jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def _compile_faster():
  """Adds FAST_COMPILE_FLAGS to XLA_FLAGS, for this process (whose XLA
  backend starts later), the xdist workers and the tests' subprocesses,
  unless the caller set an optimisation level or this jaxlib refuses the
  flags (XLA aborts on a flag it does not know; a one-line probe decides)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" in flags:
    return  # The caller's choice, or set already by the xdist controller.
  wanted = " ".join([flags, *FAST_COMPILE_FLAGS]).strip()
  try:
    probe = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1) + 1"],
                           env=dict(os.environ, XLA_FLAGS=wanted), capture_output=True,
                           timeout=120)
  except subprocess.TimeoutExpired:
    return
  if probe.returncode == 0:
    os.environ["XLA_FLAGS"] = wanted


def pytest_unconfigure(config):
  del config
  for folder in _OWN_CACHE:
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def movielens_dir():
  path = os.path.join(SHARED_DATA, "movielens_100k")
  if not os.path.isfile(os.path.join(path, "u.data")):
    pytest.skip(f"MovieLens 100K official files not found in {path} (set "
                "SPLITJAX_SHARED_DATA); it is never shipped")
  return path


def small_config(name="synthetic", **overrides):
  """A tiny, fast config; overrides are dotted paths, e.g. train__mode."""
  c = configlib.base_config()
  c.data.name = name
  c.data.private_features = ("p_cat_0", "p_cat_1")
  c.data.synthetic.num_examples = 2400
  c.model.server_hidden = (16,)
  c.model.embed_dim = 4
  c.model.cut_dim = 8
  c.model.device_hidden = (8,)
  c.train.batch_size = 64
  c.train.num_epochs = 2
  c.train.server_only_baseline = False
  for key, value in overrides.items():
    node = c
    parts = key.split("__")
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = value
  return c


def config_file(name: str, variant=None):
  """get_config(variant) of configs/<name>.py, loaded by path as the scripts
  load it (no change to sys.path)."""
  path = os.path.join(REPO, "configs", name + ".py")
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)
