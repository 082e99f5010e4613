#!/bin/sh
# Installs, on Debian and as root, what compat/run.py needs before the
# spoolmail package goes in: the tools to build the package (debhelper;
# the Rust toolchain is the one already on the machine) and the callers
# that do not depend on an MTA: PHP's CLI, Symfony Mailer, git send-email
# and cron. bsd-mailx and mutt depend on an MTA: compat/run.py installs
# them once spoolmail is that MTA. Prints nothing on success.
set -eu
export DEBIAN_FRONTEND=noninteractive
need=""
for pkg in debhelper libssl-dev pkg-config php-cli php-symfony-mailer git-email cron; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
