#!/usr/bin/env bash
# Syntax-checks the darwin branches of native/ on Linux: a scratch copy with
# every Linux-only preprocessor branch forced off (SOCK_CLOEXEC, MSG_NOSIGNAL,
# MSG_CMSG_CLOEXEC, __linux__) and the __APPLE__ ones on, compiled with
# -fsyntax-only against glibc plus a shim for the few darwin-only names
# (getpeereid, SOL_LOCAL, LOCAL_PEERPID). It catches a missing include or a
# typo in code no Linux build compiles; it is no substitute for a macOS build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root"/native/*.cc "$root"/native/*.h "$work/"
sed -i -e 's/^#ifdef \(SOCK_CLOEXEC\|MSG_NOSIGNAL\|MSG_CMSG_CLOEXEC\)$/#if 0/' \
  -e 's/^#ifndef MSG_CMSG_CLOEXEC$/#if 1/' \
  -e 's/^#if defined(__linux__)$/#if 0/' \
  -e 's/^#elif defined(__APPLE__)$/#elif 1/' "$work"/*.cc "$work"/*.h
cat > "$work/darwin-shim.h" <<'SHIM'
#include <sys/types.h>
#define SOL_LOCAL 0
#define LOCAL_PEERPID 0x002
extern "C" int getpeereid(int, uid_t*, gid_t*);
SHIM
nodedir=$(node -p 'require("path").resolve(process.execPath, "..", "..")')
addon_api=$(cd "$root" && node -p 'require("node-addon-api").include_dir')
status=0
for file in "$work"/*.cc; do
  "${CXX:-g++}" -std=c++17 -fsyntax-only -Wall -Wextra -DNAPI_VERSION=8 -DNAPI_DISABLE_CPP_EXCEPTIONS \
    -include "$work/darwin-shim.h" -I"$addon_api" -I"$nodedir/include/node" "$file" || status=1
done
[ $status -eq 0 ] && echo "darwin branches of native/*.cc: syntax OK"
exit $status
