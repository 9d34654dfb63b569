#!/usr/bin/env bash
# Run a local single-node Kafka broker (KRaft, 127.0.0.1) for development with Driftline.
#
#   scripts/kafka.sh start [--port 9092]   # prints the bootstrap address, e.g. 127.0.0.1:9092
#   scripts/kafka.sh status
#   scripts/kafka.sh stop
#
# The jars are fetched once with Maven (scripts/fetch-kafka.sh); pid, config, data and log live in
# .cache/kafka/ in the repo (gitignored), so a later start keeps topics and the port.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m tests.harness.kafka "$@"
