"""Checks that finished results agree with themselves (splitjax/verify.py).

  python scripts/verify_results.py [--root=results] [--check_commits]

Walks every result folder under --root: each table against the per-seed
values in its JSON, each config hash against its config.json, a summary
across data sets against their own tables, and with --check_commits (the
default) each recorded commit against the git history of the checkout
--root lies in. Prints what disagrees, per folder, and what could not be
checked; exits 1 if anything disagrees, 2 on bad input. Writes nothing.
"""

import os
import subprocess

from absl import app, flags

from splitjax import cli, verify

_ROOT = flags.DEFINE_string("root", "results", "A workdir, or a tree of them.")
_COMMITS = flags.DEFINE_bool("check_commits", True, "Check each recorded commit "
                             "against the git checkout that holds --root.")


def main(argv):
  cli.no_arguments(argv)
  root = _ROOT.value
  if not os.path.isdir(root):
    cli.fail(f"--root: no such folder: {root}")
  repo = None
  if _COMMITS.value:
    top = subprocess.run(["git", "-C", root, "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True)
    if top.returncode:
      cli.fail(f"--root: {root} is not inside a git checkout; pass "
               "--nocheck_commits to skip the commit check")
    repo = top.stdout.strip()
  findings = verify.check(root, repo)
  if not findings.folders:
    cli.fail(f"--root: no result folder (no JSON) under {root}")
  for title, table in (("disagrees", findings.problems),
                       ("not checked", findings.unchecked)):
    for folder, lines in table.items():
      for line in lines:
        print(f"{os.path.join(root, folder)}: {title}: {line}")
  count = sum(map(len, findings.problems.values()))
  print(f"{findings.folders} result folders checked under {root}: "
        f"{count} disagreement(s) in {len(findings.problems)} folder(s), "
        f"{sum(map(len, findings.unchecked.values()))} thing(s) not checked")
  if count:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
