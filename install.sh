#!/usr/bin/env bash
# Install bakery on a Debian 12 host: system packages, the binary in /usr/local/bin, the layers
# in /usr/local/share/bakery, shell completions and the man page, and the example package.
# Run as root (directly, or through sudo where it exists).
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (or through sudo)" >&2; exit 2; fi
# A Rust toolchain new enough for rust-version, before anything is installed.
. scripts/rust-env
echo "install.sh: $(cargo --version); installing system packages, then building bakery (a first build takes ~10-15 minutes)" >&2
bash scripts/install-deps
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/bakery/target}
cargo install --quiet --locked --path . --root /usr/local --force
install -d /usr/local/share/bakery
rm -rf /usr/local/share/bakery/provisioners
cp -r provisioners /usr/local/share/bakery/provisioners
rm -rf /usr/local/share/bakery/plugins
install -d /usr/local/share/bakery/plugins
install -m 0755 plugins/notify-webhook plugins/judge-metrics-file /usr/local/share/bakery/plugins/
# Shell completions and man pages, where bash-completion, zsh, fish and man look under /usr/local.
install -d /usr/local/share/bash-completion/completions /usr/local/share/zsh/site-functions \
  /usr/local/share/fish/vendor_completions.d /usr/local/share/man/man1
bakery completions bash > /usr/local/share/bash-completion/completions/bakery
bakery completions zsh > /usr/local/share/zsh/site-functions/_bakery
bakery completions fish > /usr/local/share/fish/vendor_completions.d/bakery.fish
bakery man --dir /usr/local/share/man/man1
examples/hello-tomcat/build.sh >/dev/null
echo "bakery installed: $(command -v bakery) ($(bakery --version))" >&2
bakery doctor >&2 || true
