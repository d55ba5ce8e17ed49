#!/usr/bin/env bash
# Install bakery on a Debian 12 host: system packages, the binary in /usr/local/bin, the layers
# in /usr/local/share/bakery, and the example package. Run as root.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install-deps
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/bakery/target}
cargo install --quiet --locked --path . --root /usr/local --force
install -d /usr/local/share/bakery
rm -rf /usr/local/share/bakery/provisioners
cp -r provisioners /usr/local/share/bakery/provisioners
rm -rf /usr/local/share/bakery/plugins
install -d /usr/local/share/bakery/plugins
install -m 0755 plugins/notify-webhook plugins/judge-metrics-file /usr/local/share/bakery/plugins/
examples/hello-tomcat/build.sh >/dev/null
echo "bakery installed: $(command -v bakery) ($(bakery --version))" >&2
bakery doctor >&2 || true
