"""A vmapped group of settings vs the same settings one after another.

  python -m benchmarks.sweep_throughput [--repeats=3] [--out=results/benchmarks/sweep_cpu.md]

Workload (issue 5's acceptance; W3 of benchmarks/run.py): 16 settings = 4
noise multipliers (0.5, 1, 2, 4; clip norm 0.1) x 4 seeds, SL on Adult's
training split (batch 256, default model), 1 epoch plus the test evaluation.
Both drivers use the same compiled code (`training.Trainer`), warmed up
before timing, in the same process: (a) one program over all 16 settings
(vmap over the leading setting axis); (b) a 1-setting program called 16
times. Reports the median wall time of each, the ratio (b)/(a), the
largest difference between the two drivers' test AUCs, and the same ratio
for each phase (init, the epoch, the test evaluation) timed on its own, in
wall time and in the process's CPU time. On a CPU backend the CPU-time ratio
is the work the group saves; the wall ratio can exceed it only by keeping
more cores busy. (On a GPU the CPU time is the host's and says little.)
"""

import os

from absl import app, flags

from benchmarks import workloads as w
from splitjax import cli, workdir

_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per driver.", lower_bound=1)
_OUT = flags.DEFINE_string("out", "", "Markdown file to write (optional).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")


def main(argv):
  cli.no_arguments(argv)
  w.refuse_existing(_OVERWRITE.value, _OUT.value)
  _, ds, _, spec = w.w2_setup()
  vmapped, sequential, diff, _ = w.w3(spec, ds, _REPEATS.value)
  (group, group_cpu), (single, single_cpu) = w.w3_phases(spec, ds, _REPEATS.value)
  n = len(w.w3_rows())
  phase_rows = [
      f"| {name} | {g:.3f} | {n * s:.3f} | {n * s / g:.2f}x | {gc:.3f} | {n * sc:.3f} | "
      f"{n * sc / gc:.2f}x |"
      for name, g, s, gc, sc in zip(("init", "epoch", "test evaluation"), group, single,
                                    group_cpu, single_cpu)]
  examples = spec.examples_per_epoch * n
  text = "\n".join([
      "# Sweep throughput: one vmapped group vs one setting at a time",
      "",
      f"Command: `{'XLA_FLAGS=' + os.environ['XLA_FLAGS'] + ' ' if os.environ.get('XLA_FLAGS') else ''}"
      f"python -m benchmarks.sweep_throughput --repeats={_REPEATS.value}`  ",
      f"{w.machine_line()}; commit {workdir.git_commit()}  ",
      f"Workload: {n} settings (sigma {', '.join(f'{s:g}' for s in w.SIGMAS)} x seeds "
      f"{', '.join(map(str, w.SEEDS))}, clip norm {w.CLIP}), Adult SL, batch "
      f"{spec.batch_size}, 1 epoch ({spec.examples_per_epoch:,} examples per setting) "
      f"+ test evaluation. Median of {_REPEATS.value} timed runs after warm-up.",
      "",
      "| driver | wall time (s) | examples/s | settings/s |",
      "| --- | ---: | ---: | ---: |",
      f"| vmapped group of {n} | {vmapped:.2f} | {examples / vmapped:,.0f} | "
      f"{n / vmapped:.2f} |",
      f"| {n} one after another | {sequential:.2f} | {examples / sequential:,.0f} | "
      f"{n / sequential:.2f} |",
      "",
      f"Speed-up of the vmapped group: **{sequential / vmapped:.2f}x**. Largest "
      f"|test AUC (vmapped) - test AUC (one by one)| over the {n} settings: "
      f"{diff:.2e}.",
      "",
      "By phase, each timed on its own, the group on one device (not "
      f"sharded); the sequential side is {n} x one setting's median. Wall "
      "time, then the process's CPU time over the same span (all threads, "
      "`time.process_time`): a wall ratio above the CPU-time ratio comes "
      "from keeping more cores busy, not from doing less work.",
      "",
      f"| phase | group wall (s) | {n} x one wall (s) | wall ratio | group CPU (s) | "
      f"{n} x one CPU (s) | CPU ratio |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
      *phase_rows,
  ]) + "\n"
  print(text)
  if _OUT.value:
    workdir.write_text(_OUT.value, text)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
