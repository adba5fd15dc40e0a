#!/usr/bin/env bash
# Refresh the vendored xterm.js browser files in static/vendor/.
#
# Run this by hand when bumping a version, then commit the result. Builds and tests never
# need npm: the copied files are checked in, and the page never loads anything from a CDN.
#
# Uses `npm pack` (which verifies each tarball against the registry's integrity hash), so no
# node_modules tree and no install scripts are involved. Copies, byte for byte:
#   @xterm/xterm          lib/xterm.js (UMD, globals: Terminal), css/xterm.css
#   @xterm/addon-fit      lib/addon-fit.js (UMD, global: FitAddon.FitAddon)
#   @xterm/addon-web-links lib/addon-web-links.js (UMD, global: WebLinksAddon.WebLinksAddon)
#   qrcode-generator      qrcode.js (global: qrcode), for the console's share-link QR codes
# plus each package's LICENSE, and writes VERSIONS: one line per copied file,
#   <package name> <version> <sha256 of the file> <file name>
set -euo pipefail

XTERM_VERSION="6.0.0"
FIT_VERSION="0.11.0"
WEBLINKS_VERSION="0.12.0"
QRCODE_VERSION="1.4.4"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "update.sh: npm is required" >&2; exit 1; }

fetch() { # fetch NAME VERSION -> extracts into $work/<NAME without scope>/package
    local name="$1" version="$2" short="${1#*/}"
    mkdir -p "$work/$short"
    (cd "$work/$short" && npm pack --silent "$name@$version" >/dev/null)
    tar -xzf "$work/$short"/*.tgz -C "$work/$short"
    local got
    got="$(node -p 'require(process.argv[1]).version' "$work/$short/package/package.json")"
    if [ "$got" != "$version" ]; then
        echo "update.sh: $name: wanted $version, got $got" >&2
        exit 1
    fi
}

fetch @xterm/xterm "$XTERM_VERSION"
fetch @xterm/addon-fit "$FIT_VERSION"
fetch @xterm/addon-web-links "$WEBLINKS_VERSION"
fetch qrcode-generator "$QRCODE_VERSION"

versions="$work/VERSIONS"
: >"$versions"

copy() { # copy NAME VERSION SRC-INSIDE-PACKAGE DEST-NAME
    local name="$1" version="$2" src="$work/${1#*/}/package/$3" dest="$4"
    if [ ! -s "$src" ]; then
        echo "update.sh: $name@$version does not ship $3" >&2
        exit 1
    fi
    cp "$src" "$here/$dest"
    chmod 0644 "$here/$dest"
    printf '%s %s %s %s\n' "$name" "$version" "$(sha256sum "$here/$dest" | cut -d' ' -f1)" "$dest" >>"$versions"
}

copy @xterm/xterm "$XTERM_VERSION" lib/xterm.js xterm.js
copy @xterm/xterm "$XTERM_VERSION" css/xterm.css xterm.css
copy @xterm/xterm "$XTERM_VERSION" LICENSE LICENSE.xterm
copy @xterm/addon-fit "$FIT_VERSION" lib/addon-fit.js addon-fit.js
copy @xterm/addon-fit "$FIT_VERSION" LICENSE LICENSE.addon-fit
copy @xterm/addon-web-links "$WEBLINKS_VERSION" lib/addon-web-links.js addon-web-links.js
copy @xterm/addon-web-links "$WEBLINKS_VERSION" LICENSE LICENSE.addon-web-links
# qrcode-generator ships no LICENSE file (MIT, stated in qrcode.js's header): LICENSE.qrcode
# is kept by hand.
copy qrcode-generator "$QRCODE_VERSION" qrcode.js qrcode.js

# Sanity checks: the UMD builds must define the globals share.js relies on.
grep -q 'e.Terminal=' "$here/xterm.js" || { echo "update.sh: xterm.js: no Terminal export" >&2; exit 1; }
grep -q 'e.FitAddon=t()' "$here/addon-fit.js" || { echo "update.sh: addon-fit.js: no FitAddon global" >&2; exit 1; }
grep -q 'e.WebLinksAddon=t()' "$here/addon-web-links.js" || { echo "update.sh: addon-web-links.js: no WebLinksAddon global" >&2; exit 1; }

mv "$versions" "$here/VERSIONS"
chmod 0644 "$here/VERSIONS"
echo "vendored into $here:"
cat "$here/VERSIONS"
