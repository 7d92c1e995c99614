"""benchmarks.run end to end on one workload: it runs, writes the page and
its JSON with the exact command, and never replaces a finished page unasked.
No speed is asserted here (speed is measured by the benchmarks themselves)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def _run(out_dir, tfds_dir):
  return subprocess.run([sys.executable, "-m", "benchmarks.run", "--repeats=1", "--notorch",
                         "--only=w2", f"--out_dir={out_dir}", f"--tfds_dir={tfds_dir}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)


def test_benchmark_run_writes_its_page_and_keeps_it(tmp_path, tfds_dir):
  out = tmp_path / "pages"
  r = _run(out, tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  [page] = [p for p in os.listdir(out) if p.endswith(".md")]
  text = (out / page).read_text()
  assert "Command: `python -m benchmarks.run --repeats=1 --only=w2 --notorch`" in text
  assert "PyTorch reference: not run (--notorch;" in text
  got = json.loads((out / page.replace(".md", ".json")).read_text())
  [w2] = got["workloads"]
  assert w2["workload"] == "W2 training" and w2["unit"] == "examples/s"
  # W2 is one epoch of Adult's 32,561 training rows in full batches of 256.
  assert abs(w2["value"] * w2["seconds"] / (127 * 256) - 1) < 1e-9
  assert w2["reference_seconds"] > 0 and w2["floor"] > 0

  again = _run(out, tfds_dir)  # A finished page is refused, in one line, untouched.
  assert again.returncode == 2
  base = out / page.removesuffix(".md")
  assert [l for l in again.stderr.splitlines() if l.startswith("splitjax:")] == [
      f"splitjax: error: {base}.md, {base}.json already exist; pass --overwrite to "
      "replace, or write elsewhere (--out_dir / --out)"]
  assert (out / page).read_text() == text
