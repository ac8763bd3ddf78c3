#!/usr/bin/env bash
# Formats every C++ file of the tree with the checked-in .clang-format, or checks that they are.
#   scripts/format.sh            rewrite in place
#   scripts/format.sh --check    list the files that differ; exit 1 if any (a ctest case runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
mapfile -t files < <(git ls-files -- '*.cc' '*.h' 2>/dev/null || find common spec server worker cli tests bench -name '*.cc' -o -name '*.h')
if [ "${1:-}" = "--check" ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! "$CLANG_FORMAT" --dry-run -Werror "$f" > /dev/null 2>&1; then
      echo "not formatted: $f"
      bad=1
    fi
  done
  if [ "$bad" -eq 0 ]; then echo "format: ${#files[@]} files formatted"; fi
  exit "$bad"
fi
"$CLANG_FORMAT" -i "${files[@]}"
