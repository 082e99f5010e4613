#!/bin/sh
# install.sh -- install a built spoolmail as the system's sendmail.
#
# Installs target/release/spoolmail (build it first with
# `cargo build --release`), the sendmail/mailq/newaliases links, the default
# configuration (never overwriting an existing one), the spool directory and
# the systemd queue-run timer. DESTDIR-aware for packaging; ownership and the
# setgid bit are only set on a live install (DESTDIR empty) run as root.

set -eu

usage() {
    cat <<'EOF'
Usage: [PREFIX=/usr] [DESTDIR=] sh packaging/install.sh [--force] [--help]

Installs spoolmail as the system's sendmail:
  $DESTDIR$PREFIX/sbin/spoolmail           the binary (from target/release/)
  $DESTDIR$PREFIX/sbin/sendmail            -> spoolmail
  $DESTDIR$PREFIX/lib/sendmail             -> ../sbin/spoolmail
  $DESTDIR$PREFIX/bin/mailq                -> ../sbin/spoolmail
  $DESTDIR$PREFIX/bin/newaliases           -> ../sbin/spoolmail
  $DESTDIR/etc/spoolmail/spoolmail.conf    only if absent
  $DESTDIR/var/spool/spoolmail/            0751; tmp queue state hosts corrupt schedule schedule/0 window 0770;
                                           maildrop maildrop-tmp 1733
  $DESTDIR$SYSTEMDUNITDIR/spoolmail-queue.{service,timer}, spoolmail-maildrop.path,
                                           spoolmail-metrics.{service,timer} (not enabled)
  $DESTDIR$PREFIX/lib/tmpfiles.d/spoolmail.conf   the spool, and a daily sweep of tmp/
  $DESTDIR$PREFIX/share/man/man{1,5,8}/    mailq.1 spoolmail.conf.5 sendmail.8 newaliases.8 spoolmail.8

Environment:
  PREFIX          installation prefix (default /usr)
  DESTDIR         staging root for packaging (default empty: the live system)
  BINARY          the binary to install (default target/release/spoolmail)
  SYSTEMDUNITDIR  unit directory (default $PREFIX/lib/systemd/system)

When run as root with DESTDIR empty and a group "mail" present, the spool
tree and the binary are given group mail and the binary is made setgid
(mode 2755), so that unprivileged callers can queue mail.

Options:
  --force   replace an existing sendmail/mailq/newaliases that is not a
            symbolic link (another MTA's files); refused otherwise
  --help    print this help and exit
EOF
}

force=no
for arg in "$@"; do
    case $arg in
    --help | -h)
        usage
        exit 0
        ;;
    --force) force=yes ;;
    *)
        echo "install.sh: unknown argument: $arg (try --help)" >&2
        exit 64
        ;;
    esac
done

PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
SYSTEMDUNITDIR=${SYSTEMDUNITDIR:-$PREFIX/lib/systemd/system}

# The source tree is the parent of this script's directory, wherever we are
# run from.
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
BINARY=${BINARY:-$top/target/release/spoolmail}

if [ ! -f "$BINARY" ] || [ ! -x "$BINARY" ]; then
    echo "install.sh: $BINARY not found; run 'cargo build --release' first" >&2
    exit 66
fi

sbindir=$DESTDIR$PREFIX/sbin
bindir=$DESTDIR$PREFIX/bin
libdir=$DESTDIR$PREFIX/lib
confdir=$DESTDIR/etc/spoolmail
spool=$DESTDIR/var/spool/spoolmail
unitdir=$DESTDIR$SYSTEMDUNITDIR
tmpfilesdir=$DESTDIR$PREFIX/lib/tmpfiles.d
mandir=$DESTDIR$PREFIX/share/man

# link TARGET NAME: make NAME a symbolic link to TARGET, refusing to replace
# a regular file (another MTA) unless --force.
link() {
    if [ -e "$2" ] && [ ! -L "$2" ] && [ "$force" != yes ]; then
        echo "install.sh: $2 exists and is not a symbolic link (another MTA?);" \
            "remove it or use --force" >&2
        exit 73
    fi
    rm -f "$2"
    ln -s "$1" "$2"
}

mkdir -p "$sbindir" "$bindir" "$libdir" "$confdir" "$unitdir" "$tmpfilesdir"

# Copy then rename, so that a running spoolmail never sees a half-written
# binary (and a busy one is replaced rather than written into).
cp "$BINARY" "$sbindir/.spoolmail.new"
chmod 0755 "$sbindir/.spoolmail.new"
mv -f "$sbindir/.spoolmail.new" "$sbindir/spoolmail"

link spoolmail "$sbindir/sendmail"
link ../sbin/spoolmail "$libdir/sendmail"
link ../sbin/spoolmail "$bindir/mailq"
link ../sbin/spoolmail "$bindir/newaliases"

if [ -e "$confdir/spoolmail.conf" ]; then
    echo "install.sh: keeping existing $confdir/spoolmail.conf"
else
    cp "$here/spoolmail.conf" "$confdir/spoolmail.conf"
    chmod 0644 "$confdir/spoolmail.conf"
fi

# The units name /usr/sbin/sendmail and /usr/bin/mailq; follow PREFIX.
cp "$here/spoolmail.tmpfiles" "$tmpfilesdir/spoolmail.conf"
chmod 0644 "$tmpfilesdir/spoolmail.conf"
for unit in spoolmail-queue.service spoolmail-queue.timer spoolmail-maildrop.path \
    spoolmail-metrics.service spoolmail-metrics.timer; do
    sed -e "s|/usr/sbin/|$PREFIX/sbin/|g" -e "s|/usr/bin/mailq|$PREFIX/bin/mailq|g" \
        "$here/$unit" >"$unitdir/$unit"
    chmod 0644 "$unitdir/$unit"
done

# The manual pages (uncompressed: dh_compress compresses the package's).
for page in "$here"/man/*.[158]; do
    section=${page##*.}
    mkdir -p "$mandir/man$section"
    cp "$page" "$mandir/man$section/"
    chmod 0644 "$mandir/man$section/$(basename "$page")"
done

mkdir -p "$spool"
chmod 0751 "$spool"
for sub in tmp queue state hosts corrupt schedule schedule/0 window; do
    mkdir -p "$spool/$sub"
    chmod 0770 "$spool/$sub"
done
mkdir -p "$spool/maildrop" "$spool/maildrop-tmp"
chmod 1733 "$spool/maildrop" "$spool/maildrop-tmp"

have_mail_group() {
    getent group mail >/dev/null 2>&1 || grep -q '^mail:' /etc/group
}

if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && have_mail_group; then
    chgrp -R mail "$spool"
    chmod 1733 "$spool/maildrop" "$spool/maildrop-tmp"
    chgrp mail "$sbindir/spoolmail"
    # After chgrp, which clears the set-group-ID bit.
    chmod 2755 "$sbindir/spoolmail"
elif [ -z "$DESTDIR" ]; then
    echo "install.sh: not root or no group 'mail': binary not setgid;" \
        "only users who can write $spool can queue mail" >&2
fi

# The offline check of the configuration (spoolmail --check-config):
# what would otherwise show only as deferred mail. Its findings are
# printed; they never fail the installation.
if [ -z "$DESTDIR" ]; then
    if ! "$sbindir/spoolmail" -C "$confdir/spoolmail.conf" --check-config; then
        echo "install.sh: the configuration check found the problems above;" \
            "fix them and run 'spoolmail --check-config' again" >&2
    fi
fi

echo "install.sh: installed spoolmail in $sbindir"
