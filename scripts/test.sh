#!/usr/bin/env bash
# Install everything the test suite needs on a Debian machine, then run the whole suite.
#
#   bash scripts/test.sh [pytest args...]
#   bash scripts/test.sh --setup-only        # install only, run no tests
#
# Runs as root (CI) or with sudo; needs no stdin. Every step is idempotent and skips itself when
# its work is already done, so a second run goes straight to the tests. Each step logs its time.
#   1. Debian packages: prometheus, prometheus-alertmanager, chromium, postgresql (+ java, maven)
#   2. pip install -e '.[all]'
#   3. Kafka 4.1.1 jars from Maven Central (scripts/fetch-kafka.sh), cached in ~/.cache/driftline
#   4. helm v3.22.0 built with `go install` into ~/.cache/driftline/bin (put on PATH); when `go` is
#      missing or older than 1.26 (Debian 12 has 1.19), the pinned Go toolchain comes first from the
#      Go module proxy (module golang.org/toolchain, checksum pinned) into ~/.cache/driftline; then
#      the Go harness tests/controllers (Argo Rollouts, Flagger), Go caches in ~/.cache/driftline/go
#   5. python -m pytest, in $DRIFTLINE_TEST_WORKERS processes (default 2, one per core; pytest-xdist,
#      whole files per worker; 1 runs it in this process)
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
  PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
# The machine's Python is pyenv's; a stripped environment may lack its shims on PATH.
if [[ -d "$HOME/.pyenv/shims" && ":$PATH:" != *":$HOME/.pyenv/shims:"* ]]; then
  export PATH="$HOME/.pyenv/shims:$PATH"
fi
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "test.sh: $PYTHON is missing or older than 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
CACHE="${DRIFTLINE_CACHE:-$HOME/.cache/driftline}"
HELM_VERSION=v3.22.0
GO_TOOLCHAIN=go1.26.8   # helm v3.22.0's go.mod needs go >= 1.26
GO_TOOLCHAIN_SHA256_amd64=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
APT_PACKAGES=(prometheus prometheus-alertmanager chromium postgresql)
mkdir -p "$CACHE/bin"
export PATH="$CACHE/bin:$PATH"
# One Go module and build cache for helm, tests/k8s-validate and tests/controllers: the Kubernetes
# modules they share are downloaded and compiled once, and a second run only links.
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}" GOCACHE="${GOCACHE:-$CACHE/go/build}"

t_all=$(date +%s)
step_start=0
step() { step_start=$(date +%s); echo "==> $*"; }
done_step() { echo "    ${1:-done} ($(( $(date +%s) - step_start ))s)"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else echo "test.sh: need root (or sudo) to run: $*" >&2; return 1
  fi
}

# --- 1. Debian packages -----------------------------------------------------------------------
step "Debian packages"
command -v java >/dev/null 2>&1 || APT_PACKAGES+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || APT_PACKAGES+=(maven)
command -v curl >/dev/null 2>&1 || APT_PACKAGES+=(curl ca-certificates)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
  echo "    installing: ${missing[*]}"
  as_root apt-get update -qq
  # postgresql's install script may try to start the system cluster; the tests run their own.
  as_root apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
  done_step "installed"
else
  done_step "already installed"
fi

# --- 2. Python package and its extras ------------------------------------------------------------
step "pip install -e '.[all]'"
stamp="$CACHE/pip-$(printf '%s' "$PWD" | sha256sum | cut -c1-12).stamp"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$PYTHON" scripts/deps_satisfied.py all; then
  done_step "up to date"
else
  "$PYTHON" -m pip install -q --progress-bar off -e '.[all]'
  echo "$want" > "$stamp"
  done_step "installed"
fi

# --- 3. Kafka jars -------------------------------------------------------------------------------
step "Kafka jars"
bash scripts/fetch-kafka.sh | sed 's/^/    /'
done_step

# --- 4. helm -------------------------------------------------------------------------------------
step "helm $HELM_VERSION"
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
go_new_enough() {  # go >= 1.26 on PATH
  local v
  v="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || true)"
  [[ "$v" =~ ^go([0-9]+)\.([0-9]+) ]] || return 1
  (( BASH_REMATCH[1] > 1 || (BASH_REMATCH[1] == 1 && BASH_REMATCH[2] >= 26) ))
}
if ! command -v helm >/dev/null 2>&1 && ! go_new_enough; then
  arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
  godir="$CACHE/$GO_TOOLCHAIN.linux-$arch"
  if [[ ! -x "$godir/bin/go" ]]; then
    sum_var="GO_TOOLCHAIN_SHA256_$arch"
    if [[ -z "${!sum_var:-}" ]]; then
      echo "test.sh: no pinned Go toolchain for $arch; install Go >= 1.26 (https://go.dev/doc/install)" >&2
      exit 1
    fi
    echo "    go missing or older than 1.26: fetching $GO_TOOLCHAIN from the Go module proxy"
    tmpd="$(mktemp -d)"
    mod="golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$arch"
    curl -fsSL --retry 3 -o "$tmpd/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-$arch.zip"
    echo "${!sum_var}  $tmpd/go.zip" | sha256sum -c --quiet -
    "$PYTHON" -m zipfile -e "$tmpd/go.zip" "$tmpd/x"
    chmod +x "$tmpd/x/$mod/bin/"* "$tmpd/x/$mod/pkg/tool/"*/*  # module zips carry no exec bits
    rm -rf "$godir" && mv "$tmpd/x/$mod" "$godir" && rm -rf "$tmpd"
  fi
  export PATH="$godir/bin:$PATH"
fi
# helm, tests/k8s-validate and tests/controllers compile ~1,600 Go packages (Kubernetes, Argo
# Rollouts, Flagger) when the caches are cold: build them in the background while pytest runs the
# rest of the suite (tests/conftest.py runs the tests that need them last, and they wait for this
# job through $DRIFTLINE_GO_BUILDS). A warm cache makes it a few seconds of linking.
command -v go >/dev/null 2>&1 || {
  echo "test.sh: 'go' is not installed; it builds helm (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION) and the Go test harnesses" >&2
  exit 1
}
go_builds() {
  set -e
  local t0; t0=$(date +%s)
  if command -v helm >/dev/null 2>&1; then
    echo "helm present: $(command -v helm)"
  else
    # -X stamps the full version as helm's own release build does (else `helm version` says v3.22).
    GOBIN="$CACHE/bin" CGO_ENABLED=0 GOFLAGS=-mod=mod nice go install \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    echo "helm built into $CACHE/bin ($(( $(date +%s) - t0 ))s)"
  fi
  ( cd tests/k8s-validate && GOTOOLCHAIN=local nice go build -mod=readonly -o "$CACHE/bin/driftline-k8s-validate" . )
  echo "tests/k8s-validate built ($(( $(date +%s) - t0 ))s)"
  ( cd tests/controllers && GOTOOLCHAIN=local nice go build -o "$CACHE/bin/driftline-controllers" . )
  echo "tests/controllers built ($(( $(date +%s) - t0 ))s)"
}
export DRIFTLINE_GO_BUILDS="$CACHE/go-builds.status"
GO_LOG="$CACHE/go-builds.log"
rm -f "$DRIFTLINE_GO_BUILDS"
if [[ "${1:-}" == "--setup-only" ]]; then
  step "Go builds: helm $HELM_VERSION, tests/k8s-validate, tests/controllers"
  go_builds 2>&1 | tee "$GO_LOG" | sed 's/^/    /'
  done_step "built"
else
  step "Go builds in the background: helm $HELM_VERSION, tests/k8s-validate, tests/controllers (log: $GO_LOG)"
  ( set +e; ( go_builds ) > "$GO_LOG" 2>&1; echo $? > "$DRIFTLINE_GO_BUILDS.tmp"; mv "$DRIFTLINE_GO_BUILDS.tmp" "$DRIFTLINE_GO_BUILDS" ) &
  go_pid=$!
  trap 'kill "$go_pid" 2>/dev/null || true' EXIT
  done_step "started"
fi

if [[ "${1:-}" == "--setup-only" ]]; then
  echo "==> setup done in $(( $(date +%s) - t_all ))s"
  exit 0
fi

# --- 5. the suite --------------------------------------------------------------------------------
step "pytest"
set +e
workers="${DRIFTLINE_TEST_WORKERS:-2}"
# most tests wait on real processes (Kafka, PostgreSQL, Prometheus, sidecars): two workers keep both
# cores busy. Whole files go to one worker, so a file's module fixtures (the system fleet) stay one.
parallel=()
[[ "$workers" -gt 1 ]] && parallel=(-n "$workers" --dist loadfile)
"$PYTHON" -m pytest -q -ra -p no:cacheprovider --durations=15 "${parallel[@]}" "$@"
status=$?
set -e
done_step "pytest exit code $status"
if [[ -f "$DRIFTLINE_GO_BUILDS" ]]; then
  echo "==> Go builds (background):"; sed 's/^/    /' "$GO_LOG" | tail -5
fi
echo "==> total $(( $(date +%s) - t_all ))s"
exit "$status"
