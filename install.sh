#!/usr/bin/env bash
# Install bakery on a Debian 12 host: system packages, the binary in $PREFIX/bin, the layers
# in $PREFIX/share/bakery, shell completions and the man page, and the example package.
# Run as root (directly, or through sudo where it exists).
# Env: PREFIX (default /usr/local; bench/run install uses a temporary one), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (or through sudo)" >&2; exit 2; fi
prefix=${PREFIX:-/usr/local}
# A Rust toolchain new enough for rust-version, before anything is installed.
. scripts/rust-env
echo "install.sh: $(cargo --version); installing system packages, then building bakery (a first build takes ~10-15 minutes)" >&2
bash scripts/install-deps
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/bakery/target}
cargo install --quiet --locked --path . --root "$prefix" --force
bakery=$prefix/bin/bakery
install -d "$prefix/share/bakery"
rm -rf "$prefix/share/bakery/provisioners"
cp -r provisioners "$prefix/share/bakery/provisioners"
rm -rf "$prefix/share/bakery/plugins"
install -d "$prefix/share/bakery/plugins"
install -m 0755 plugins/notify-webhook plugins/judge-metrics-file "$prefix/share/bakery/plugins/"
# Shell completions and man pages, where bash-completion, zsh, fish and man look under /usr/local.
install -d "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions" \
  "$prefix/share/fish/vendor_completions.d" "$prefix/share/man/man1"
"$bakery" completions bash > "$prefix/share/bash-completion/completions/bakery"
"$bakery" completions zsh > "$prefix/share/zsh/site-functions/_bakery"
"$bakery" completions fish > "$prefix/share/fish/vendor_completions.d/bakery.fish"
"$bakery" man --dir "$prefix/share/man/man1"
examples/hello-tomcat/build.sh >/dev/null
echo "bakery installed: $bakery ($("$bakery" --version))" >&2
"$bakery" doctor >&2 || true
