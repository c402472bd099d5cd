"""Fail if installing loranb changed any package that Colab ships: compare `pip freeze` before and after.
usage: python ci/check_unchanged.py CONSTRAINTS BEFORE AFTER"""
import re, sys

def versions(path):
    "name -> version from a pip freeze or constraints file (names normalised as pip does)."
    out = {}
    for line in open(path):
        m = re.match(r'\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)', line)
        if m: out[re.sub(r'[-_.]+', '-', m.group(1)).lower()] = m.group(2)
    return out

pins, before, after = (versions(p) for p in sys.argv[1:4])
changed = [f"{n}: {before.get(n)} -> {after.get(n)}" for n in pins if before.get(n) != after.get(n)]
missing = [n for n in pins if n not in before]
if missing: sys.exit(f"not installed before loranb: {', '.join(missing)}")
if changed: sys.exit("installing loranb changed Colab's packages:\n  " + "\n  ".join(changed))
print(f"installing loranb left all {len(pins)} of Colab's pinned packages as they were")
