#!/bin/sh
# systemd-boot.sh -- boot Debian 12 with systemd as PID 1 and the spoolmail
# package installed, and check every kind of delivery under the package's
# hardened units (compat/boot_checks.py: mbox in /var/mail, Maildir,
# .forward command and file in /home, SMTP with STARTTLS and AUTH, the
# maildrop path unit, bounces, the timer with --timer).
#
# Usage (as root, on Debian): sh compat/systemd-boot.sh ../spoolmail_VERSION_ARCH.deb [--timer]
#
# How: debootstrap a minimal bookworm tree once (cached in $SPOOLMAIL_BOOT_DIR,
# default /var/tmp/spoolmail-boot: about 330 MB, a minute to make), copy it,
# install the .deb into the copy with dpkg (the package's own postinst,
# which enables the timer and the path unit), check that a dpkg-statoverride
# of a spool directory survives a reinstall and systemd-tmpfiles, then boot
# the copy with `systemd-nspawn -b` in its own network namespace; a service
# in it runs compat/boot_checks.py after multi-user.target, writes the
# report and powers the container off. Nothing is installed on this
# machine but debootstrap and systemd-container (when missing).
#
# Needs: root, apt (Debian's archive), a kernel that lets systemd-nspawn
# make namespaces. It does not need systemd as this machine's PID 1.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
deb=${1:-}
timer=${2:-}
case $deb in
*.deb) [ -f "$deb" ] || { echo "systemd-boot: $deb: no such file" >&2; exit 66; } ;;
*) echo "usage: sh compat/systemd-boot.sh ../spoolmail_VERSION_ARCH.deb [--timer]" >&2; exit 64 ;;
esac
[ "$(id -u)" = 0 ] || { echo "systemd-boot: SKIP: needs root"; exit 0; }
deb=$(realpath "$deb")
work=${SPOOLMAIL_BOOT_DIR:-/var/tmp/spoolmail-boot}
base=$work/base
tree=$work/tree
mkdir -p "$work"

if ! command -v debootstrap >/dev/null || ! command -v systemd-nspawn >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        debootstrap systemd-container >/dev/null
fi

start=$(date +%s)
if [ ! -e "$base/.complete" ]; then
    rm -rf "$base"
    echo "systemd-boot: debootstrap bookworm into $base"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,python3,python3-aiosmtpd,openssl,ca-certificates,procps \
        bookworm "$base" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log"; exit 1; }
    touch "$base/.complete"
fi

rm -rf "$tree"
cp -a "$base" "$tree"
rm -f "$tree/.complete"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$tree/etc/hosts"
echo spoolmail-boot >"$tree/etc/hostname"
mkdir -p "$tree/root/boot" "$tree/var/log/journal"
cp "$deb" "$tree/root/boot/spoolmail.deb"
cp "$top/tests/peers/smtpd.py" "$here/boot_checks.py" "$tree/root/boot/"

# Run a command in the tree without booting it (no systemd running: the
# postinst enables units but starts nothing).
in_tree() {
    systemd-nspawn --quiet --register=no --keep-unit --private-network -D "$tree" -- "$@"
}

in_tree dpkg -i /root/boot/spoolmail.deb >"$work/dpkg.log" 2>&1 ||
    { cat "$work/dpkg.log"; exit 1; }

# Item: an administrator's statoverride of a spool directory wins over
# postinst and tmpfiles.d, on a reinstall and at every boot.
status=0
in_tree sh -euc '
    d=/var/spool/spoolmail/corrupt
    dpkg-statoverride --update --add root root 0700 $d
    dpkg -i /root/boot/spoolmail.deb >/dev/null 2>&1
    systemd-tmpfiles --create spoolmail.conf
    got=$(stat -c "%a %U:%G" $d)
    spool=$(stat -c "%a %U:%G" /var/spool/spoolmail/queue)
    echo "statoverride: $d is $got after reinstall and systemd-tmpfiles --create (queue/: $spool)"
    [ "$got" = "700 root:root" ] && [ "$spool" = "770 root:mail" ]
' || status=1

# The checks run once the system is up, then power it off.
cat >"$tree/etc/systemd/system/spoolmail-boot-checks.service" <<'EOF'
[Unit]
Description=spoolmail delivery checks under the hardened units
After=multi-user.target spoolmail-queue.timer spoolmail-maildrop.path
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'python3 /root/boot/boot_checks.py /root/boot/smtpd.py $SPOOLMAIL_TIMER >/root/boot/report.txt 2>&1; echo "exit $?" >>/root/boot/report.txt; stat -c "after boot: %%n %%a %%U:%%G" /var/spool/spoolmail/corrupt >>/root/boot/report.txt'
ExecStopPost=/bin/systemctl --no-block poweroff
[Install]
WantedBy=multi-user.target
EOF
if [ "$timer" = --timer ]; then
    mkdir -p "$tree/etc/systemd/system/spoolmail-boot-checks.service.d"
    printf '[Service]\nEnvironment=SPOOLMAIL_TIMER=--timer\n' \
        >"$tree/etc/systemd/system/spoolmail-boot-checks.service.d/timer.conf"
fi
ln -sf /etc/systemd/system/spoolmail-boot-checks.service \
    "$tree/etc/systemd/system/multi-user.target.wants/spoolmail-boot-checks.service"

# SPOOLMAIL_BOOT_CAPS="CAP_SETUID CAP_SETGID ...": try another capability
# set (a drop-in), to find out what the deliveries need.
if [ -n "${SPOOLMAIL_BOOT_CAPS:-}" ]; then
    mkdir -p "$tree/etc/systemd/system/spoolmail-queue.service.d"
    printf '[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=%s\n' "$SPOOLMAIL_BOOT_CAPS" \
        >"$tree/etc/systemd/system/spoolmail-queue.service.d/caps.conf"
    echo "systemd-boot: capabilities: $SPOOLMAIL_BOOT_CAPS"
fi

echo "systemd-boot: booting (systemd-nspawn -b), prepared in $(($(date +%s) - start)) s"
boot_start=$(date +%s)
timeout 900 systemd-nspawn --quiet --register=no --keep-unit --private-network \
    --console=passive -b -D "$tree" >"$work/nspawn.log" 2>&1 || true
echo "systemd-boot: the container ran $(($(date +%s) - boot_start)) s"

if [ ! -s "$tree/root/boot/report.txt" ]; then
    echo "systemd-boot: FAIL: no report; the container's journal ends:" >&2
    journalctl -D "$tree/var/log/journal" --no-pager -n 60 >&2 || cat "$work/nspawn.log" >&2
    exit 1
fi
cat "$tree/root/boot/report.txt"
grep -q '^exit 0$' "$tree/root/boot/report.txt" || status=1
grep -q '^after boot: .* 700 root:root$' "$tree/root/boot/report.txt" || {
    echo "systemd-boot: FAIL: the statoverride did not survive the boot" >&2
    status=1
}
if [ "$status" != 0 ]; then
    echo "systemd-boot: the queue service's journal:" >&2
    journalctl -D "$tree/var/log/journal" --no-pager -o short-monotonic \
        -u spoolmail-queue.service | tail -40 >&2
fi
echo "systemd-boot: $( [ "$status" = 0 ] && echo PASS || echo FAIL ), $(($(date +%s) - start)) s in all"
exit "$status"
