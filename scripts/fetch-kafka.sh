#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (and their runtime dependencies) from Maven Central into a
# cache folder, for the test harness and scripts/kafka.sh. Idempotent: a complete cache is reused.
#
#   scripts/fetch-kafka.sh [LIBS_DIR]
#
# LIBS_DIR defaults to $DRIFTLINE_KAFKA_LIBS, else ~/.cache/driftline/kafka-4.1.1/libs.
# Needs java (17+) and mvn (Debian: apt-get install -y openjdk-17-jre-headless maven).
set -euo pipefail

KAFKA_VERSION=4.1.1
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
here="$(cd "$(dirname "$0")" && pwd)"
libs="${1:-${DRIFTLINE_KAFKA_LIBS:-$HOME/.cache/driftline/kafka-$KAFKA_VERSION/libs}}"
marker="$libs/.complete"

if [[ -f "$marker" && -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
  echo "kafka $KAFKA_VERSION jars: cached in $libs ($(ls "$libs"/*.jar | wc -l) jars)"
  exit 0
fi
for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch-kafka: '$tool' not found; install it (apt-get install -y openjdk-17-jre-headless maven)" >&2
    exit 1
  fi
done

# Resolve into a sibling temp folder, then move it into place, so an interrupted fetch never
# leaves a half-filled cache that looks complete.
mkdir -p "$(dirname "$libs")"
tmp="$(mktemp -d "$(dirname "$libs")/.libs-fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
if ! mvn -B -q -f "$here/kafka-pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:2.8:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1; then
  echo "fetch-kafka: mvn failed; last lines of its log:" >&2
  tail -n 40 "$tmp/mvn.log" >&2
  exit 1
fi
if [[ ! -f "$tmp/libs/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
  echo "fetch-kafka: mvn finished but kafka_2.13-$KAFKA_VERSION.jar is missing" >&2
  exit 1
fi
touch "$tmp/libs/.complete"
rm -rf "$libs"
mv "$tmp/libs" "$libs"
echo "kafka $KAFKA_VERSION jars: fetched $(ls "$libs"/*.jar | wc -l) jars into $libs in $(( $(date +%s) - start ))s"
