#!/usr/bin/env bash
# Sets up and passes every check on a fresh machine: install, generated code fresh,
# lint (buf, eslint, tsc), breaking-change check, build the binary, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v git >/dev/null || { echo "paddock tests need git (apt-get install git)" >&2; exit 1; }
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # npm install, not npm ci: this npm writes no lock entries for other platforms' optional
  # packages (buf, bun) and then npm ci refuses the lock it wrote. The lock still pins versions.
  npm install --no-audit --no-fund
fi
export PATH="$PWD/node_modules/.bin:$PATH"

echo "== generated code is fresh (buf generate && git diff)"
buf generate
git diff --exit-code -- src/gen || { echo "src/gen is stale: run npm run generate and commit" >&2; exit 1; }

echo "== lint (buf lint, eslint, tsc)"
buf lint
eslint .
tsc -p .
tsc -p web

echo "== buf breaking (FILE) against the previous commit"
if git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then
  buf breaking --against ".git#ref=HEAD~1"
else
  echo "no previous commit with protos; skipped"
fi

echo "== build dist/paddock"
npm run --silent build

if docker info >/dev/null 2>&1; then
  echo "== sandbox images (for the docker provider's tests)"
  # The agents image too: it is built FROM the sandbox image, so it carries this runner.
  bash scripts/build-images.sh --agents
fi

echo "== tests"
vitest run "$@"
