#!/usr/bin/env bash
# Quick start: builds paddock, starts the daemon on the local provider, runs a real task
# end to end against a fresh git repository, streams its logs, shows the result, stops.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

command -v git >/dev/null || { echo "paddock needs git (apt-get install git)" >&2; exit 1; }
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # npm install, not npm ci: this npm writes no lock entries for other platforms' optional
  # packages (buf, bun) and then npm ci refuses the lock it wrote. The lock still pins versions.
  npm install --no-audit --no-fund
fi
npm run --silent build
PADDOCK="$ROOT/dist/paddock"

WORK=$(mktemp -d /tmp/paddock-demo.XXXXXX)
export PADDOCK_DATA_DIR="$WORK/data"
DAEMON=""
cleanup() { [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null; true; }
trap cleanup EXIT

echo "== a repository to work on: $WORK/repo"
git init -q -b main "$WORK/repo"
echo "# demo" > "$WORK/repo/README.md"
git -C "$WORK/repo" add README.md
git -C "$WORK/repo" -c user.name=demo -c user.email=demo@localhost commit -q -m "initial commit"

echo "== paddock serve (data in $PADDOCK_DATA_DIR, log in $WORK/daemon.log)"
"$PADDOCK" serve --listen 127.0.0.1:0 --agent-command "sh $ROOT/scripts/demo-agent.sh" --log-format json >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do [ -S "$PADDOCK_DATA_DIR/paddock.sock" ] && break; sleep 0.1; done
grep -h "listening" "$WORK/daemon.log" | tail -1

echo "== paddock task create"
TASK=$("$PADDOCK" task create --title "Write a greeting" --description "Add GREETING.md saying hello." --repo "$WORK/repo" --json)
TASK_ID=$(printf '%s' "$TASK" | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).id')
"$PADDOCK" task get "$TASK_ID"

echo "== paddock run start --follow"
"$PADDOCK" run start "$TASK_ID" --follow
RUN_ID=$("$PADDOCK" run list --limit 1 --json | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).id')

echo "== paddock run get"
"$PADDOCK" run get "$RUN_ID"

echo "== the agent's work, kept on its branch in the repository"
git -C "$WORK/repo" log --oneline --stat "paddock/$RUN_ID" -1
echo
echo "Everything is in $WORK (the daemon is stopped when this script ends)."
