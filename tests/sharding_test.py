"""Eight CPU devices (setting axis and EXACT's record axis sharded) give the
one-device numbers."""

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO
from splitjax import sweep
from sweep_test import _grid_config, assert_rows_close


def test_eight_cpu_devices_give_the_one_device_table(tmp_path):
  eight = tmp_path / "eight"
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
      import jax
      assert jax.device_count() == 8, jax.devices()
      from splitjax import sharding, sweep
      assert sharding.mesh().size == 8
      from sweep_test import _grid_config
      sweep.run(_grid_config(), {str(eight)!r})
      """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  sweep.run(_grid_config(), str(tmp_path / "one"))
  rows = json.loads((eight / "privacy_utility.json").read_text())["rows"]
  one = json.loads((tmp_path / "one" / "privacy_utility.json").read_text())["rows"]
  assert_rows_close(rows, one)
