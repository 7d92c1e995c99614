"""Privacy-utility tables and plots of a sweep (SPEC §5).

One row per setting, seeds aggregated as the mean and the half-width of a 95 %
Student-t interval over seeds (nan for one seed). Columns: the setting, test
AUC, accuracy and log-loss, the AUC gain over the server-features-only model of
the same seed, epsilon after training (PLD, RDP, label, total) and mu-GDP, each
attack's accuracy per private feature and the label at the attacked epoch, the
audit ceiling of each, the number of audit violations, and the config hash,
seeds and git commit.

Files: privacy_utility.csv (flat), .json (rows with per-seed values, and
metadata), .md (a utility table and one attack table per attribute), and PNG
plots: auc_vs_epsilon, attack_vs_epsilon, accuracy_over_epochs. From a
finished sweep's JSON, `seed_spread` says how far intervals over a few seeds
can be trusted (scripts/seed_spread.py), and `compare` draws several sweeps
of one data set on one figure (scripts/compare.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile

import ml_collections
import numpy as np
from scipy import stats

from splitjax import workdir as wd
from splitjax.data.schema import Schema
from splitjax.errors import ConfigError, DataError

TABLE = "privacy_utility"
SUMMARY = "summary"  # the table across data sets (sweep.run_datasets)
TRAIN_METRICS = ("test_auc", "test_accuracy", "test_log_loss")
ACCOUNTING = ("epsilon_pld", "epsilon_rdp", "epsilon_label", "epsilon_total", "mu_gdp")
MODEL_ATTACKS = ("exact", "bayes_exact", "gradmatch")
ATTACK_TITLES = {"prior": "prior", "server_model": "server model", "exact": "EXACT",
                 "bayes_exact": "Bayes EXACT", "gradmatch": "optimiser",
                 "label_norm": "label norm", "label_direction": "label direction"}


def ci95(values) -> tuple[float, float]:
  """Mean and the half-width of the 95 % t-interval (nan for n < 2)."""
  v = np.asarray([x for x in values if x is not None], float)
  if v.size == 0:
    return math.nan, math.nan
  if v.size < 2 or not np.all(np.isfinite(v)):
    return float(v.mean()), math.nan
  half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
  return float(v.mean()), float(half)


def targets(schema) -> list[str]:
  return [f.name for f in schema.private] + ["label"]


def attack_epoch(config) -> str:
  return str(max(config.attack.epochs or (config.train.num_epochs,)))


def _entry(attacks: dict, name: str, target: str) -> dict | None:
  m = attacks.get(name)
  if m is None:
    return None
  return m.get("label") if target == "label" else m["features"].get(target)


# A numeric's success rate: the guesses within half a unit of the truth.
WITHIN = "within_half_unit"


def _attack_value(entry: dict | None):
  """Accuracy, or for a numeric feature its MAE in standard deviations."""
  if entry is None:
    return None, None
  if "accuracy" in entry:
    return entry["accuracy"], "acc"
  return entry.get("mae_std"), "mae"


def aggregate(config, schema, settings, records: list[dict], provenance: dict
              ) -> list[dict]:
  """The table rows, in settings order."""
  epoch = attack_epoch(config)
  names = tuple(config.attack.names)
  by_key = {}
  for r in records:
    by_key.setdefault(r["setting"]["key"], []).append(r)
  server_only = {}
  for s in settings:
    if s.defence == "server_only":
      server_only[s.knowledge] = {r["seed"]: r["history"][-1]["test_auc"]
                                  for r in by_key.get(s.key, [])}
  rows = []
  for s in settings:
    recs = sorted(by_key.get(s.key, []), key=lambda r: r["seed"])
    if not recs:
      continue
    mech = recs[0]["mechanism"]
    row = {"dataset": config.data.name, "setting": s.key, "defence": s.defence,
           "knowledge": s.knowledge, "noise_multiplier": mech["noise_multiplier"],
           "target_epsilon": s.target_epsilon, "label_epsilon": s.label_epsilon,
           "clip_norm": mech["clip_norm"], "num_epochs": config.train.num_epochs,
           "attack_epoch": int(epoch), "num_seeds": len(recs),
           "seeds": " ".join(str(r["seed"]) for r in recs)}
    per_seed = {}

    def put(name, values):
      per_seed[name] = values
      row[name], row[name + "_ci95"] = ci95(values)

    for m in TRAIN_METRICS:
      put(m, [r["history"][-1][m] for r in recs])
    so = server_only.get(s.knowledge)
    if so and s.defence != "server_only":
      put("auc_gain", [r["history"][-1]["test_auc"] - so[r["seed"]] for r in recs
                       if r["seed"] in so])
    final = recs[0]["accounting"][-1]
    for m in ACCOUNTING:
      row[m] = final[m]
    for t in targets(schema):
      for a in names:
        values = [_attack_value(_entry(r["attacks"].get(epoch, {}), a, t))[0]
                  for r in recs]
        if any(v is not None for v in values):
          kind = _attack_value(_entry(recs[0]["attacks"][epoch], a, t))[1]
          put(f"{a}/{t}" + ("" if kind == "acc" else "/mae_std"), values)
          if kind == "mae":  # and the rate the audit's ceiling bounds
            put(f"{a}/{t}/{WITHIN}", [(_entry(r["attacks"].get(epoch, {}), a, t) or {})
                                      .get("accuracy_within_half_unit") for r in recs])
      caps = [r["attacks"].get(epoch, {}).get("ceilings", {}).get(t) for r in recs]
      if any(c is not None for c in caps):
        row[f"ceiling/{t}"] = float(np.mean([c for c in caps if c is not None]))
    row["audit_violations"] = sum(len(r["audit_violations"]) for r in recs)
    row["config_hash"] = provenance["config_hash"]
    row["git_commit"] = provenance["git_commit"]
    row["software"] = provenance["software"]
    row["per_seed"] = per_seed
    rows.append(row)
  return rows


def _nan(x) -> float:
  return math.nan if x is None else x


def _num(x) -> str:
  if isinstance(x, float):
    if math.isnan(x):
      return "nan"
    if math.isinf(x):
      return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"
  return str(x)


def to_csv(rows: list[dict]) -> str:
  columns = []
  for r in rows:
    columns += [k for k in r if k != "per_seed" and k not in columns]
  out = io.StringIO()
  w = csv.writer(out, lineterminator="\n")
  w.writerow(columns)
  for r in rows:
    w.writerow([_num(r[c]) if c in r else "" for c in columns])
  return out.getvalue()


def _walk(x, leaf):
  """`leaf` applied to every non-container value of nested dicts and lists."""
  if isinstance(x, dict):
    return {k: _walk(v, leaf) for k, v in x.items()}
  if isinstance(x, list):
    return [_walk(v, leaf) for v in x]
  return leaf(x)


def _jsonable(x):
  """Non-finite floats as 'inf', '-inf', 'nan' (strict JSON has none)."""
  return _walk(x, lambda v: _num(v) if isinstance(v, float) and not math.isfinite(v)
               else v)


def mean_ci(mean: float, half: float, digits: int = 3) -> str:
  """A table cell: 'mean ± half' (the mean alone where half is nan)."""
  if not math.isfinite(mean):
    return _num(mean)
  return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def _cell(row, name, digits=3) -> str:
  if name not in row:
    return ""
  return mean_ci(row[name], row.get(name + "_ci95", math.nan), digits)


def _eps(x) -> str:
  return "∞" if math.isinf(x) else f"{x:.3g}"


# A run whose final test accuracy falls more than this below always
# guessing the test split's most frequent class learned less than a constant
# (one Adult seed at sigma 0.5 with epsilon_label 1 ended at 0.24 against
# 0.76): the tables name it.
MAJORITY_MARGIN = 0.05


def below_majority(rows: list[dict], majority: float) -> list[str]:
  """'<setting> seed <s> (test accuracy <a>)' for each run whose final test
  accuracy is over MAJORITY_MARGIN below `majority`, the test split's most
  frequent class's share: a model worse than that constant guess (heavy
  noise on a small model, or a collapsed training run)."""
  return [f"{r['setting']} seed {seed} (test accuracy {acc:.4f})" for r in rows
          for seed, acc in zip(r["seeds"].split(), r["per_seed"]["test_accuracy"])
          if acc < majority - MAJORITY_MARGIN]


def to_markdown(rows: list[dict], schema, config, provenance: dict,
                majority: float | None = None) -> str:
  """The sweep's Markdown tables; with `majority` (the test split's most
  frequent class's share), a line naming the runs below it, if any."""
  names = tuple(config.attack.names)
  lines = [f"# {config.data.name}: privacy-utility sweep", "",
           f"config {provenance['config_hash']}, commit {provenance['git_commit']}, "
           f"seeds {' '.join(str(s) for s in config.sweep.seeds)}, "
           f"{config.train.num_epochs} epochs, attacks after epoch "
           f"{attack_epoch(config)}, clip norm {config.defence.clip_norm:g}, "
           f"delta {config.defence.delta:g}; {provenance['software']}. "
           "Mean ± 95 % t-interval over seeds.", "",
           "| setting | sigma | eps_label | eps (PLD) | eps (RDP) | eps total "
           "| test AUC | accuracy | AUC gain | audit violations |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['setting']} | {r['noise_multiplier']:g} | {_eps(r['label_epsilon'])} "
        f"| {_eps(r['epsilon_pld'])} | {_eps(r['epsilon_rdp'])} "
        f"| {_eps(r['epsilon_total'])} | {_cell(r, 'test_auc', 4)} "
        f"| {_cell(r, 'test_accuracy', 4)} | {_cell(r, 'auc_gain', 4)} "
        f"| {r['audit_violations']} |")
  below = below_majority(rows, majority) if majority is not None else []
  if below:
    lines += ["", f"Below always guessing the most frequent class ({majority:.4f}) "
              f"by over {MAJORITY_MARGIN:g} in test accuracy: {'; '.join(below)}. "
              "Their figures count in the means."]
  for t in targets(schema):
    cols = [a for a in names if any(f"{a}/{t}" in r or f"{a}/{t}/mae_std" in r
                                    for r in rows)]
    if not cols:
      continue
    numeric = any(f"{a}/{t}/mae_std" in r for a in cols for r in rows)
    # A numeric: its MAE, then the rate within half a unit, which the audit's
    # ceiling bounds.
    tables = ([("MAE (std units)", "/mae_std", False),
               ("rate within half a unit of the truth", f"/{WITHIN}", True)]
              if numeric else [("accuracy", "", True)])
    for title, suffix, capped in tables:
      lines += ["", f"## {t}: attack {title}", "",
                "| setting | " + " | ".join(ATTACK_TITLES[a] for a in cols)
                + (" | audit ceiling |" if capped else " |"),
                "|---" * (len(cols) + 1 + capped) + "|"]
      for r in rows:
        if r["defence"] == "server_only":
          continue
        cells = [_cell(r, f"{a}/{t}{suffix}") for a in cols]
        cap = r.get(f"ceiling/{t}")
        lines.append(f"| {r['setting']} | " + " | ".join(cells) + (
            f" | {'' if cap is None else f'{cap:.3f}'} |" if capped else " |"))
  return "\n".join(lines) + "\n"


def _save(fig, path: str) -> None:
  """Saves a figure atomically."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata={"Software": None})
    wd.publish(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def _styles(rows) -> list[tuple]:
  """(defence, label epsilon or None, line style, legend) of each series: the
  noise settings and label DP alone, label DP on top of the clip alone (its
  epsilon total is inf, so like label DP alone it is drawn at
  epsilon_label), and the noise settings at each label epsilon they are
  combined with."""
  out = [("noise", None, "o-", "cut-layer clip + noise (x: epsilon)"),
         ("label_dp", None, "s--", "label DP (x: epsilon_label)"),
         ("clip+label_dp", None, "P:", "clip alone + label DP (x: epsilon_label)")]
  both = sorted({r["label_epsilon"] for r in rows if r["defence"] == "noise+label_dp"})
  for i, eps in enumerate(both):
    out.append(("noise+label_dp", eps, "^vD<>"[i % 5] + "-.",
                f"clip + noise + label DP {_eps(eps)} (x: epsilon total)"))
  return out


def _log_x(ax) -> None:
  """A log epsilon axis. Where it spans under a decade matplotlib labels
  minor ticks too, in scientific notation ("2x10^1"), and in a narrow panel
  they run into each other; they are written plainly ("20") instead."""
  from matplotlib import ticker
  ax.set_xscale("log")
  ax.xaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))


def _rate(row: dict, attack: str, target: str) -> str:
  """The row's key of an attack's success on a target: its accuracy, or for
  a numeric its rate within half a unit (what the audit bounds)."""
  key = f"{attack}/{target}"
  return key if key in row else f"{key}/{WITHIN}"


def _baselines(ax, rows, target: str) -> None:
  """The prior's and the server model's accuracy on `target` as levels: their
  means over `rows`."""
  for a, ls in (("prior", ":"), ("server_model", "-.")):
    vals = [r[_rate(r, a, target)] for r in rows if _rate(r, a, target) in r]
    if vals:
      ax.axhline(float(np.mean(vals)), color="gray", ls=ls, lw=1, label=ATTACK_TITLES[a])


def _series(rows, defence, label_epsilon=None):
  """Rows of one defence (at one label epsilon) sorted by epsilon (its x
  value: epsilon_label where the cut layer is unbounded, label DP alone or on
  the clip alone, else the total)."""
  key = "epsilon_label" if defence in ("label_dp", "clip+label_dp") else "epsilon_total"
  sel = [r for r in rows if r["defence"] == defence and math.isfinite(r[key])
         and label_epsilon in (None, r["label_epsilon"])]
  return sorted(sel, key=lambda r: r[key]), key


PLOTS = ("auc_vs_epsilon.png", "attack_vs_epsilon.png", "accuracy_over_epochs.png")


def plot(folder: str, rows: list[dict], records: list[dict] | None, schema,
         config) -> None:
  """The sweep's plots (PLOTS) in `folder`. Without `records` (every run's
  record, as in batches/) the plot over epochs is not drawn."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = tuple(config.attack.names)
  none = next((r for r in rows if r["defence"] == "none"), None)
  clip = next((r for r in rows if r["defence"] == "clip"), None)
  so = next((r for r in rows if r["defence"] == "server_only"), None)
  styles = _styles(rows)

  fig, ax = plt.subplots(figsize=(6, 4))
  for defence, label_eps, style, label in styles:
    sel, key = _series(rows, defence, label_eps)
    if sel:
      ax.errorbar([r[key] for r in sel], [r["test_auc"] for r in sel],
                  yerr=[np.nan_to_num(r["test_auc_ci95"]) for r in sel],
                  fmt=style, capsize=3, label=label)
  if none:
    ax.axhline(none["test_auc"], color="k", lw=1, label="no defence")
  if clip:  # epsilon inf: a level, not a point
    ax.axhline(clip["test_auc"], color="k", ls="--", lw=1,
               label="clip alone (epsilon inf)")
  if so:
    ax.axhline(so["test_auc"], color="gray", ls=":", lw=1, label="server features only")
  _log_x(ax)
  ax.set_xlabel("epsilon")
  ax.set_ylabel("test AUC")
  ax.set_title(f"{config.data.name}: utility vs privacy")
  ax.legend(fontsize=8)
  _save(fig, os.path.join(folder, PLOTS[0]))
  plt.close(fig)

  tgts = targets(schema)
  fig, axes = plt.subplots(1, len(tgts), figsize=(3.6 * len(tgts), 3.6), squeeze=False)
  colours = {a: f"C{i}" for i, a in enumerate(names)}
  for ax, t in zip(axes[0], tgts):
    # Label DP protects only the label: its series (alone, on the clip alone
    # and with noise) are drawn on the label panel.
    for defence, label_eps, style, _ in styles:
      if t != "label" and defence != "noise":
        continue
      sel, key = _series(rows, defence, label_eps)
      name = defence if label_eps is None else f"{defence} {_eps(label_eps)}"
      for a in names:
        if a in MODEL_ATTACKS or a.startswith("label_"):
          pts = [(r[key], r[_rate(r, a, t)]) for r in sel if _rate(r, a, t) in r]
          if pts:
            ax.plot(*zip(*pts), style, ms=4, color=colours[a],
                    label=f"{ATTACK_TITLES[a]}, {name}")
      caps = [(r[key], r[f"ceiling/{t}"]) for r in sel if f"ceiling/{t}" in r]
      if caps:
        ax.plot(*zip(*caps), "k" + style[1:], lw=1, alpha=0.5,
                label=f"audit ceiling, {name}")
    _baselines(ax, rows, t)
    _log_x(ax)
    numeric = any(f"{a}/{t}/{WITHIN}" in r for a in names for r in rows)
    ax.set_title(f"{t} (within half a unit)" if numeric else t, fontsize=9)
    ax.set_xlabel("epsilon")
  axes[0, 0].set_ylabel("attack accuracy")
  handles, labels = axes[0, -1].get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", ncol=5, fontsize=7,
             bbox_to_anchor=(0.5, 0.0))
  fig.suptitle(f"{config.data.name}: attack accuracy vs epsilon")
  _save(fig, os.path.join(folder, PLOTS[1]))
  plt.close(fig)

  if none is None or records is None:
    return
  recs = [r for r in records if r["setting"]["key"] == none["setting"]]
  epochs = sorted({int(e) for r in recs for e in r["attacks"]})
  fig, axes = plt.subplots(1, len(tgts) + 1, figsize=(3.2 * (len(tgts) + 1), 3.2),
                           squeeze=False)
  for ax, t in zip(axes[0], tgts):
    kinds = set()
    for a in names:
      got = [[_attack_value(_entry(r["attacks"][str(e)], a, t)) for r in recs]
             for e in epochs]
      kinds |= {k for per_epoch in got for _, k in per_epoch if k}
      ys = [np.mean([_nan(v) for v, _ in per_epoch]) for per_epoch in got]
      if not all(np.isnan(ys)):
        ax.plot(epochs, ys, "o-", ms=4, color=colours[a], label=ATTACK_TITLES[a])
    ax.set_title(f"{t} (MAE, sd)" if "mae" in kinds else t, fontsize=9)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
  axes[0, 0].set_ylabel("attack accuracy (no defence)")
  axes[0, -2].legend(fontsize=7)
  num_epochs = len(recs[0]["history"])
  axes[0, -1].plot(range(1, num_epochs + 1),
                   [np.mean([r["history"][e]["test_auc"] for r in recs])
                    for e in range(num_epochs)], "o-k", ms=4)
  axes[0, -1].set_title("test AUC", fontsize=9)
  axes[0, -1].xaxis.get_major_locator().set_params(integer=True)
  axes[0, -1].set_xlabel("epoch")
  fig.suptitle(f"{config.data.name}: no defence, over training")
  _save(fig, os.path.join(folder, PLOTS[2]))
  plt.close(fig)


def write(folder: str, config, schema, settings, records: list[dict],
          provenance: dict, majority: float | None = None) -> list[dict]:
  """Aggregates and writes the tables (and plots); returns the rows.
  majority: the test split's most frequent class's share, which names the
  runs that did worse (`below_majority`)."""
  rows = aggregate(config, schema, settings, records, provenance)
  if config.sweep.plots:
    plot(folder, rows, records, schema, config)
  wd.write_text(os.path.join(folder, TABLE + ".md"),
                to_markdown(rows, schema, config, provenance, majority))
  extra = {} if majority is None else {
      "test_majority_accuracy": majority,
      "below_majority": below_majority(rows, majority)}
  wd.write_json(os.path.join(folder, TABLE + ".json"),
                _jsonable({"rows": rows, "config_hash": provenance["config_hash"],
                           "git_commit": provenance["git_commit"],
                           "software": provenance["software"],
                           "seeds": list(config.sweep.seeds), **extra}))
  # The CSV last: its presence marks a finished sweep.
  wd.write_text(os.path.join(folder, TABLE + ".csv"), to_csv(rows))
  return rows


# --- Across data sets (sweep.run_datasets) -----------------------------------


def restore(x):
  """Undoes _jsonable: 'inf', '-inf' and 'nan' strings back to floats."""
  return _walk(x, lambda v: float(v) if isinstance(v, str) and v in ("inf", "-inf", "nan")
               else v)


def read_rows(folder: str, flag: str = "--workdir") -> list[dict]:
  """The rows of the finished sweep in `folder` (its privacy_utility.json)."""
  return read_sweep(folder, flag)["rows"]


def summary_markdown(rows: list[dict]) -> str:
  """One table over data sets: utility, epsilon and the label attacks."""
  lines = ["# Privacy-utility sweep across data sets", "",
           "One row per data set and setting; each data set's folder holds its full "
           "tables (every private feature) and plots. Mean ± 95 % t-interval over "
           "seeds; label attacks after the attacked epoch.", "",
           "| data set | setting | eps total | test AUC | AUC gain | label: EXACT "
           "| label: Bayes EXACT | audit violations | config | commit |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['dataset']} | {r['setting']} | {_eps(r['epsilon_total'])} "
        f"| {_cell(r, 'test_auc', 4)} | {_cell(r, 'auc_gain', 4)} "
        f"| {_cell(r, 'exact/label')} | {_cell(r, 'bayes_exact/label')} "
        f"| {r['audit_violations']} | {r['config_hash']} | {r['git_commit']} |")
  return "\n".join(lines) + "\n"


def write_summary(folder: str, rows: list[dict]) -> None:
  """summary.{md,csv} in `folder`; the CSV last, as in `write`."""
  wd.write_text(os.path.join(folder, SUMMARY + ".md"), summary_markdown(rows))
  wd.write_text(os.path.join(folder, SUMMARY + ".csv"), to_csv(rows))


# --- How many seeds (scripts/seed_spread.py) ----------------------------------


def seeds_for(sd: float, half_width: float, most: int = 1000) -> int | None:
  """The fewest seeds (>= 2) whose 95 % t-interval has a half-width of at most
  `half_width`, for a metric whose seed-to-seed standard deviation is `sd`;
  None if more than `most` would be needed."""
  n = np.arange(2, most + 1)
  fits = np.flatnonzero(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n) <= half_width)
  return int(n[fits[0]]) if fits.size else None


def read_sweep(folder: str, flag: str = "--workdir") -> dict:
  """The finished sweep's privacy_utility.json in `folder`, with its rows'
  per-seed values; DataError naming what is missing (and `flag`, the option
  that named `folder`)."""
  path = os.path.join(folder, TABLE + ".json")
  if not os.path.isfile(path):
    hint = (f"; it holds {SUMMARY}.csv, so pass one data set's folder in it"
            if os.path.isfile(os.path.join(folder, SUMMARY + ".csv")) else "")
    raise DataError(f"{flag}: no finished sweep in {folder} (no {TABLE}.json){hint}")
  try:
    with open(path) as f:
      sweep = restore(json.load(f))
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: not readable as JSON: {e}") from None
  rows = sweep.get("rows") if isinstance(sweep, dict) else None
  if not rows or not all(isinstance(r, dict) and "per_seed" in r for r in rows):
    raise DataError(f"{path}: no rows with per-seed values (not a splitjax sweep's table)")
  return sweep


def read_config(folder: str, flag: str = "--workdir"):
  """The config (a ConfigDict) and schema that the finished sweep in `folder`
  recorded in its config.json; DataError naming what is missing (and `flag`)."""
  path = os.path.join(folder, "config.json")
  if not os.path.isfile(path):
    raise DataError(f"{flag}: no config.json in {folder} (the sweep's config "
                    "names the attacks and targets to draw)")
  try:
    with open(path) as f:
      held = json.load(f)
    return ml_collections.ConfigDict(held["config"]), Schema.from_json(held["schema"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DataError(f"{path}: not a sweep's config.json ({type(e).__name__}: {e})") from None


def default_metrics(rows: list[dict]) -> list[str]:
  """Test AUC and every attack's metric, in the table's order."""
  return [k for k in _per_seed_names(rows) if k == "test_auc" or "/" in k]


def _per_seed_names(rows: list[dict]) -> list[str]:
  return list(dict.fromkeys(k for r in rows for k in r["per_seed"]))


def seed_spread(rows: list[dict], metrics: list[str], subset: int) -> list[dict]:
  """Per metric and setting: the mean and 95 % t-interval over all seeds, the
  seed-to-seed standard deviation, and the intervals of the disjoint blocks
  of `subset` consecutive seeds (what a sweep of `subset` seeds would have
  reported), with how many of them miss the all-seeds mean and how many of
  those misses are zero-width: blocks whose seeds agreed exactly, which miss
  any mean they do not equal, however close."""
  seeds = min(len(v) for r in rows for v in r["per_seed"].values())
  if subset > seeds:
    raise ConfigError(f"--subset: blocks of {subset} seeds, but the sweep has {seeds}")
  known = _per_seed_names(rows)
  unknown = [m for m in metrics if m not in known]
  if unknown:
    raise ConfigError(f"--metrics: no per-seed values for {', '.join(unknown)}; the "
                      f"table has {', '.join(known)}")
  out = []
  for m in metrics:
    for r in rows:
      v = r["per_seed"].get(m)
      if v is None or any(x is None or not math.isfinite(x) for x in v):
        continue  # Not attacked in this setting (server-only), or a failed run.
      mean, half = ci95(v)
      starts = range(0, len(v) - subset + 1, subset)
      blocks = [ci95(v[i:i + subset]) for i in starts]
      missing = [abs(bm - mean) > bh for bm, bh in blocks]
      names = str(r.get("seeds", "")).split()
      out.append({"metric": m, "setting": r["setting"], "seeds": len(v), "mean": mean,
                  "half": half, "sd": float(np.std(v, ddof=1)),
                  "blocks": [" ".join(names[i:i + subset]) for i in starts],
                  "block_halves": [h for _, h in blocks],
                  "blocks_missing": sum(missing),
                  "blocks_missing_zero_width": sum(
                      miss and len(set(v[i:i + subset])) == 1
                      for miss, i in zip(missing, starts))})
  return out


def seed_spread_summary(spread: list[dict], subset: int) -> str:
  """One line over every (metric, setting) pair of `seed_spread`."""
  total = sum(len(s["blocks"]) for s in spread)
  missing = sum(s["blocks_missing"] for s in spread)
  zero = sum(s["blocks_missing_zero_width"] for s in spread)
  ratios = [h / s["half"] for s in spread for h in s["block_halves"] if s["half"] > 0]
  return (f"Over all {len(spread)} (metric, setting) pairs: {missing} of {total} "
          f"{subset}-seed intervals miss the all-seeds mean"
          + (f" ({zero} of them zero-width: the block's seeds agreed exactly)"
             if zero else "")
          + (f"; their half-widths range from {min(ratios):.2f}x to {max(ratios):.2f}x "
             f"the all-seeds half-width (median {float(np.median(ratios)):.2f}x)."
             if ratios else "."))


def seed_spread_markdown(sweep: dict, spread: list[dict], subset: int, half_width: float,
                         command: str) -> str:
  rows = sweep["rows"]
  lines = [f"# Seed spread: {rows[0].get('dataset', '?')} sweep", "",
           f"Command: `{command}` (at commit {wd.git_commit()})  ",
           f"Sweep: config {sweep.get('config_hash')}, commit {sweep.get('git_commit')}, "
           f"seeds {' '.join(str(s) for s in sweep.get('seeds', []))}; "
           f"{sweep.get('software', '')}.", "",
           f"Each metric's table gives, per setting, the mean ± 95 % t-interval over all "
           f"seeds, the seed-to-seed standard deviation (SD), the half-widths of the "
           f"intervals that {subset} seeds alone would have reported (disjoint blocks of "
           f"consecutive seeds), how many of those intervals miss the all-seeds mean (a "
           f"zero-width one, from seeds that agreed exactly, misses any mean it does not "
           f"equal), and the seeds an interval of ± {half_width:g} needs at that SD.", "",
           seed_spread_summary(spread, subset)]
  for m in dict.fromkeys(s["metric"] for s in spread):
    part = [s for s in spread if s["metric"] == m]
    lines += ["", f"## {m}", "",
              f"| setting | mean ± 95 % ({part[0]['seeds']} seeds) | SD | half-widths of "
              f"{subset}-seed blocks ({'; '.join(part[0]['blocks'])}) | blocks missing "
              f"the mean | seeds for ± {half_width:g} |", "|---|---|---|---|---|---|"]
    for s in part:
      need = seeds_for(s["sd"], half_width)
      zero = s["blocks_missing_zero_width"]
      lines.append(f"| {s['setting']} | {s['mean']:.4f} ± {s['half']:.4f} | {s['sd']:.4f} "
                   f"| {', '.join(f'{h:.4f}' for h in s['block_halves'])} "
                   f"| {s['blocks_missing']}/{len(s['blocks'])}"
                   f"{f' ({zero} zero-width)' if zero else ''} "
                   f"| {need if need is not None else '> 1000'} |")
  return "\n".join(lines) + "\n"


def prior_accuracy_markdown(result: dict) -> str:
  """`prior_accuracy`'s table: a row per guess, a column per private
  categorical, two per numeric (its MAE in standard deviations and its rate
  within half a unit), the label and the all-correct rate."""
  scores = result["scores"]
  features = next(iter(scores.values()))["features"]
  names = list(features)
  numeric = {f for f in names if "mae_std" in features[f]}
  head = ["guess", *[h for f in names for h in (
      (f"{f} (MAE, sd)", f"{f} (within 1/2)") if f in numeric else (f,))], "label",
          "all correct"]
  lines = ([f"Command: `{result['command']}`", ""] if "command" in result else []) + [
      f"Accuracy on the {result['num_targets']} target records with no release "
      f"(config {result['config_hash']}, commit {result['git_commit']}; "
      f"{result['software']}). 'bayes/<prior>': each categorical's marginal MAP "
      "and each numeric's marginal median (MAE) and fullest half-unit window "
      "(within 1/2: within half a unit of the truth) under that "
      "attack.bayes.prior, all correct (categoricals and the label) by its MAP "
      "candidate.", "",
      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for guess, sc in scores.items():
    cells = [f"{sc['features'][f][key]:.4f}" for f in names for key in (
        ("mae_std", "accuracy_within_half_unit") if f in numeric else ("accuracy",))]
    cells += [f"{sc['label']['accuracy']:.4f}", f"{sc.get('all_correct', float('nan')):.4f}"]
    lines.append(f"| {guess} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


# --- Several sweeps on one figure (scripts/compare.py) ------------------------


def compare(workdirs: list[str], names: list[str], out: str,
            attack: str = "bayes_exact") -> None:
  """One figure (compare_plot) of the finished sweeps in `workdirs`, of one
  data set and schema, named `names`, in `out` (a .png)."""
  if len(names) != len(workdirs):
    raise ConfigError(f"--names: {len(names)} names for {len(workdirs)} workdirs")
  sweeps, held = [], []
  for w, name in zip(workdirs, names):
    rows = read_rows(w, "--workdirs")
    config, schema = read_config(w, "--workdirs")
    held.append((w, config.data.name, schema))
    sweeps.append((name, rows))
  if len({h[1] for h in held}) > 1:
    raise DataError("--workdirs: sweeps of different data sets ("
                    + ", ".join(f"{w}: {d}" for w, d, _ in held) + "); compare one data set's")
  if any(h[2] != held[0][2] for h in held):  # Schema is a frozen dataclass.
    raise DataError("--workdirs: sweeps of different private features; compare "
                    "sweeps with the same schema")
  key = f"{attack}/label"
  if not any(k.startswith(key) for _, rows in sweeps for r in rows for k in r):
    raise ConfigError(f"--attack: no sweep here ran {attack!r} (its rows have no {key})")
  compare_plot(out, sweeps, held[0][2], held[0][1], attack)


def compare_plot(path: str, sweeps: list[tuple[str, list[dict]]], schema,
                 dataset: str, attack: str = "bayes_exact") -> None:
  """One figure of several sweeps of one data set (e.g. one per clip norm):
  test AUC vs epsilon, `attack`'s accuracy vs epsilon per target, and the
  trade-off, test AUC against the attack's accuracy on the label. A sweep is
  (name, rows); its series is its cut-layer noise rows (the defence whose
  epsilon is the same function of sigma in each), its clip alone and its
  undefended row are points on the trade-off panel. The prior, the server
  model and the server-only AUC are levels: means over the sweeps' rows."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import ticker

  tgts = targets(schema)
  rows_all = [r for _, rows in sweeps for r in rows]
  fig, axes = plt.subplots(1, len(tgts) + 2, figsize=(3.6 * (len(tgts) + 2), 3.8),
                           squeeze=False, gridspec_kw=dict(wspace=0.4))
  auc_ax, frontier = axes[0, 0], axes[0, -1]
  for i, (name, rows) in enumerate(sweeps):
    colour = f"C{i}"
    sel, key = _series(rows, "noise")
    auc_ax.errorbar([r[key] for r in sel], [r["test_auc"] for r in sel],
                    yerr=[np.nan_to_num(r["test_auc_ci95"]) for r in sel],
                    fmt="o-", ms=4, capsize=3, color=colour, label=name)
    for ax, t in zip(axes[0, 1:-1], tgts):
      pts = [(r[key], r[_rate(r, attack, t)]) for r in sel if _rate(r, attack, t) in r]
      if pts:
        ax.plot(*zip(*pts), "o-", ms=4, color=colour)
    leak = f"{attack}/label"
    pts = [(r[leak], r["test_auc"]) for r in sel if leak in r]
    if pts:
      frontier.plot(*zip(*pts), "o-", ms=4, color=colour, label=f"{name}, noise")
    # The undefended model is one black star per sweep (one point where only
    # the clip differs between them).
    for defence, marker, what in (("clip", "s", "clip alone"), ("none", "*", "no defence")):
      row = next((r for r in rows if r["defence"] == defence and leak in r), None)
      if row:
        frontier.plot(row[leak], row["test_auc"], marker, ms=7, mfc="none",
                      color=colour if defence == "clip" else "k",
                      label=f"{name}, {what}" if defence == "clip" else what)
  so = [r["test_auc"] for r in rows_all if r["defence"] == "server_only"]
  if so:
    for ax in (auc_ax, frontier):
      ax.axhline(float(np.mean(so)), color="gray", ls=":", lw=1,
                 label="server features only")
  for ax, t in zip(axes[0, 1:-1], tgts):
    _baselines(ax, rows_all, t)
    ax.set_title(f"{ATTACK_TITLES[attack]}: {t}", fontsize=9)
    lo, hi = ax.get_ylim()  # At least 0.02 tall: not 3e-5 blown up to a panel.
    if hi - lo < 0.02:
      ax.set_ylim((lo + hi) / 2 - 0.01, (lo + hi) / 2 + 0.01)
    if hi - lo < 0.05:  # Ticks of three decimals: four ran into the y label.
      ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
  for ax in axes[0, :-1]:
    _log_x(ax)
    ax.set_xlabel("epsilon")
  auc_ax.set_ylabel("test AUC")
  auc_ax.set_title("utility", fontsize=9)
  axes[0, 1].set_ylabel("attack accuracy")
  frontier.set_xlabel(f"{ATTACK_TITLES[attack]} accuracy on the label")
  frontier.set_ylabel("test AUC")
  frontier.set_title("trade-off (up and left is better)", fontsize=9)
  legend = {}  # Each label once: the frontier's entries, then the baselines.
  for ax in (frontier, axes[0, 1]):
    legend.update((l, h) for h, l in zip(*ax.get_legend_handles_labels()) if l not in legend)
  fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=6, fontsize=7,
             bbox_to_anchor=(0.5, 0.0))
  fig.suptitle(f"{dataset}: {', '.join(n for n, _ in sweeps)}")
  _save(fig, path)
  plt.close(fig)
