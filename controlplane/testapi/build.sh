#!/usr/bin/env bash
# Builds sluice-testapi, a real Kubernetes API server for sluice's tests, and provides etcd.
#
# Fetches from Debian's unstable suite (through a private apt configuration: own sources
# list, state and cache; the system's apt setup is not touched): the Go toolchain, etcd, and
# Kubernetes' server libraries as Go source (golang-k8s-*-dev) with their dependency
# closure. Unpacks them with dpkg-deb -x, generates OpenAPI definitions with openapi-gen,
# and builds the server from ./server in GOPATH mode.
#
# Output (default <repo>/target/testapi, override with SLUICE_TESTAPI_DIR):
#   bin/sluice-testapi   the API server            bin/etcd   etcd (a link into root/)
#   packages.txt         the Debian packages used, with versions
#
# Idempotent: each stage is skipped when its stamp matches its inputs, so a second run with
# everything present takes seconds. Environment:
#   SLUICE_TESTAPI_DIR      cache/output directory
#   SLUICE_TESTAPI_MIRROR   Debian mirror URL (default: found in /etc/apt/sources.list(.d))
#   SLUICE_TESTAPI_KEYRING  keyring that signs the mirror (default: debian-archive-keyring)
#   SLUICE_TESTAPI_SUITE    suite to fetch from (default: unstable)
#   SLUICE_TESTAPI_REFRESH=1  fetch the packages again even if they are present
#   SLUICE_TESTAPI_JOBS     parallel Go build jobs (default 2)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${SLUICE_TESTAPI_DIR:-$repo/target/testapi}
suite=${SLUICE_TESTAPI_SUITE:-unstable}
jobs=${SLUICE_TESTAPI_JOBS:-2}
started=$(date +%s)

step="starting"
say() { echo "build.sh: $*" >&2; }
die() { trap - EXIT; echo "build.sh: FAILED: $*" >&2; exit 1; }
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "build.sh: FAILED during: $step (exit $rc); see the output above" >&2; fi' EXIT

# The packages whose dependency closure is fetched. Every golang-* package in the closure
# is fetched (they are Go source, the build compiles only what it imports), plus etcd-server.
roots="golang-go etcd-server golang-k8s-apiserver-dev golang-k8s-apiextensions-apiserver-dev
golang-k8s-api-dev golang-k8s-client-go-dev golang-k8s-apimachinery-dev golang-k8s-kube-openapi-dev
golang-k8s-component-base-dev golang-k8s-klog-dev"

# The API groups openapi-gen describes (server-side apply needs every served kind's schema).
openapi_pkgs="k8s.io/apimachinery/pkg/apis/meta/v1 k8s.io/apimachinery/pkg/runtime
k8s.io/apimachinery/pkg/version k8s.io/apimachinery/pkg/util/intstr
k8s.io/apimachinery/pkg/api/resource k8s.io/api/core/v1 k8s.io/api/networking/v1
k8s.io/api/apps/v1 k8s.io/api/rbac/v1 k8s.io/api/coordination/v1 k8s.io/api/discovery/v1
k8s.io/api/authentication/v1 k8s.io/api/authorization/v1
k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

for tool in apt-get apt-cache dpkg-deb sha256sum find sort; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (this script needs a Debian host with apt and dpkg)"
done

mkdir -p "$dir"/{stamps,bin}
# One build at a time per directory (tests in several processes may call this at once).
if command -v flock >/dev/null; then
  exec 9>"$dir/.build.lock"
  flock 9
fi
hash_of() { sha256sum | cut -c1-16; }

# ---------------------------------------------------------------- mirror
find_mirror() {
  local f uri
  # deb822 .sources files: a stanza with URIs: .../debian (not -security, -ports, ...)
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk 'tolower($1)=="uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" |
      grep -E '^https?://[^ ]*/debian/?$' | head -n1 || true)
    [ -n "$uri" ] && { echo "${uri%/}"; return; }
  done
  # one-line format
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1=="deb" { print $2 }' |
      grep -E '^https?://[^ ]*/debian/?$' | head -n1 || true)
    [ -n "$uri" ] && { echo "${uri%/}"; return; }
  done
}

step="finding the Debian mirror"
mirror=${SLUICE_TESTAPI_MIRROR:-$(find_mirror)}
[ -n "$mirror" ] || die "no Debian mirror (a URI ending in /debian) in /etc/apt/sources.list or /etc/apt/sources.list.d/; set SLUICE_TESTAPI_MIRROR"
keyring=${SLUICE_TESTAPI_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
[ -f "$keyring" ] || die "keyring $keyring not found (apt-get install debian-archive-keyring, or set SLUICE_TESTAPI_KEYRING)"

# ---------------------------------------------------------------- fetch + unpack
apt_dir=$dir/apt
apt_opts=(
  -o "Dir::Etc=$apt_dir/etc"
  -o "Dir::Etc::sourcelist=$apt_dir/etc/sources.list"
  -o "Dir::Etc::sourceparts=$apt_dir/etc/sources.list.d"
  -o "Dir::Etc::preferencesparts=$apt_dir/etc/preferences.d"
  -o "Dir::State=$apt_dir/state"
  -o "Dir::State::status=$apt_dir/state/status"
  -o "Dir::Cache=$apt_dir/cache"
  -o "APT::Architecture=amd64"
  -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
  -o "Debug::NoLocking=1"
)
fetch_key=$(printf '%s\n' "$mirror" "$suite" "$roots" | hash_of)
root=$dir/root

if [ "${SLUICE_TESTAPI_REFRESH:-0}" = 1 ] || [ "$(cat "$dir/stamps/fetch" 2>/dev/null)" != "$fetch_key" ] ||
   [ ! -d "$root/usr/share/gocode/src/k8s.io/apiserver" ]; then
  step="setting up the private apt configuration ($mirror $suite)"
  rm -f "$dir/stamps/fetch" "$dir/stamps/openapi" "$dir/stamps/build"
  mkdir -p "$apt_dir"/etc/{sources.list.d,preferences.d} "$apt_dir"/state/lists/partial "$apt_dir"/cache/archives/partial
  echo "deb [signed-by=$keyring] $mirror $suite main" > "$apt_dir/etc/sources.list"
  : > "$apt_dir/state/status"
  step="apt-get update ($mirror $suite)"
  say "apt-get update ($mirror $suite, private state in $apt_dir)"
  apt-get "${apt_opts[@]}" -q --error-on=any update >&2 ||
    die "apt-get update of $mirror $suite failed (network down, or the keyring $keyring does not verify it?)"

  step="resolving the dependency closure"
  # shellcheck disable=SC2086
  closure=$(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances $roots |
    grep -v '^ ' | grep -E '^(golang-[a-z0-9.+-]+|etcd-server)$' | sort -u) ||
    die "could not resolve the dependencies of: $(echo $roots)"
  for r in $roots; do
    grep -qx "$r" <<<"$closure" || die "package $r is not in $mirror $suite"
  done
  say "fetching $(wc -l <<<"$closure") packages (Go toolchain, etcd, Kubernetes libraries and their Go dependencies)"

  step="downloading packages"
  debs=$dir/debs
  rm -rf "$debs" && mkdir -p "$debs"
  # shellcheck disable=SC2086
  (cd "$debs" && apt-get "${apt_opts[@]}" -q download $closure >&2) || die "apt-get download failed"

  step="unpacking packages"
  rm -rf "$root" && mkdir -p "$root"
  say "unpacking into $root"
  find "$debs" -name '*.deb' -print0 | xargs -0 -n 8 -P 2 sh -c 'for f; do dpkg-deb -x "$f" "$0" || exit 255; done' "$root" ||
    die "dpkg-deb -x failed"
  for f in "$debs"/*.deb; do dpkg-deb --show --showformat='${Package} ${Version}\n' "$f"; done | sort > "$dir/packages.txt"
  rm -rf "$debs" "$apt_dir/cache/archives"/*.deb
  echo "$fetch_key" > "$dir/stamps/fetch"
else
  say "packages present ($(wc -l < "$dir/packages.txt") from $mirror $suite; SLUICE_TESTAPI_REFRESH=1 fetches again)"
fi

# ---------------------------------------------------------------- Go environment
step="finding the Go toolchain"
goroot=$(find "$root/usr/lib" -maxdepth 1 -name 'go-1.*' -type d | sort -V | tail -n1)
[ -n "$goroot" ] && [ -x "$goroot/bin/go" ] || die "no Go toolchain under $root/usr/lib (golang-go did not unpack?)"
gopath=$dir/gopath
export GOROOT=$goroot
export PATH=$GOROOT/bin:$PATH
export GOPATH=$gopath:$root/usr/share/gocode
export GO111MODULE=off CGO_ENABLED=0 GOFLAGS= GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off
export GOCACHE=$dir/gocache GOMAXPROCS=${GOMAXPROCS:-$jobs}
say "$(go version) (GOPATH mode)"

k8s_version=$(awk '$1=="golang-k8s-apiserver-dev" { print $2 }' "$dir/packages.txt" | sed -e 's/-[^-]*$//' -e 's/^0\./1./')
pkg_dir=$gopath/src/sluice.dev/testapi
mkdir -p "$pkg_dir/openapi"

# ---------------------------------------------------------------- openapi-gen
step="generating OpenAPI definitions (openapi-gen)"
openapi_key=$(printf '%s\n' "$(cat "$dir/stamps/fetch")" "$openapi_pkgs" | hash_of)
if [ "$(cat "$dir/stamps/openapi" 2>/dev/null)" != "$openapi_key" ] || [ ! -s "$pkg_dir/openapi/zz_generated.openapi.go" ]; then
  say "building openapi-gen"
  go build -p "$jobs" -o "$dir/bin/openapi-gen" k8s.io/kube-openapi/cmd/openapi-gen
  say "generating OpenAPI definitions for the served kinds"
  : > "$dir/boilerplate.go.txt"
  rm -f "$pkg_dir/openapi/zz_generated.openapi.go"
  # shellcheck disable=SC2086
  "$dir/bin/openapi-gen" --output-dir "$pkg_dir/openapi" --output-pkg sluice.dev/testapi/openapi \
    --output-file zz_generated.openapi.go --go-header-file "$dir/boilerplate.go.txt" \
    --report-filename "$dir/openapi-api-rule-violations.txt" $openapi_pkgs >&2
  echo "$openapi_key" > "$dir/stamps/openapi"
fi

# ---------------------------------------------------------------- the server
step="building sluice-testapi"
src_key=$( (cat "$dir/stamps/fetch" "$dir/stamps/openapi"; cd "$here/server" && sha256sum ./*.go) | hash_of)
if [ "$(cat "$dir/stamps/build" 2>/dev/null)" != "$src_key" ] || [ ! -x "$dir/bin/sluice-testapi" ]; then
  find "$pkg_dir" -maxdepth 1 -name '*.go' -delete
  cp "$here"/server/*.go "$pkg_dir/"
  say "compiling sluice-testapi (Kubernetes libraries $k8s_version; the first build takes minutes)"
  ldflags="-s -w"
  if [[ "$k8s_version" =~ ^1\.[0-9]+\.[0-9]+$ ]]; then
    # /version reports the libraries' Kubernetes version (they take it from these variables)
    for kv in "gitVersion=v$k8s_version-sluice-testapi" "gitMajor=1" \
              "gitMinor=$(cut -d. -f2 <<<"$k8s_version")" "gitTreeState=clean"; do
      ldflags="$ldflags -X k8s.io/component-base/version.$kv"
    done
  fi
  go build -p "$jobs" -ldflags "$ldflags" -o "$dir/bin/sluice-testapi.new" sluice.dev/testapi
  mv "$dir/bin/sluice-testapi.new" "$dir/bin/sluice-testapi"
  echo "$src_key" > "$dir/stamps/build"
else
  say "sluice-testapi is up to date"
fi

# ---------------------------------------------------------------- etcd
step="linking etcd"
[ -x "$root/usr/bin/etcd" ] || die "etcd not found at $root/usr/bin/etcd (etcd-server did not unpack?)"
ln -sfn ../root/usr/bin/etcd "$dir/bin/etcd"
"$dir/bin/etcd" --version >/dev/null 2>&1 || die "$dir/bin/etcd does not run here ($("$dir/bin/etcd" --version 2>&1 | head -n1))"

step="done"
say "ready in $(( $(date +%s) - started )) s: $dir/bin/sluice-testapi, $dir/bin/etcd ($("$dir/bin/etcd" --version | head -n1))"
