#!/usr/bin/env bash
# Rebuilds the committed prebuilds from native/: prebuilds/linux-x64 and
# prebuilds/linux-arm64 (glibc; arm64 cross-compiled with g++-aarch64-linux-gnu).
# Builds in a temp copy so the working tree's build/ is never touched.
# Needs: g++, make, python3, g++-aarch64-linux-gnu (Debian/Ubuntu package).
# Run with `npm run build:prebuilds`, after any change to native/ or binding.gyp.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

command -v aarch64-linux-gnu-g++ >/dev/null || {
  echo "prebuilds.sh: aarch64-linux-gnu-g++ is missing; install it: apt-get install g++-aarch64-linux-gnu" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/binding.gyp" "$root/package.json" "$work/"
cp -r "$root/native" "$work/native"
ln -s "$root/node_modules" "$work/node_modules" # binding.gyp asks node-addon-api for its include dir

# Node-API headers are the same for every arch: use this node's when it has them
# (no download), otherwise node-gyp fetches them for this version.
nodedir=$(node -p 'require("path").resolve(process.execPath, "..", "..")')
if [ -f "$nodedir/include/node/node_api.h" ]; then export npm_config_nodedir="$nodedir"; fi

prebuildify=("$root/node_modules/.bin/prebuildify" --napi --strip --tag-libc --target "$(node -p process.versions.node)")

(cd "$work" && "${prebuildify[@]}" --arch x64)
(cd "$work" && CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ \
  AR=aarch64-linux-gnu-ar "${prebuildify[@]}" --arch arm64 --strip-bin aarch64-linux-gnu-strip)

for dir in linux-x64 linux-arm64; do
  rm -rf "${root:?}/prebuilds/$dir"
  mkdir -p "$root/prebuilds/$dir"
  cp "$work/prebuilds/$dir/"*.node "$root/prebuilds/$dir/"
done
file "$root"/prebuilds/*/*.node
