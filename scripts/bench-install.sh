#!/bin/sh
# Figures of the installer and the node agent (see test/cmd/installbench):
# re-insertion latency after a primary's rewrite, installer CPU while
# nothing changes, agent RSS. Runs in throw-away dirs; no root needed beyond
# reading the node for the agent's scans.
set -eu
cd "$(dirname "$0")/.."
exec bin/test/installbench -leakguardctl bin/leakguardctl "$@"
