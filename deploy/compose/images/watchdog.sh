#!/bin/sh
# The faxi-watchdog image's entrypoint: on the node that creates the cluster
# (FAXI_INIT=1) and only while its data dir is empty, `faxi-watchdog init`
# first; then the node runs. Every other node starts empty and waits for
# the leader to send it the cluster's state.
set -eu
config=${FAXI_CONFIG:-/etc/faxi-watchdog/node.toml}
data=${FAXI_DATA_DIR:-/var/lib/faxi-watchdog}
if [ "${FAXI_INIT:-0}" = 1 ] && [ -z "$(ls -A "$data" 2>/dev/null)" ]; then
  faxi-watchdog init --config "$config"
fi
exec faxi-watchdog run --config "$config" "$@"
