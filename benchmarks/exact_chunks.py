"""EXACT throughput (W1) against the per-step buffer target `chunk_mb`.

  python -m benchmarks.exact_chunks [--chunk_mb=4,16,64,256,1024] [--repeats=5]
      [--out=results/benchmarks/exact_chunks_<device>.md]

W1 of benchmarks/workloads.py (4,096 records x 840 candidates), timed at each
chunk_mb with everything else fixed; the chunk and settings block that
exact.plan_chunk picks are printed beside it. Two times per value: the whole
exact.attack call, and its device part alone (the jitted chunk calls on
inputs already in place), so the difference is host-side overhead. This is
how the device defaults in splitjax.attacks.exact.default_chunk_mb were
chosen.
"""

import re

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import workloads as w
from splitjax import cli, workdir
from splitjax.attacks import exact, knowledge

_CHUNK_MB = flags.DEFINE_list("chunk_mb", ["4", "16", "64", "256", "1024"],
                              "Per-step buffer targets to time, MiB.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per value.", lower_bound=1)
flags.register_validator(
    "chunk_mb", lambda v: bool(v) and all(re.fullmatch(r"\d+(\.\d+)?", x) and float(x) > 0
                                          for x in v),
    "must list positive numbers of MiB")
_OUT = flags.DEFINE_string("out", "", "Markdown file to write (optional).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")


def main(argv):
  cli.no_arguments(argv)
  w.refuse_existing(_OVERWRITE.value, _OUT.value)
  ds, model, space, view = w.w1_setup()
  n = ds.train.num_examples
  cands = int(view.ids.size) * space.size * space.num_labels
  mech = knowledge.Mechanism(0.0, 0.0)
  hidden, batch = model.head.hidden[0], view.ids.shape[-1]
  views = (jax.tree.map(lambda a: a[None], view),)
  select, zero = jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.float32)
  log_rr = exact.label_log_rr([float("inf")], space.num_labels)
  rows = []
  for mb in (float(x) for x in _CHUNK_MB.value):
    chunk, block = exact.plan_chunk(space, 1, n, batch, hidden, False, 4096, mb)
    num_chunks = -(-space.size // chunk)
    seconds, _ = w.timed(lambda mb=mb: exact.attack(model, space, mech, [view], n, chunk_mb=mb),
                         _REPEATS.value)

    def device_part(chunk=chunk, block=block, num_chunks=num_chunks):
      carry = exact._empty_carry((1, 1, n), 1)
      for i in range(num_chunks):
        carry = exact._chunk(carry, jnp.int32(i * chunk), views, select, zero, zero,
                             log_rr, jnp.float32(1e-4), None,
                             model=model, space=space, metric="l2", chunk=chunk,
                             num_records=n, bayes=False, block=block)
      return carry

    device, _ = w.timed(device_part, _REPEATS.value)
    rows.append((mb, chunk, num_chunks, seconds, device, cands / seconds))
    print(f"chunk_mb {mb:g}: {chunk} candidates x {num_chunks} chunks, "
          f"{seconds * 1e3:.2f} ms ({device * 1e3:.2f} ms on the device), "
          f"{cands / seconds:.3g} candidates/s", flush=True)
  name = w.device_name()
  text = "\n".join(
      [f"# EXACT (W1) vs chunk size: {name}", "",
       f"Command: `python -m benchmarks.exact_chunks --chunk_mb={','.join(_CHUNK_MB.value)} "
       f"--repeats={_REPEATS.value}`  ",
       f"{w.machine_line()}; commit {workdir.git_commit()}; default chunk_mb here: "
       f"{exact.default_chunk_mb():g}. Median of {_REPEATS.value} timed runs after a "
       "warm-up, each the whole exact.attack call (host transfers included).", "",
       "| chunk_mb | candidates per chunk | chunks | ms | device part ms | candidates/s |",
       "| ---: | ---: | ---: | ---: | ---: | ---: |"]
      + [f"| {mb:g} | {c} | {k} | {s * 1e3:.2f} | {d * 1e3:.2f} | {v:.3g} |"
         for mb, c, k, s, d, v in rows]) + "\n"
  print(text)
  if _OUT.value:
    workdir.write_text(_OUT.value, text)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
