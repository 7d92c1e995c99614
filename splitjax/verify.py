"""Checks that finished results agree with themselves and with their provenance.

Every table splitjax writes is rendered by code from per-seed values, so a
table that disagrees with its own JSON was edited by hand, written by other
code than its JSON, or copied incompletely. `check(root)` walks a tree of
result folders (a workdir, or the committed results/) and lists, per folder,
what disagrees (scripts/verify_results.py; tests/verify_test.py runs it over
results/):

- a sweep (privacy_utility.json): config.json's config gives the config hash
  that every row records; each row's means and 95 % intervals recompute from
  its per-seed values; privacy_utility.csv holds exactly the rows' cells;
  privacy_utility.md is what `report.to_markdown` renders from the rows and
  config.json;
- a sweep across data sets (summary.csv, datasets.json): its rows are the
  data sets' own rows, from their folders inside it or beside it;
- every JSON: each `<x>_per_seed` list recomputes `<x>` and `<x>_ci95`, and
  each `accuracy` beside a `confusion` matrix is that matrix's diagonal share;
- message_energy.md: each row's signal cell is its JSON row's;
- prior_accuracy.md: each cell is its JSON's figure;
- with `repo`, every recorded commit is a commit of that repository (not
  '-dirty', not 'unknown'), and so is every commit a README.md names (7 to
  10 or 40 hex digits; the README's other figures are not read).

What cannot be checked (a sweep without its config.json, commits in a
shallow clone) is listed apart as unchecked, never passed over in silence.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import subprocess

import ml_collections
import numpy as np

from splitjax import configlib, report
from splitjax.data.schema import Schema
from splitjax.errors import SplitjaxError

# Intermediate files of a running sweep, checked when its tables are written.
_SKIPPED = ("batches", "energy_batches")
# float64 round-trips through JSON exactly; the slack is for another numpy's
# sums or scipy's t quantile (1e-11 relative between scipy 1.13 and 1.17),
# far below the 3-6 digits a table shows.
_RTOL, _ATOL = 1e-9, 1e-12


@dataclasses.dataclass
class Findings:
  """What `check` found, per folder relative to the root."""
  folders: int = 0
  problems: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  unchecked: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _close(a, b) -> bool:
  if a is None or b is None:
    return a is b
  return bool(np.isclose(a, b, rtol=_RTOL, atol=_ATOL, equal_nan=True))


def _load(path: str, problems: list[str]):
  try:
    with open(path) as f:
      return report.restore(json.load(f))
  except (OSError, ValueError) as e:
    problems.append(f"{os.path.basename(path)}: not readable as JSON ({e})")
    return None


def _read(folder: str, name: str, problems: list[str]) -> str | None:
  """The text of `name` in `folder`; None, and a problem, if it is missing."""
  path = os.path.join(folder, name)
  if not os.path.exists(path):
    problems.append(f"no {name}")
    return None
  with open(path) as f:
    return f.read()


def _walk(x, visit) -> None:
  if isinstance(x, dict):
    visit(x)
    for v in x.values():
      _walk(v, visit)
  elif isinstance(x, list):
    for v in x:
      _walk(v, visit)


def _check_interval(where: str, values: list, mean, half, problems: list[str]) -> None:
  """`mean` ± `half` is what `report.ci95` gives for the per-seed `values`."""
  want_mean, want_half = report.ci95(values)
  if not (_close(want_mean, mean) and _close(want_half, half)):
    problems.append(f"{where} is {mean} ± {half}, its per-seed values give "
                    f"{want_mean} ± {want_half}")


def _check_json(name: str, obj, problems: list[str]) -> None:
  """Per-seed aggregates and confusion-matrix accuracies anywhere in `obj`."""
  def visit(d: dict) -> None:
    for key, values in d.items():
      base = key.removesuffix("_per_seed")
      if base != key and isinstance(values, list) and base in d:
        _check_interval(f"{name}: {base}", values, d[base], d.get(base + "_ci95"),
                        problems)
    if "accuracy" in d and "confusion" in d:
      cm = np.asarray(d["confusion"], float)
      share = np.trace(cm) / cm.sum() if cm.sum() else math.nan
      if not _close(share, d["accuracy"]):
        problems.append(f"{name}: accuracy {d['accuracy']} but its confusion "
                        f"matrix's diagonal holds {share}")
  _walk(obj, visit)


def _first_difference(name: str, held: str, rendered: str) -> str | None:
  a, b = held.splitlines(), rendered.splitlines()
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      return (f"{name} line {i + 1} is {x[:120]!r}; its JSON renders "
              f"{y[:120]!r}")
  if len(a) != len(b):
    return f"{name} has {len(a)} lines; its JSON renders {len(b)}"
  return None


def _check_csv(path: str, rows: list[dict], problems: list[str]) -> None:
  """The CSV's cells are the rows' values, as `report.to_csv` writes them."""
  name = os.path.basename(path)
  with open(path, newline="") as f:
    held = list(csv.DictReader(f))
  rendered = list(csv.DictReader(io.StringIO(report.to_csv(rows))))
  if len(held) != len(rendered):
    problems.append(f"{name}: {len(held)} rows, its JSON {len(rendered)}")
    return
  for cells, want in zip(held, rendered):
    for k in list(want) + [k for k in cells if k not in want]:
      if (cells.get(k) or "") != (want.get(k) or ""):
        problems.append(f"{name}: {want['setting']} {k} is {cells.get(k)!r}, its JSON "
                        f"{want.get(k)!r}")


def _check_sweep(folder: str, sweep: dict, problems: list[str],
                 unchecked: list[str]) -> None:
  rows = sweep.get("rows") or []
  for row in rows:
    for name, values in row.get("per_seed", {}).items():
      _check_interval(f"{report.TABLE}.json: {row['setting']} {name}", values,
                      row.get(name), row.get(name + "_ci95"), problems)
    if row.get("num_seeds") != len(str(row.get("seeds", "")).split()):
      problems.append(f"{report.TABLE}.json: {row['setting']} num_seeds "
                      f"{row.get('num_seeds')} but seeds {row.get('seeds')!r}")
  csv_path = os.path.join(folder, report.TABLE + ".csv")
  if os.path.exists(csv_path):
    _check_csv(csv_path, rows, problems)
  else:
    problems.append(f"no {report.TABLE}.csv (the sweep did not finish, or was copied "
                    "without it)")
  config_path = os.path.join(folder, "config.json")
  if not os.path.exists(config_path):
    unchecked.append(f"the config hash and {report.TABLE}.md: no config.json")
    return
  held = _load(config_path, problems)
  if held is None:
    return
  config = ml_collections.ConfigDict(held["config"])
  digest = configlib.config_hash(config)
  recorded = {held.get("config_hash"), sweep.get("config_hash"),
              *(r.get("config_hash") for r in rows)}
  if recorded != {digest}:
    problems.append(f"config.json's config hashes to {digest}; recorded "
                    f"{sorted(map(str, recorded))}")
  text = _read(folder, report.TABLE + ".md", problems)
  if text is None:
    return
  rendered = report.to_markdown(rows, Schema.from_json(held["schema"]), config, sweep,
                                sweep.get("test_majority_accuracy"))
  differs = _first_difference(report.TABLE + ".md", text, rendered)
  if differs:
    problems.append(differs)


def _check_summary(folder: str, listed: dict, problems: list[str]) -> None:
  """A sweep across data sets: its summary holds the data sets' rows."""
  rows = []
  for name in listed.get("datasets", []):
    # In a run's workdir each data set's folder is inside; in results/, beside.
    place = next((p for p in (os.path.join(folder, name),
                              os.path.join(os.path.dirname(folder), name))
                  if os.path.exists(os.path.join(p, report.TABLE + ".json"))), None)
    if place is None:
      problems.append(f"datasets.json names {name}, whose {report.TABLE}.json is "
                      "neither inside nor beside this folder")
      return
    rows += [dict(r, dataset=name) for r in report.read_rows(place)]
  for name, rendered in ((report.SUMMARY + ".csv", report.to_csv(rows)),
                         (report.SUMMARY + ".md", report.summary_markdown(rows))):
    text = _read(folder, name, problems)
    differs = text is not None and _first_difference(name, text, rendered)
    if differs:
      problems.append(differs + " (from the data sets' own tables)")


def _table(md: str, first: str) -> list[list[str]]:
  """The Markdown table whose header starts with `first`: header, then rows."""
  lines = md.splitlines()
  start = next((i for i, line in enumerate(lines) if line.startswith(f"| {first} |")), None)
  if start is None:
    return []
  out = []
  for line in [lines[start]] + lines[start + 2:]:
    if not line.startswith("|"):
      break
    out.append([c.strip() for c in line.strip().strip("|").split("|")])
  return out


def _check_prior_accuracy(folder: str, result: dict, problems: list[str]) -> None:
  text = _read(folder, "prior_accuracy.md", problems)
  if text is None:
    return
  table = _table(text, "guess")
  if not table:
    problems.append("prior_accuracy.md: no table")
    return
  head, body = table[0], table[1:]
  scores = result["scores"]
  if sorted(r[0] for r in body) != sorted(scores):
    problems.append(f"prior_accuracy.md: rows {sorted(r[0] for r in body)}, its JSON "
                    f"{sorted(scores)}")
  for cells in body:
    sc = scores.get(cells[0])
    for title, cell in zip(head[1:], cells[1:]):
      if sc is None:
        break
      feature, _, kind = title.partition(" (")
      value = (sc["label"]["accuracy"] if title == "label"
               else sc.get("all_correct", math.nan) if title == "all correct"
               else sc["features"].get(feature, {}).get(
                   {"": "accuracy", "MAE, sd)": "mae_std",
                    "within 1/2)": "accuracy_within_half_unit"}.get(kind)))
      want = "missing" if value is None else f"{value:.4f}"
      if cell != want:
        problems.append(f"prior_accuracy.md: {cells[0]} {title} is {cell}, its JSON "
                        f"{want}")


def _check_message_energy(folder: str, result: dict, problems: list[str]) -> None:
  text = _read(folder, "message_energy.md", problems)
  if text is None:
    return
  lines = text.splitlines()
  for r in result["rows"]:
    # The signal's per-seed list is `per_seed`, not `signal_over_c2_per_seed`.
    _check_interval(f"message_energy.json: {r['setting']} epoch {r['epoch']} signal",
                    r["per_seed"], r["signal_over_c2"], r["signal_over_c2_ci95"], problems)
    cell = (f"| {r['setting']} | {r['epoch']} | "
            f"{report.mean_ci(r['signal_over_c2'], r['signal_over_c2_ci95'])} |")
    if not any(line.startswith(cell) for line in lines):
      problems.append(f"message_energy.md: no row {cell!r} (its JSON's)")


def _commits(obj, into: set[str]) -> None:
  def visit(d: dict) -> None:
    if isinstance(d.get("git_commit"), str):
      into.update(d["git_commit"].split("+"))  # a resumed run names each commit
  _walk(obj, visit)


# A short or full commit hash in prose: 7 to 10 or 40 hex digits, with a
# letter and a digit among them (12 hex digits is a config hash).
_NAMED_COMMIT = re.compile(r"(?<![\w./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])"
                           r"([0-9a-f]{7,10}|[0-9a-f]{40})(?![\w])")


def named_commits(text: str) -> dict[str, list[int]]:
  """The commits a README names, each with the lines it is named on."""
  out: dict[str, list[int]] = {}
  for i, line in enumerate(text.splitlines(), 1):
    for m in _NAMED_COMMIT.finditer(line):
      out.setdefault(m.group(1), []).append(i)
  return out


def _check_commits(repo: str, commits: dict[str, set[str]],
                   named: dict[str, dict[str, list[int]]], findings: Findings) -> None:
  """Each recorded commit, and each commit a README names, is one of `repo`."""
  shallow = subprocess.run(["git", "-C", repo, "rev-parse", "--is-shallow-repository"],
                           capture_output=True, text=True)
  if shallow.returncode or shallow.stdout.strip() != "false":
    for folder in dict.fromkeys([*commits, *named]):
      findings.unchecked.setdefault(folder, []).append(
          f"the recorded and named commits: {repo} is not a full git clone")
    return
  wanted = sorted({c for cs in [*commits.values(), *named.values()] for c in cs
                   if c != "unknown" and not c.endswith("-dirty")})
  batch = subprocess.run(["git", "-C", repo, "cat-file", "--batch-check"],
                         input="".join(f"{c}^{{commit}}\n" for c in wanted),
                         capture_output=True, text=True, check=True)
  missing = {c for c, line in zip(wanted, batch.stdout.splitlines())
             if line.endswith(" missing") or " commit " not in line}
  for folder, cs in commits.items():
    for c in sorted(cs):
      why = ("made from uncommitted changes" if c.endswith("-dirty")
             else "no commit was known" if c == "unknown"
             else f"not a commit of {repo}" if c in missing else None)
      if why:
        findings.problems.setdefault(folder, []).append(f"recorded commit {c}: {why}")
  for folder, cs in named.items():
    for c, lines in cs.items():
      if c in missing:
        findings.problems.setdefault(folder, []).append(
            f"README.md line {lines[0]} names commit {c}, not a commit of {repo}")


def _check_folder(folder: str, jsons: list[str], problems: list[str],
                  unchecked: list[str], found: set[str]) -> None:
  for name in jsons:
    obj = _load(os.path.join(folder, name), problems)
    if obj is None:
      continue
    _check_json(name, obj, problems)
    _commits(obj, found)
    if name == report.TABLE + ".json":
      _check_sweep(folder, obj, problems, unchecked)
    elif name == "prior_accuracy.json":
      _check_prior_accuracy(folder, obj, problems)
    elif name == "message_energy.json":
      _check_message_energy(folder, obj, problems)
    elif name == "datasets.json":
      _check_summary(folder, obj, problems)


def check(root: str, repo: str | None = None) -> Findings:
  """Checks every result folder under `root` (module docstring); with `repo`,
  a git checkout, also that every recorded commit, and every commit a
  README.md under `root` names, is one of its commits."""
  findings = Findings()
  commits: dict[str, set[str]] = {}
  named: dict[str, dict[str, list[int]]] = {}
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in _SKIPPED)
    key = os.path.relpath(folder, root)
    if repo is not None and "README.md" in files:
      with open(os.path.join(folder, "README.md")) as f:
        named[key] = named_commits(f.read())
    jsons = sorted(f for f in files if f.endswith(".json"))
    if not jsons:
      continue
    findings.folders += 1
    problems, unchecked, found = [], [], set()
    try:
      _check_folder(folder, jsons, problems, unchecked, found)
    except (KeyError, TypeError, ValueError, AttributeError, SplitjaxError) as e:
      problems.append(f"not a folder splitjax wrote, or damaged: {type(e).__name__}: {e}")
    if problems:
      findings.problems[key] = problems
    if unchecked:
      findings.unchecked[key] = unchecked
    if found:
      commits[key] = found
  if repo is not None:
    _check_commits(repo, commits, named, findings)
  return findings
