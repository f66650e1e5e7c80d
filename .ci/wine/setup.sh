#!/usr/bin/env bash
# Makes this machine run Windows test binaries under Wine: installs Wine and
# the mingw-w64 compiler if they are missing (apt-get, as root), builds the
# ProcessPrng shim (processprng.c) and puts it in the Wine prefix's system32.
# Idempotent. Prints the WINEPREFIX to use; run binaries with
#
#	WINEPREFIX=... WINEDLLOVERRIDES=bcryptprimitives=n WINEDEBUG=-all wine x.exe
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export WINEPREFIX="${WINEPREFIX:-$HOME/.wine-iocp}"
export WINEDEBUG=-all

if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq wine64 gcc-mingw-w64-x86-64 >&2
fi

if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
	wineboot -i >&2 2>/dev/null
	wineserver -w || true
fi

dll="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
tmp="$(mktemp -d)"
x86_64-w64-mingw32-gcc -shared -O2 -o "$tmp/bcryptprimitives.dll" "$here/processprng.c" -ladvapi32
cp "$tmp/bcryptprimitives.dll" "$dll"
rm -rf "$tmp"
echo "$WINEPREFIX"
