#!/usr/bin/env bash
# Build a real MediaMTX binary from source, fetched as an ordinary Go module
# (github.com/bluenviron/mediamtx@<version>) through the Go module proxy, and
# cache it outside the checkout.
#
#   MEDIAMTX=$(tests/support/build-mediamtx.sh | tail -n1)
#   tests/support/build-mediamtx.sh v1.20.1        # or MEDIAMTX_VERSION=v1.20.1
#
# The last line on stdout is the absolute path of the binary; progress goes to
# stderr. A second run with the binary already cached returns immediately
# without touching the network.
#
# Environment:
#   MEDIAMTX_VERSION         release to build (default below; an argument wins)
#   NEUSTREAM_TEST_CACHE     cache root (default /var/cache/neustream-test)
#   GO                       go binary (default: go on PATH, else /usr/local/go/bin/go)
#   NPM                      npm binary (default: npm on PATH)
#
# Versions the Go module proxy served when this was written (others, incl.
# v1.19.0-v1.15.x and v1.20.2+ / v1.21.1+, answered 403 Forbidden):
#   v1.21.0 (default), v1.20.1, v1.20.0, v1.19.3, v1.19.2
# Of these, v1.20.0 and v1.19.2 do not build: the proxy refuses dependency
# versions they pin (github.com/aler9/gosrt pseudo-version; gortmplib v0.4.0).
#
# MediaMTX's `go generate` step downloads hls.min.js (from GitHub) and derives
# VERSION from git; neither is reachable here, so they are supplied instead:
# hls.min.js from the npm package hls.js at the version MediaMTX pins
# (internal/servers/hls/hlsjsdownloader/VERSION), and VERSION from the
# requested version string.
set -euo pipefail

DEFAULT_VERSION=v1.21.0
MODULE=github.com/bluenviron/mediamtx

log() { printf '[build-mediamtx] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

VERSION=${1:-${MEDIAMTX_VERSION:-$DEFAULT_VERSION}}
case $VERSION in
  v*) ;;
  [0-9]*) VERSION=v$VERSION ;;
esac
[[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not an exact release version: $VERSION"

CACHE_ROOT=${NEUSTREAM_TEST_CACHE:-/var/cache/neustream-test}
OUT_DIR=$CACHE_ROOT/mediamtx-$VERSION
BIN=$OUT_DIR/mediamtx

# Fast path: already built.
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi

if [[ -n ${GO:-} ]]; then :
elif command -v go >/dev/null 2>&1; then GO=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
else die "go not found (set GO=/path/to/go)"; fi
NPM=${NPM:-npm}
command -v "$NPM" >/dev/null 2>&1 || die "npm not found (set NPM=/path/to/npm)"

# Go state under the cache so repeated runs reuse downloads; never prompt.
export GOPATH=$CACHE_ROOT/go
export GOMODCACHE=$GOPATH/pkg/mod
export GOCACHE=$GOPATH/build-cache
export GOFLAGS="-buildvcs=false"
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export GIT_TERMINAL_PROMPT=0
export CGO_ENABLED=0
export npm_config_yes=true npm_config_audit=false npm_config_fund=false \
       npm_config_update_notifier=false
mkdir -p "$GOMODCACHE" "$GOCACHE" "$CACHE_ROOT"

# Serialise concurrent runs for the same version.
exec 9>"$CACHE_ROOT/.mediamtx-$VERSION.lock"
flock 9
if [[ -x $BIN ]]; then echo "$BIN"; exit 0; fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/build-mediamtx.XXXXXX")
cleanup() { chmod -R u+w "$TMP" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

start=$(date +%s)
log "fetching $MODULE@$VERSION from the Go module proxy"
# go mod download needs a directory; use the temp dir so no go.mod is found.
if ! (cd "$TMP" && GO111MODULE=on "$GO" mod download -json "$MODULE@$VERSION" >"$TMP/dl.json" 2>"$TMP/dl.err"); then
  cat "$TMP/dl.err" >&2 || true
  grep '"Error"' "$TMP/dl.json" >&2 || true
  die "the module proxy did not serve $MODULE@$VERSION (known served: v1.21.0 v1.20.1 v1.20.0 v1.19.3 v1.19.2)"
fi
MODDIR=$GOMODCACHE/github.com/bluenviron/mediamtx@$VERSION
[[ -f $MODDIR/go.mod ]] || die "module not found at $MODDIR"

# Writable copy of the module (the module cache is read-only).
SRC=$TMP/src
cp -r "$MODDIR" "$SRC"
chmod -R u+w "$SRC"

# 1. VERSION (normally written by `go generate ./internal/core/versiongetter`).
printf '%s' "$VERSION" >"$SRC/internal/core/VERSION"

# 2. hls.min.js (normally downloaded by internal/servers/hls/hlsjsdownloader).
HLS_DIR=$SRC/internal/servers/hls
if grep -q 'go:embed hls.min.js' "$HLS_DIR"/*.go 2>/dev/null && [[ ! -f $HLS_DIR/hls.min.js ]]; then
  HLSJS_VERSION=$(tr -d '[:space:]' <"$HLS_DIR/hlsjsdownloader/VERSION")
  HLSJS_VERSION=${HLSJS_VERSION#v}
  HLSJS_CACHE=$CACHE_ROOT/hls.js-$HLSJS_VERSION/hls.min.js
  if [[ ! -s $HLSJS_CACHE ]]; then
    log "fetching hls.js@$HLSJS_VERSION from the npm registry"
    mkdir -p "$TMP/npm"
    tarball=$(cd "$TMP/npm" && "$NPM" pack --silent --cache "$CACHE_ROOT/npm-cache" \
                "hls.js@$HLSJS_VERSION" 2>"$TMP/npm.err" | tail -n1) \
      || { cat "$TMP/npm.err" >&2; die "npm pack hls.js@$HLSJS_VERSION failed"; }
    tar -xzf "$TMP/npm/$tarball" -C "$TMP/npm" package/dist/hls.min.js
    mkdir -p "$(dirname "$HLSJS_CACHE")"
    cp "$TMP/npm/package/dist/hls.min.js" "$HLSJS_CACHE.tmp"
    mv "$HLSJS_CACHE.tmp" "$HLSJS_CACHE"
  fi
  cp "$HLSJS_CACHE" "$HLS_DIR/hls.min.js"
fi

# 3. Any other //go:embed target that `go generate` would have downloaded and
#    that is missing: only the Raspberry Pi camera helper (arm/arm64 builds).
#    A placeholder keeps those builds compiling; the rpiCamera source will not work.
goarch=$("$GO" env GOARCH)
for d in mtxrpicam_32 mtxrpicam_64; do
  rp=$SRC/internal/staticsources/rpicamera
  if [[ -d $rp && ( $goarch == arm || $goarch == arm64 ) && ! -e $rp/$d ]]; then
    log "WARNING: no $d helper available; rpiCamera source disabled in this build"
    mkdir -p "$rp/$d" && : >"$rp/$d/placeholder"
  fi
done

log "building $VERSION (CGO_ENABLED=0, go $("$GO" env GOVERSION))"
mkdir -p "$OUT_DIR"
(cd "$SRC" && "$GO" build -trimpath -o "$TMP/mediamtx" .) || die "go build failed for $VERSION"
mv "$TMP/mediamtx" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
log "built $BIN in $(( $(date +%s) - start ))s"
echo "$BIN"
