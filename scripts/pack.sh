#!/bin/sh
# The npm tarball, carrying the addon prebuilt for this platform:
#   npm run pack [-- OUT_DIR]      (OUT_DIR: default here) prints the tarball's path, alone, on stdout
#
# An install of the tarball compiles nothing when the prebuild loads (package.json's install script: node-gyp-build
# tries native/prebuilds/ only, and compiles from the sources the tarball also carries when none loads, e.g. on
# another architecture or musl). The addon uses N-API alone, so the one prebuild serves every Node >= 20 of this
# platform and libc. dist/ is built into the tarball: installing needs no TypeScript.
#
# Both are built in a copy of the package, so packing never rewrites this tree's dist/ or native/build while tests or
# a daemon are loading them. The copy holds what building needs and what package.json's `files` names: keep them in
# step.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$root}" && cd "${1:-$root}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/package

cd "$root"
mkdir -p "$stage/native"
cp -r package.json README.md bin docs src tsconfig.json tsconfig.build.json "$stage"
cp native/binding.gyp native/*.c native/*.h "$stage/native"
ln -s "$root/node_modules" "$stage/node_modules"

cd "$stage"
# Against this Node's headers, stripped of its symbols. Through npm, as the install script runs, for its config
# (node-gyp's nodedir, or where to download the headers).
npm exec --no -- prebuildify --cwd native --napi --strip --tag-libc --target "$(node -p process.versions.node)" >&2
# prepare builds dist/. npm prints the tarball's name last on stdout, after the scripts' output: that goes to stderr.
npm pack --pack-destination "$out" >"$work/pack.out" || status=$?
head -n -1 "$work/pack.out" >&2
[ "${status:-0}" = 0 ] || exit "$status"
echo "$out/$(tail -1 "$work/pack.out")"
