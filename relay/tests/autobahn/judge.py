"""Judges an Autobahn fuzzingclient report for a relay that does not echo.

A case whose expected behaviour includes receiving its own messages back is
informational (the relay answers ops, it does not echo). Every other case
must be OK, NON-STRICT or INFORMATIONAL, with an OK or INFORMATIONAL close.
Prints the counts and a line per failure; with --table, writes the per-case
Markdown table. Exits 1 when a non-echo case fails.
"""
import argparse
import glob
import json
import os
import sys

PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSE_PASS = {"OK", "INFORMATIONAL"}


def case_key(case):
    return [int(p) for p in case.split(".")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("reports")
    parser.add_argument("--table")
    args = parser.parse_args()
    rows = []
    for path in glob.glob(os.path.join(args.reports, "*.json")):
        if path.endswith("index.json"):
            continue
        with open(path) as f:
            d = json.load(f)
        expected = d.get("expected", {})
        echo = any(any(m[0] == "message" for m in v) for v in expected.values())
        ok = d["behavior"] in PASS and d["behaviorClose"] in CLOSE_PASS
        verdict = "informational (expects an echo)" if echo else ("pass" if ok else "FAIL")
        rows.append((d["id"], d["behavior"], d["behaviorClose"], verdict, d.get("description", "")))
    rows.sort(key=lambda r: case_key(r[0]))
    if not rows:
        print("autobahn: no case reports found", file=sys.stderr)
        return 1
    judged = [r for r in rows if not r[3].startswith("informational")]
    failed = [r for r in judged if r[3] == "FAIL"]
    strict = sum(1 for r in judged if r[1] == "OK" and r[2] == "OK")
    print(
        "autobahn: %d cases; %d without echo: %d passed (%d strictly OK), %d failed; %d expect an echo (informational)"
        % (len(rows), len(judged), len(judged) - len(failed), strict, len(failed), len(rows) - len(judged))
    )
    for r in failed:
        print("  FAIL %s: behavior %s, close %s" % r[:3])
    if args.table:
        with open(args.table, "w") as out:
            out.write("| case | behavior | close | verdict |\n|---|---|---|---|\n")
            for r in rows:
                out.write("| %s | %s | %s | %s |\n" % r[:4])
    print("%d passed, %d failed" % (len(judged) - len(failed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
