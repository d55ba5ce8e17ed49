#!/bin/sh
# Runs inside the image's chroot after the default JRE and tomcat10 are installed.
set -eu

java_home=$(dirname "$(dirname "$(readlink -f /usr/bin/java)")")
test -x "$java_home/bin/java" || { echo "jvm-tomcat: java not found under $java_home" >&2; exit 1; }

# Size the heap from the instance's memory instead of a fixed -Xmx, so one image fits every
# instance type. Written once; an app package may override JAVA_OPTS in /etc/default/tomcat10.
if ! grep -q '^# bakery jvm-tomcat' /etc/default/tomcat10 2>/dev/null; then
  cat >> /etc/default/tomcat10 <<EOT
# bakery jvm-tomcat layer
JAVA_HOME=$java_home
JAVA_OPTS="-Djava.awt.headless=true -XX:MaxRAMPercentage=75 -XX:+ExitOnOutOfMemoryError"
EOT
fi

# Tomcat dates its own access logs but never deletes them; keep two weeks.
mkdir -p /etc/tmpfiles.d
echo 'e /var/log/tomcat10 - - - 14d' > /etc/tmpfiles.d/bakery-tomcat10.conf

# The webapps directory must exist for app packages to drop their WAR or static files into.
install -d -o tomcat -g tomcat /var/lib/tomcat10/webapps
