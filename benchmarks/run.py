"""The benchmark suite: W1-W4 against the machine's limits and references.

  python -m benchmarks.run [--repeats=3] [--only=w1,w2,w3,w4] [--out_dir=results/benchmarks]

In one run it measures the machine's fp32 matmul rate and copy bandwidth,
then each workload (benchmarks/workloads.py): throughput, its FLOP count and
the fraction of the FLOP floor (FLOPs / measured matmul rate) reached, and the
ratio to two references in the same process: (i) a Python loop over records,
steps or settings calling a jitted function, and (ii) when torch imports, the
PyTorch implementation of the same workload in benchmarks/torch_reference.py
(torch is not a dependency of splitjax). Writes <out_dir>/<device>.md and .json, where <device>
is e.g. cpu-amd-epyc-family26-2cores (the CPU's model) or the GPU's kind. On a CPU,
XLA_FLAGS=--xla_force_host_platform_device_count=<cores> makes one JAX device
per core, and the sweep's settings and EXACT's records spread over them
(<device> then ends in -<n>devices).
"""

import json
import os

import jax
import numpy as np
from absl import app, flags, logging

from benchmarks import torch_reference as tr
from benchmarks import workloads as w
from splitjax import cli, workdir
from splitjax.attacks import gradmatch

_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement.", lower_bound=1)
_ONLY = flags.DEFINE_list("only", ["w1", "w2", "w3", "w4"], "Workloads to run.")
flags.register_validator(  # A typo would otherwise write an empty page.
    "only", lambda v: bool(v) and set(v) <= {"w1", "w2", "w3", "w4"},
    "must list workloads among w1, w2, w3, w4")
_OUT_DIR = flags.DEFINE_string("out_dir", "results/benchmarks", "Output folder.")
_TFDS_DIR = flags.DEFINE_string("tfds_dir", None, "TFDS cache (default ~/tensorflow_datasets).")
_TORCH = flags.DEFINE_bool("torch", True, "Run the PyTorch references when torch imports.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace this device's page in --out_dir.")


def main(argv):
  cli.no_arguments(argv)
  device = w.device_name()
  base = os.path.join(_OUT_DIR.value, device)
  w.refuse_existing(_OVERWRITE.value, base + ".md", base + ".json")
  r = _REPEATS.value
  use_torch = _TORCH.value and tr.available()
  out = {"device": device, "machine": w.machine_line(),
         "jax": jax.__version__, "repeats": r,
         "local_devices": jax.local_device_count(), "commit": workdir.git_commit(),
         "torch": tr.describe() if use_torch else None,
         "torch_not_run": None if use_torch else (
             "torch does not import here" if _TORCH.value else "--notorch")}
  out["matmul_flops"] = w.matmul_rate()
  out["copy_bytes_per_s"] = w.copy_bandwidth()
  peak = out["matmul_flops"]
  logging.info("matmul %.1f GFLOP/s, copy %.1f GB/s; PyTorch reference: %s",
               peak / 1e9, out["copy_bytes_per_s"] / 1e9, out["torch"] or "not run")
  rows = []

  def add(workload, unit, amount, seconds, flops, reference, reference_seconds, **extra):
    rows.append(dict(workload=workload, unit=unit, value=amount / seconds,
                     seconds=seconds, flops=flops, floor=flops / peak / seconds,
                     reference=reference, reference_seconds=reference_seconds,
                     ratio=reference_seconds / seconds, **extra))
    logging.info("%s: %.3g %s (%.3f s), %.1fx the reference", workload,
                 amount / seconds, unit, seconds, reference_seconds / seconds)

  if "w1" in _ONLY.value:
    ds, model, space, view = w.w1_setup(_TFDS_DIR.value)
    n = ds.train.num_examples
    records = int(view.ids.size)
    cands = records * space.size * space.num_labels
    batched, result = w.w1_batched(model, space, view, n, r)
    loop = w.w1_loop(model, space, view, r)
    extra = {}
    if use_torch:
      seconds, index = tr.w1(view, w.all_candidates(space), r)
      extra = dict(torch_seconds=seconds, torch_ratio=seconds / batched,
                   torch_argmin_agreement=w.w1_agreement(space, view, result, index))
    add("W1 EXACT", "candidates/s", cands, batched,
        records * space.size * w.w1_flops_per_combination(model),
        "per-record loop, naive jax.grad per candidate", loop, **extra)
  if {"w2", "w3"} & set(_ONLY.value):
    c, ds, model, spec = w.w2_setup(_TFDS_DIR.value)
    per_example = w.w2_flops_per_example(model, spec)
    examples = spec.examples_per_epoch
    if use_torch:
      server_params, device_params = model.init(jax.random.key(0), spec.num_server_numeric)
      vocab = model.private_vocab_sizes
      steps, batch = spec.steps_per_epoch, spec.batch_size
  if "w2" in _ONLY.value:
    scan = w.w2_scan(spec, ds, r)
    loop = w.w2_loop(spec, ds, r)
    extra = {}
    if use_torch:
      seconds = tr.w2(server_params, device_params, ds.train, vocab, batch, steps,
                      w.CLIP, 1.0, r)
      extra = dict(torch_seconds=seconds, torch_ratio=seconds / scan)
    add("W2 training", "examples/s", examples, scan, examples * per_example,
        "Python loop, one jitted step per batch", loop, **extra)
  if "w3" in _ONLY.value:
    vmapped, sequential, diff, auc = w.w3(spec, ds, r)
    n = len(w.w3_rows())
    extra = {}
    if use_torch:
      seconds, aucs = tr.w3(server_params, device_params, ds.train, ds.test, vocab,
                            batch, steps, w.CLIP,
                            [(x["noise_stddev"] / w.CLIP, x["seed"]) for x in w.w3_rows()], r)
      extra = dict(torch_seconds=seconds, torch_ratio=seconds / vmapped,
                   torch_mean_auc=float(aucs.mean()), mean_auc=float(auc.mean()))
    # The evaluation pass is not counted in the FLOPs.
    add("W3 sweep (16 settings)", "settings/s", n, vmapped, n * examples * per_example,
        "the 16 settings one after another", sequential, max_auc_difference=diff, **extra)
  if "w4" in _ONLY.value:
    ds, model, view, aux = w.w4_setup(_TFDS_DIR.value)
    records = 1024
    batched, loss = w.w4_batched(model, ds, view, aux, r, records)
    loop = w.w4_loop(model, ds, view, aux, r, records)
    extra = dict(median_best_loss=loss)
    if use_torch:
      lo, hi = gradmatch.numeric_box(aux)
      seconds, torch_loss, _ = tr.w4(view, records, model.private_vocab_sizes, lo, hi,
                                  w.W4_KW["num_restarts"], w.W4_KW["num_steps"],
                                  w.W4_KW["learning_rate"], w.W4_KW["beta_start"],
                                  w.W4_KW["beta_end"], r)
      extra.update(torch_seconds=seconds, torch_ratio=seconds / batched,
                   torch_median_best_loss=float(np.median(torch_loss)))
    its = records * w.W4_KW["num_restarts"] * w.W4_KW["num_steps"]
    add("W4 optimiser", "record-restart-iterations/s", its, batched,
        its * w.w4_flops_per_iteration(model, ds.schema),
        "per-record loop (8 records timed, scaled)", loop, **extra)
  out["workloads"] = rows
  text = report(out, r)
  print(text)
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  workdir.write_text(base + ".md", text)
  workdir.write_text(base + ".json", json.dumps(out, indent=2) + "\n")


def report(out, repeats) -> str:
  """The Markdown page of one run."""
  flags_env = os.environ.get("XLA_FLAGS", "")
  peak = out["matmul_flops"]
  rows = out["workloads"]
  lines = [f"# Benchmarks: {out['device']}", "",
           f"Command: `{'XLA_FLAGS=' + flags_env + ' ' if flags_env else ''}"
           f"python -m benchmarks.run --repeats={repeats}"
           + (f" --only={','.join(_ONLY.value)}" if len(_ONLY.value) < 4 else "")
           + ("" if _TORCH.value else " --notorch") + "`  ",
           f"{out['machine']}; commit {out['commit']}  ",
           f"Measured in the same run: fp32 matmul {peak / 1e9:.1f} GFLOP/s "
           f"({w.matmul_size()}^2), copy {out['copy_bytes_per_s'] / 1e9:.1f} GB/s "
           f"(256 MiB, reused buffer). Median of {repeats} timed runs after a warm-up.", "",
           "| workload | throughput | seconds | FLOP floor reached | reference | "
           "reference seconds | speed-up |",
           "| --- | ---: | ---: | ---: | --- | ---: | ---: |"]
  for x in rows:
    lines.append(f"| {x['workload']} | {x['value']:.3g} {x['unit']} | {x['seconds']:.4f} | "
                 f"{100 * x['floor']:.1f} % | {x['reference']} | "
                 f"{x['reference_seconds']:.4f} | {x['ratio']:.1f}x |")
  lines += ["", "FLOP floor reached = (the workload's FLOPs / the measured matmul "
            "rate) / its time. FLOP counts: W1 2Hd + 4H + 8d per record and private "
            "combination (both labels); W2/W3 6 x Dense MACs per example (forward + "
            "backward, both towers); W4 6 (P H + H d) per record-restart-iteration.", ""]
  if out["torch"] is None:
    lines.append(f"PyTorch reference: not run ({out['torch_not_run']}; "
                 "benchmarks/torch_reference.py runs wherever torch imports).")
  else:
    lines += [f"PyTorch reference ({out['torch']}; benchmarks/torch_reference.py, eager, "
              "same inputs, same timing):", "",
              "| workload | PyTorch seconds | splitjax speed-up over PyTorch | check |",
              "| --- | ---: | ---: | --- |"]
    for x in rows:
      if "torch_seconds" not in x:
        continue
      if "torch_argmin_agreement" in x:
        check = f"same argmin on {100 * x['torch_argmin_agreement']:.2f} % of records"
      elif "torch_mean_auc" in x:
        check = f"mean test AUC {x['torch_mean_auc']:.4f} (splitjax {x['mean_auc']:.4f})"
      elif "torch_median_best_loss" in x:
        check = (f"median best matching loss {x['torch_median_best_loss']:.2e} "
                 f"(splitjax {x['median_best_loss']:.2e})")
      else:
        check = ""
      lines.append(f"| {x['workload']} | {x['torch_seconds']:.4f} | "
                   f"{x['torch_ratio']:.1f}x | {check} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
