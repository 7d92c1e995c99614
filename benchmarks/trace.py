"""Where the time goes: profiler traces of W1, W3 and W4 and a per-kernel summary.

  python -m benchmarks.trace --out_dir=/tmp/traces [--workloads=w3_1,w3_16,w1]
  python -m benchmarks.trace --summarize=/tmp/traces/w3_16.json.gz

The first form warms each workload up, then records two runs of it with
jax.profiler (Perfetto JSON, readable at ui.perfetto.dev) into
<out_dir>/<workload>.json.gz and prints the summary. The second form only
summarises a trace already written. The summary covers each process
(/host:CPU, /device:GPU:0, ...):
- the events with the largest total time;
- on a device, the sum of kernel time and the span from the first kernel to
  the last. The difference is time the device sat idle, waiting on the host;
- on a CPU, where the kernels run in the host process, the kernels alone
  first (summed over threads, so concurrent kernels count twice).

Workloads: w3_<n>, one SL epoch of the first n of W3's 16 settings
(benchmarks/workloads.py); w1, the EXACT call of W1; w4, W4's optimiser on
its first 256 records.
"""

import collections
import glob
import gzip
import json
import os
import shutil

import jax
import numpy as np
from absl import app, flags

from benchmarks import workloads as w
from splitjax import cli, training
from splitjax.attacks import exact, gradmatch, knowledge

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for the traces.")
_WORKLOADS = flags.DEFINE_list("workloads", ["w3_1", "w3_16", "w1"], "What to trace.")
_SUMMARIZE = flags.DEFINE_string("summarize", None, "Only summarise this trace file.")
_TOP = flags.DEFINE_integer("top", 15, "Events listed per process.")


def _is_kernel(name: str) -> bool:
  """On a CPU the compiled program's kernels (XLA thunks) share the host
  process with Python frames ($...) and runtime events (Foo::Bar, PjitFunction)."""
  return not (name.startswith("$") or "::" in name or name.startswith("Pjit"))


def summarize(path: str, top: int) -> str:
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  names = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  by_process = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and "dur" in e:
      by_process[names.get(e["pid"], str(e["pid"]))].append(e)
  lines = [f"== {path}"]
  for process, evs in sorted(by_process.items()):
    if "device" not in process:  # The host: its kernels alone (CPU), if any.
      kernels = [e for e in evs if _is_kernel(e["name"])]
      if kernels:
        lines.append(f"-- {process}, kernels only: {len(kernels)} events, "
                     f"{sum(e['dur'] for e in kernels) / 1e3:.2f} ms summed over threads")
        lines += _top(kernels, top)
    head = f"-- {process}: {len(evs)} events"
    if "device" in process:
      span = max(e["ts"] + e["dur"] for e in evs) - min(e["ts"] for e in evs)
      head += (f", kernel time {sum(e['dur'] for e in evs) / 1e3:.2f} ms over a span of "
               f"{span / 1e3:.2f} ms")
    lines.append(head)
    lines += _top(evs, top)
  return "\n".join(lines)


def _top(evs, top: int) -> list[str]:
  total, count = collections.Counter(), collections.Counter()
  for e in evs:
    total[e["name"]] += e["dur"]
    count[e["name"]] += 1
  return [f"  {d / 1e3:9.3f} ms {count[n]:6d}x  {n[:90]}"
          for n, d in total.most_common(top)]


def _is_workload(name: str) -> bool:
  """w1, w4, or w3_<n> with n in 1..16 (the first n of W3's settings)."""
  if name in ("w1", "w4"):
    return True
  n = name[3:]
  return name.startswith("w3_") and n.isdigit() and 1 <= int(n) <= len(w.w3_rows())


def workload_fn(name: str):
  if not _is_workload(name):
    raise ValueError(f"unknown workload {name!r}")  # main() refuses it first.
  if name == "w1":
    ds, model, space, view = w.w1_setup()
    mech = knowledge.Mechanism(0.0, 0.0)
    return lambda: exact.attack(model, space, mech, [view], ds.train.num_examples).label
  if name == "w4":
    ds, model, view, aux = w.w4_setup()
    mech = knowledge.Mechanism(0.0, 0.0)
    return lambda: gradmatch.attack(model, ds.schema, mech, view, aux, ds.train.num_examples,
                                    max_records=256, **w.W4_KW).loss
  if name.startswith("w3_"):
    _, ds, _, spec = w.w2_setup()
    trainer = training.Trainer(spec)
    train = jax.device_put(ds.train)
    settings = training.make_settings(w.w3_rows()[:int(name[3:])])

    def epoch():
      state = trainer.init(train.y, settings)
      return trainer.epoch(state, train, settings, np.int32(0))[1].train_loss
    return epoch


def main(argv):
  cli.no_arguments(argv)
  if _SUMMARIZE.value:
    print(summarize(_SUMMARIZE.value, _TOP.value))
    return
  if not _OUT_DIR.value:
    cli.fail("--out_dir is required (or --summarize=FILE)")
  unknown = [n for n in _WORKLOADS.value if not _is_workload(n)]
  if unknown:
    cli.fail(f"--workloads: unknown {', '.join(unknown)}; known: w1, w4, w3_<n> "
             f"(n = 1..{len(w.w3_rows())})")
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  for name in _WORKLOADS.value:
    fn = workload_fn(name)
    for _ in range(2):  # compile, then one untraced run
      jax.block_until_ready(fn())
    log_dir = os.path.join(_OUT_DIR.value, f"profile_{name}")
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      for _ in range(2):
        jax.block_until_ready(fn())
    found = sorted(glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"),
                             recursive=True))
    if not found:
      raise RuntimeError(f"jax.profiler wrote no perfetto_trace.json.gz under {log_dir}")
    path = os.path.join(_OUT_DIR.value, f"{name}.json.gz")
    shutil.copy(found[-1], path)
    print(summarize(path, _TOP.value), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
