#!/usr/bin/env bash
# Runs the Windows test binaries of the packages given (default: all that
# have tests) under Wine, after setup.sh has prepared this machine. Extra
# arguments after -- go to every test binary, e.g. -- -test.v.
set -euo pipefail
cd "$(dirname "$0")/../.."
export WINEPREFIX="$(.ci/wine/setup.sh)"
export WINEDLLOVERRIDES=bcryptprimitives=n WINEDEBUG=-all

pkgs=() args=()
while [ $# -gt 0 ]; do
	if [ "$1" = -- ]; then shift; args=("$@"); break; fi
	pkgs+=("$1"); shift
done
[ ${#pkgs[@]} -gt 0 ] || mapfile -t pkgs < <(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./...)

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for pkg in "${pkgs[@]}"; do
	exe="$out/$(basename "$pkg").test.exe"
	GOOS=windows GOARCH=amd64 go test -c -o "$exe" "$pkg"
	echo "wine: $pkg"
	# The binary runs in its package's directory, as go test runs it.
	(cd "$(go list -f '{{.Dir}}' "$pkg")" && timeout 1200 wine "$exe" -test.count=1 "${args[@]}")
done
