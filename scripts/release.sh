#!/usr/bin/env bash
# Builds the release clients into target/dist/: `ferry` for Linux (and `ferry-server`), `ferry.exe`
# for Windows (cross-built with mingw-w64), and `ferry` for macOS when run on a Mac, each named
# ferry-VERSION-TARGET, with SHA256SUMS. Safe to run again.
#
#   scripts/release.sh            # the targets this system can build
#   FERRY_TARGETS="x86_64-unknown-linux-gnu" scripts/release.sh
#
# Needs: Rust (rustup), and for Windows on Linux `gcc-mingw-w64-x86-64` (ring compiles C).
# macOS clients need Apple's SDK (ring and blake3 compile C for the target): build them on a
# Mac, where this script builds x86_64-apple-darwin and aarch64-apple-darwin.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(cargo pkgid -p ferry-client | sed 's/.*[#@]//')
host=$(rustc -vV | sed -n 's/^host: //p')
if [[ -z "${FERRY_TARGETS:-}" ]]; then
  case "$(uname -s)" in
    Linux) FERRY_TARGETS="$host x86_64-pc-windows-gnu" ;;
    Darwin) FERRY_TARGETS="x86_64-apple-darwin aarch64-apple-darwin" ;;
    *) FERRY_TARGETS="$host" ;;
  esac
fi

mkdir -p target/dist
for target in $FERRY_TARGETS; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  exe=""
  [[ "$target" == *windows* ]] && exe=".exe"
  if [[ "$target" == *windows-gnu ]] && ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
    echo "release: $target needs x86_64-w64-mingw32-gcc (apt-get install gcc-mingw-w64-x86-64)" >&2
    exit 1
  fi
  echo "release: building ferry for $target" >&2
  cargo build --release --locked --target "$target" -p ferry-client --bin ferry
  cp "target/$target/release/ferry$exe" "target/dist/ferry-$version-$target$exe"
  # The server is Linux-first: shipped for Linux targets only.
  if [[ "$target" == *linux* ]]; then
    cargo build --release --locked --target "$target" -p ferry-server --bin ferry-server
    cp "target/$target/release/ferry-server" "target/dist/ferry-server-$version-$target"
  fi
done
(cd target/dist && sha256sum -- ferry*-"$version"-* > SHA256SUMS 2>/dev/null || shasum -a 256 -- ferry*-"$version"-* > SHA256SUMS)
ls -l target/dist >&2
