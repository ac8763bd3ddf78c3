"""One `bpnas search` run of a spec, reused when it already finished from the same spec.

Shared by the experiment scripts that write their own specs (configs.py, knobs.py): the spec is
written to PATH.json, the model to PATH.bpq and the result, with the spec's sha256 and the wall
time, to PATH.result.json.
"""
import hashlib
import json
import subprocess
import sys
import time


def run_cached(binary, spec, path, label):
    """The result of `bpnas search` on `spec` (a dict); exits naming `label` if the run fails."""
    text = json.dumps(spec, indent=2)
    digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        with open(path + ".result.json") as f:
            res = json.load(f)
        if res.get("spec_sha256") == digest:
            return res
    except (OSError, ValueError):
        pass
    with open(path + ".json", "w") as f:
        f.write(text)
    t = time.time()
    r = subprocess.run([binary, "search", "--spec", path + ".json", "--out", path + ".bpq", "--json", "--quiet"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{label} failed:\n{r.stderr[-2000:]}")
    res = json.loads(r.stdout)
    res = res.get("result", res)
    res["spec_sha256"] = digest
    res["wall_seconds"] = time.time() - t
    with open(path + ".result.json", "w") as f:
        json.dump(res, f, indent=2)
    return res
