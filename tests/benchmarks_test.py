"""benchmarks.run end to end on W1, W2 and W4 (W3 is W2's epoch vmapped, and
sweep_test checks vmapped against one by one): it runs, writes the page and
its JSON with the exact command, and never replaces a finished page unasked.
Run here so that a broken driver shows before a lent GPU's time is spent on
it. No speed is asserted (speed is measured by the benchmarks themselves)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def _run(out_dir, tfds_dir):
  return subprocess.run([sys.executable, "-m", "benchmarks.run", "--repeats=1", "--notorch",
                         "--only=w1,w2,w4", f"--out_dir={out_dir}", f"--tfds_dir={tfds_dir}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)


def test_benchmark_run_writes_its_page_and_keeps_it(tmp_path, tfds_dir):
  out = tmp_path / "pages"
  r = _run(out, tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  [page] = [p for p in os.listdir(out) if p.endswith(".md")]
  text = (out / page).read_text()
  flags = os.environ.get("XLA_FLAGS")  # conftest's, for instance; the page names them.
  assert (f"Command: `{f'XLA_FLAGS={flags} ' if flags else ''}python -m benchmarks.run "
          "--repeats=1 --only=w1,w2,w4 --notorch`") in text
  assert "PyTorch reference: not run (--notorch;" in text
  got = json.loads((out / page.replace(".md", ".json")).read_text())
  w1, w2, w4 = got["workloads"]
  assert [w["workload"] for w in (w1, w2, w4)] == ["W1 EXACT", "W2 training",
                                                    "W4 optimiser"]
  assert [w["unit"] for w in (w1, w2, w4)] == [
      "candidates/s", "examples/s", "record-restart-iterations/s"]
  # W1: 16 steps of 256 records x 420 private combinations x 2 labels.
  assert abs(w1["value"] * w1["seconds"] / (4096 * 840) - 1) < 1e-9
  # W2 is one epoch of Adult's 32,561 training rows in full batches of 256.
  assert abs(w2["value"] * w2["seconds"] / (127 * 256) - 1) < 1e-9
  # W4: 1,024 records x 8 restarts x 500 steps; without noise the best
  # restart matches the message (measured median 4e-7).
  assert abs(w4["value"] * w4["seconds"] / (1024 * 8 * 500) - 1) < 1e-9
  assert w4["median_best_loss"] < 1e-4
  for w in (w1, w2, w4):
    assert w["reference_seconds"] > 0 and w["floor"] > 0, w

  again = _run(out, tfds_dir)  # A finished page is refused, in one line, untouched.
  assert again.returncode == 2
  base = out / page.removesuffix(".md")
  assert [l for l in again.stderr.splitlines() if l.startswith("splitjax:")] == [
      f"splitjax: error: {base}.md, {base}.json already exist; pass --overwrite to "
      "replace, or write elsewhere (--out_dir / --out)"]
  assert (out / page).read_text() == text


def test_benchmark_scripts_refuse_bad_input_in_one_line_before_any_work(tmp_path):
  out = tmp_path / "traces"
  for args, line in (
      (["benchmarks.trace", f"--out_dir={out}", "--workloads=w1,w3_17,w9"],
       "--workloads: unknown w3_17, w9; known: w1, w4, w3_<n> (n = 1..16)"),
      (["benchmarks.sweep_throughput", "stray"],
       "unexpected arguments: stray (every option is a --flag; see --help)")):
    r = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"splitjax: error: {line}"], r.stderr[-2000:]
  assert not out.exists()
