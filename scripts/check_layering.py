#!/usr/bin/env python3
"""Checks that every include between bpnas's folders follows the one direction.

    common <- spec <- {server, artifact <- worker/engine} <- {worker, cli}

Each folder is one library. A file may include headers of its own folder and of the folders it
depends on, never of a folder that depends on it or of a sibling. common/, spec/ and server/ must
also stay free of LibTorch. Usage:

    check_layering.py SOURCE_DIR     # exit 1 and one line per violation, 0 when clean
    check_layering.py --self-test    # proves the checker rejects a violation (a ctest case)
"""
import os
import re
import sys
import tempfile

# folder -> the folders its files may include (besides itself). "proto" is the generated
# "bpnas/v1/*.pb.h".
ALLOWED = {
    "common": set(),
    "spec": {"common", "proto"},
    "server": {"common", "spec", "proto"},
    "artifact": {"common", "spec", "proto"},
    "worker/engine": {"common", "spec", "artifact", "proto"},
    "worker": {"common", "spec", "artifact", "worker/engine", "proto"},
    "cli": {"common", "spec", "artifact", "worker/engine", "proto"},
}
TORCH_FREE = {"common", "spec", "server", "artifact"}
TORCH_PREFIXES = ("torch/", "ATen/", "c10/", "caffe2/")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
SOURCE_EXT = (".h", ".cc", ".cpp", ".hpp")


def folder_of_file(rel):
    """The library folder a source path (relative to the root) belongs to, or None."""
    if rel.startswith("worker/engine/"):
        return "worker/engine"
    top = rel.split("/", 1)[0]
    return top if top in ALLOWED else None


def folder_of_include(path):
    if path.startswith("bpnas/v1/"):
        return "proto"
    if path.startswith("worker/engine/"):
        return "worker/engine"
    top = path.split("/", 1)[0]
    return top if top in ALLOWED else None


def check(root):
    violations = []
    for folder in ALLOWED:
        base = os.path.join(root, folder)
        if not os.path.isdir(base):
            continue
        for dirpath, _, files in os.walk(base):
            for name in sorted(files):
                if not name.endswith(SOURCE_EXT):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                owner = folder_of_file(rel)
                if owner != folder:
                    continue  # e.g. worker/engine/ files seen from worker/
                with open(full, encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        kind, path = m.groups()
                        if kind == "<":
                            if owner in TORCH_FREE and path.startswith(TORCH_PREFIXES):
                                violations.append(
                                    f"{rel}:{lineno}: {owner}/ must stay free of LibTorch but "
                                    f"includes <{path}>")
                            continue
                        target = folder_of_include(path)
                        if target is None or target == owner:
                            continue
                        if target not in ALLOWED[owner]:
                            violations.append(
                                f"{rel}:{lineno}: {owner}/ may not include \"{path}\" "
                                f"({target}/ is not below it: common <- spec <- "
                                "{server, artifact <- worker/engine} <- {worker, cli})")
    return violations


def self_test():
    """A tree with one good and three bad includes: the checker must report exactly the bad."""
    with tempfile.TemporaryDirectory() as root:
        files = {
            "spec/a.h": '#include "common/status.h"\n#include "bpnas/v1/spec.pb.h"\n',
            "server/b.cc": '#include "worker/engine/search.h"\n',
            "worker/engine/c.cc": '#include "worker/agent.h"\n',
            "spec/d.cc": "#include <torch/types.h>\n",
        }
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w", encoding="utf-8") as f:
                f.write(text)
        found = sorted(v.split(":", 1)[0] for v in check(root))
        expected = ["server/b.cc", "spec/d.cc", "worker/engine/c.cc"]
        if found != expected:
            print(f"self-test: reported {found}, expected {expected}")
            return 1
    print("self-test: the checker reports every include against the direction, and only those")
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] == "--self-test":
        return self_test()
    if len(argv) != 2 or argv[1].startswith("-"):
        print(__doc__.strip())
        return 2
    violations = check(argv[1])
    for v in violations:
        print(v)
    if violations:
        print(f"{len(violations)} include(s) against the direction")
        return 1
    print("layering: every include follows common <- spec <- {server, artifact <- worker/engine} <- {worker, cli}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
