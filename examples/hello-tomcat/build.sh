#!/bin/sh
# Build the example package next to this script: hello-tomcat_1.0-1_all.deb
set -eu
cd "$(dirname "$0")"
dpkg-deb --build --root-owner-group root hello-tomcat_1.0-1_all.deb >/dev/null
echo "$(pwd)/hello-tomcat_1.0-1_all.deb"
