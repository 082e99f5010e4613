#!/bin/sh
# quickstart.sh -- on a Debian machine, as root: build the spoolmail
# package from this tree, install it (it replaces any installed MTA:
# apt removes exim4, postfix, ...), and send a first message to root,
# which the background runner delivers to /var/mail/root with no
# configuration at all.
#
# Usage: sh packaging/quickstart.sh [--yes]
# On a terminal it names the MTA it would replace and asks first; --yes
# (or no terminal) goes ahead.
#
# Needs apt (for debhelper, libssl-dev, pkg-config) and a Rust toolchain
# (>= 1.85: cargo on PATH, or rustup's in ~/.cargo/bin).
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

yes=no
for arg in "$@"; do
    case $arg in
    --yes | -y) yes=yes ;;
    *)
        echo "usage: sh packaging/quickstart.sh [--yes]" >&2
        exit 64
        ;;
    esac
done

# What is /usr/sbin/sendmail now: the package apt will remove.
current=$(dpkg-query -S "$(realpath /usr/sbin/sendmail 2>/dev/null || echo /usr/sbin/sendmail)" \
    2>/dev/null | cut -d: -f1 || true)
case $current in
"" | spoolmail) ;;
*)
    echo "quickstart: this makes spoolmail the MTA: apt removes $current (its" \
        "delivery stops), and a test message goes to root."
    if [ "$yes" != yes ] && [ -t 0 ]; then
        printf 'Replace %s with spoolmail? [y/N] ' "$current"
        read -r answer
        case $answer in
        y | Y | yes) ;;
        *)
            echo "quickstart: nothing changed" >&2
            exit 1
            ;;
        esac
    fi
    ;;
esac

# sudo's secure_path hides rustup's cargo: look where rustup puts it.
if ! command -v cargo >/dev/null 2>&1; then
    for home in "${HOME:-/root}" /root "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)"; do
        if [ -x "$home/.cargo/bin/cargo" ]; then
            PATH="$home/.cargo/bin:$PATH"
            export PATH
            break
        fi
    done
fi
command -v cargo >/dev/null 2>&1 || {
    echo "quickstart: no cargo: install Rust first (https://rustup.rs)" >&2
    exit 69
}

apt-get update -qq
apt-get install -y -qq --no-install-recommends debhelper libssl-dev pkg-config >/dev/null
log=$(mktemp)
dpkg-buildpackage -b -us -uc >"$log" 2>&1 || { tail -40 "$log"; exit 1; }
rm -f "$log"
deb="../spoolmail_$(dpkg-parsechangelog -S Version)_$(dpkg --print-architecture).deb"
apt-get install -y -qq "$(realpath "$deb")" >/dev/null

marker="spoolmail works $(date +%s)"
printf 'Subject: %s\n\nHello from spoolmail on %s.\n' "$marker" "$(hostname)" | /usr/sbin/sendmail root
# The runner delivers in the background: wait for it (up to 30 s).
i=0
until grep -q "$marker" /var/mail/root 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 300 ]; then
        echo "quickstart: not in /var/mail/root yet; the queue says:" >&2
        mailq >&2
        exit 75
    fi
    sleep 0.1
done
echo "quickstart: spoolmail is /usr/sbin/sendmail; the first message is in /var/mail/root:"
grep -A 20 "^Subject: $marker" /var/mail/root
