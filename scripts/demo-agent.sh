#!/bin/sh
# A scripted stand-in for a coding agent: reads its prompt on stdin, "works" in the
# checked-out repository, and commits. Any CLI agent can take its place (--agent-command).
set -e
read -r title
echo "agent: got the task: $title"
echo "agent: looking around"; ls
sleep 0.3
echo "agent: writing GREETING.md"
printf '# Greeting\n\nHello from paddock run %s.\n\nTask: %s\n' "$PADDOCK_RUN_ID" "$title" > GREETING.md
git add GREETING.md
git -c user.name="paddock demo agent" -c user.email=agent@localhost commit -q -m "Add GREETING.md"
echo "agent: committed $(git rev-parse --short HEAD)"
echo "agent: a warning on stderr, to show both streams" >&2
echo "agent: done"
