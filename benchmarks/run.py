"""The benchmark suite: W1-W4 against the machine's limits and references.

  python -m benchmarks.run [--repeats=3] [--only=w1,w2,w3,w4] [--out_dir=results/benchmarks]

In one run it measures the machine's fp32 matmul rate and copy bandwidth,
then each workload (benchmarks/workloads.py): throughput, its FLOP count and
the fraction of the FLOP floor (FLOPs / measured matmul rate) reached, and the
ratio to a straightforward reference in the same process (a Python loop over
records, steps or settings calling a jitted function). A PyTorch reference is
not implemented yet: torch is not a dependency, and no machine with it was
available to test one. Writes <out_dir>/<device>.md and .json, where <device>
is e.g. cpu-x86_64-2cores or the GPU's kind. On a CPU,
XLA_FLAGS=--xla_force_host_platform_device_count=<cores> makes one JAX device
per core, and the sweep's settings and EXACT's records spread over them
(<device> then ends in -<n>devices).
"""

import json
import os
import platform

import jax
from absl import app, flags, logging

from benchmarks import workloads as w
from splitjax import workdir

_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement.")
_ONLY = flags.DEFINE_list("only", ["w1", "w2", "w3", "w4"], "Workloads to run.")
_OUT_DIR = flags.DEFINE_string("out_dir", "results/benchmarks", "Output folder.")
_TFDS_DIR = flags.DEFINE_string("tfds_dir", None, "TFDS cache (default ~/tensorflow_datasets).")


def device_name() -> str:
  d = jax.devices()[0]
  if d.platform == "cpu":
    name = f"cpu-{platform.machine()}-{os.cpu_count()}cores"
    return name + (f"-{jax.device_count()}devices" if jax.device_count() > 1 else "")
  return d.device_kind.lower().replace(" ", "-")


def main(argv):
  del argv
  r = _REPEATS.value
  out = {"device": device_name(), "jax": jax.__version__, "repeats": r,
         "local_devices": jax.local_device_count(), "commit": workdir.git_commit()}
  out["matmul_flops"] = w.matmul_rate()
  out["copy_bytes_per_s"] = w.copy_bandwidth()
  peak = out["matmul_flops"]
  logging.info("matmul %.1f GFLOP/s, copy %.1f GB/s", peak / 1e9,
               out["copy_bytes_per_s"] / 1e9)
  rows = []

  if "w1" in _ONLY.value:
    ds, model, space, view = w.w1_setup(_TFDS_DIR.value)
    n = ds.train.num_examples
    records = int(view.ids.size)
    cands = records * space.size * space.num_labels
    batched = w.w1_batched(model, space, view, n, r)
    loop = w.w1_loop(model, space, view, r)
    flops = records * space.size * w.w1_flops_per_combination(model)
    rows.append(dict(workload="W1 EXACT", unit="candidates/s", value=cands / batched,
                     seconds=batched, flops=flops, floor=flops / peak / batched,
                     reference="per-record loop, naive jax.grad per candidate",
                     reference_seconds=loop, ratio=loop / batched))
  if {"w2", "w3"} & set(_ONLY.value):
    c, ds, model, spec = w.w2_setup(_TFDS_DIR.value)
    per_example = w.w2_flops_per_example(model, spec)
    examples = spec.examples_per_epoch
  if "w2" in _ONLY.value:
    scan = w.w2_scan(spec, ds, r)
    loop = w.w2_loop(spec, ds, r)
    flops = examples * per_example
    rows.append(dict(workload="W2 training", unit="examples/s", value=examples / scan,
                     seconds=scan, flops=flops, floor=flops / peak / scan,
                     reference="Python loop, one jitted step per batch",
                     reference_seconds=loop, ratio=loop / scan))
  if "w3" in _ONLY.value:
    vmapped, sequential, diff = w.w3(spec, ds, r)
    n = len(w.w3_rows())
    flops = n * examples * per_example  # The evaluation pass is not counted.
    rows.append(dict(workload="W3 sweep (16 settings)", unit="settings/s",
                     value=n / vmapped, seconds=vmapped, flops=flops,
                     floor=flops / peak / vmapped,
                     reference="the 16 settings one after another",
                     reference_seconds=sequential, ratio=sequential / vmapped,
                     max_auc_difference=diff))
  if "w4" in _ONLY.value:
    ds, model, view, aux = w.w4_setup(_TFDS_DIR.value)
    records = 1024
    batched = w.w4_batched(model, ds, view, aux, r, records)
    loop = w.w4_loop(model, ds, view, aux, r, records)
    its = records * w.W4_KW["num_restarts"] * w.W4_KW["num_steps"]
    flops = its * w.w4_flops_per_iteration(model, ds.schema)
    rows.append(dict(workload="W4 optimiser", unit="record-restart-iterations/s",
                     value=its / batched, seconds=batched, flops=flops,
                     floor=flops / peak / batched,
                     reference="per-record loop (8 records timed, scaled)",
                     reference_seconds=loop, ratio=loop / batched))
  out["workloads"] = rows

  flags_env = os.environ.get("XLA_FLAGS", "")
  lines = [f"# Benchmarks: {out['device']}", "",
           f"Command: `{'XLA_FLAGS=' + flags_env + ' ' if flags_env else ''}"
           f"python -m benchmarks.run --repeats={r}"
           + (f" --only={','.join(_ONLY.value)}`" if len(_ONLY.value) < 4 else "`") + "  ",
           f"jax {out['jax']}, {out['local_devices']} device(s); commit {out['commit']}  ",
           f"Measured in the same run: fp32 matmul {peak / 1e9:.1f} GFLOP/s (2048^2), "
           f"copy {out['copy_bytes_per_s'] / 1e9:.1f} GB/s (256 MiB, reused buffer). "
           f"Median of {r} timed runs after a warm-up.", "",
           "| workload | throughput | seconds | FLOP floor reached | reference | "
           "reference seconds | speed-up |",
           "| --- | ---: | ---: | ---: | --- | ---: | ---: |"]
  for x in rows:
    lines.append(f"| {x['workload']} | {x['value']:.3g} {x['unit']} | {x['seconds']:.3f} | "
                 f"{100 * x['floor']:.1f} % | {x['reference']} | "
                 f"{x['reference_seconds']:.3f} | {x['ratio']:.1f}x |")
  lines += ["", "FLOP floor reached = (the workload's FLOPs / the measured matmul "
            "rate) / its time. FLOP counts: W1 2Hd + 4H + 4d per record and private "
            "combination (both labels); W2/W3 6 x Dense MACs per example (forward + "
            "backward, both towers); W4 6 (P H + H d) per record-restart-iteration.",
            "PyTorch reference: not run (torch is not importable here; see "
            "benchmarks/run.py)."]
  text = "\n".join(lines) + "\n"
  print(text)
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  base = os.path.join(_OUT_DIR.value, out["device"])
  workdir.write_text(base + ".md", text)
  workdir.write_text(base + ".json", json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
  app.run(main)
