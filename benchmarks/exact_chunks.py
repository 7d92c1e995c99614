"""EXACT throughput (W1) against the per-step buffer target `chunk_mb`.

  python -m benchmarks.exact_chunks [--chunk_mb=4,16,64,256,1024] [--repeats=5]
      [--out=results/benchmarks/exact_chunks_<device>.md]

W1 of benchmarks/workloads.py (4,096 records x 840 candidates), timed at each
chunk_mb with everything else fixed; the chunk and settings block that
exact.plan_chunk picks are printed beside it. This is how the device
defaults in splitjax.attacks.exact.default_chunk_mb were chosen.
"""

import jax
from absl import app, flags

from benchmarks import workloads as w
from splitjax import workdir
from splitjax.attacks import exact, knowledge

_CHUNK_MB = flags.DEFINE_list("chunk_mb", ["4", "16", "64", "256", "1024"],
                              "Per-step buffer targets to time, MiB.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per value.")
_OUT = flags.DEFINE_string("out", "", "Markdown file to write (optional).")


def main(argv):
  del argv
  ds, model, space, view = w.w1_setup()
  n = ds.train.num_examples
  cands = int(view.ids.size) * space.size * space.num_labels
  mech = knowledge.Mechanism(0.0, 0.0)
  hidden, batch = model.head.hidden[0], view.ids.shape[-1]
  rows = []
  for mb in (float(x) for x in _CHUNK_MB.value):
    chunk, _ = exact.plan_chunk(space, 1, n, batch, hidden, False, 4096, mb)
    seconds, _ = w.timed(lambda mb=mb: exact.attack(model, space, mech, [view], n, chunk_mb=mb),
                         _REPEATS.value)
    rows.append((mb, chunk, -(-space.size // chunk), seconds, cands / seconds))
    print(f"chunk_mb {mb:g}: {chunk} candidates x {rows[-1][2]} chunks, "
          f"{seconds * 1e3:.2f} ms, {cands / seconds:.3g} candidates/s", flush=True)
  name = w.device_name()
  text = "\n".join(
      [f"# EXACT (W1) vs chunk size: {name}", "",
       f"Command: `python -m benchmarks.exact_chunks --chunk_mb={','.join(_CHUNK_MB.value)} "
       f"--repeats={_REPEATS.value}`  ",
       f"jax {jax.__version__}; commit {workdir.git_commit()}; default chunk_mb here: "
       f"{exact.default_chunk_mb():g}. Median of {_REPEATS.value} timed runs after a "
       "warm-up, each the whole exact.attack call (host transfers included).", "",
       "| chunk_mb | candidates per chunk | chunks | ms | candidates/s |",
       "| ---: | ---: | ---: | ---: | ---: |"]
      + [f"| {mb:g} | {c} | {k} | {s * 1e3:.2f} | {v:.3g} |" for mb, c, k, s, v in rows]) + "\n"
  print(text)
  if _OUT.value:
    workdir.write_text(_OUT.value, text)


if __name__ == "__main__":
  app.run(main)
