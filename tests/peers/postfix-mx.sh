#!/bin/sh
# Starts a private Postfix instance, from the package tests/peers/postfix.sh
# unpacks, as a receiving MX: smtpd on 127.0.0.1:PORT, mail for x.test
# accepted and thrown away by the discard transport, every delivery logged
# to DIR/maillog ("to=<...>, ... status=sent") so a test can count them.
#
#   postfix-mx.sh DIR PORT [MAIN_CF_LINE...]   start; prints PORT when ready
#   postfix-mx.sh --stop DIR                   stop that instance
#
# A `capture` transport keeps each message as Postfix received it, in
# DIR/captured/QUEUEID: a test that needs the bytes adds
# "relay_transport = capture:" (main.cf's last setting wins). The `smtp`
# transport makes it a relay instead ("relay_transport =
# smtp:[127.0.0.1]:PORT"): a smarthost passing the mail on.
#
# Everything lives under DIR (config, queue, data, log): /etc/postfix and
# port 25 are never touched, so it runs beside an installed MTA. Extra
# arguments are appended to main.cf (e.g. "smtpd_recipient_limit = 30").
# Needs root (Postfix's master runs as root and drops to user postfix).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tree=${POSTFIX_TREE:-$here/../../target/peers/postfix}
tree=$(cd "$tree" && pwd)
export LD_LIBRARY_PATH="$tree/usr/lib/postfix"
postfix=$tree/usr/sbin/postfix

if [ "${1:-}" = --stop ]; then
    dir=$(cd "$2" && pwd)
    exec "$postfix" -c "$dir/etc" stop
fi

dir=$1
port=$2
shift 2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# The daemons run as user postfix: the path to the queue must be
# searchable by it (a test's temp dir is 0700).
chmod 755 "$dir"

# The accounts Postfix insists on (mail_owner, setgid_group).
getent group postfix >/dev/null || groupadd --system postfix
getent group postdrop >/dev/null || groupadd --system postdrop
getent passwd postfix >/dev/null ||
    useradd --system -g postfix -d /nonexistent -s /usr/sbin/nologin postfix

mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/captured"
# The pipe transport runs its command as nobody.
chown nobody "$dir/captured"
# master takes its lock in data_directory as mail_owner.
chown postfix:postfix "$dir/data"
chmod 700 "$dir/data"
cat >"$dir/etc/main.cf" <<EOF
compatibility_level = 3.6
config_directory = $dir/etc
queue_directory = $dir/queue
data_directory = $dir/data
command_directory = $tree/usr/sbin
daemon_directory = $tree/usr/lib/postfix/sbin
shlib_directory = $tree/usr/lib/postfix
meta_directory = $tree/etc/postfix
# The daemons find their shared libraries here (their RUNPATH names
# /usr/lib/postfix, which is not installed); master passes on only what
# import_environment lists.
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=$LD_LIBRARY_PATH
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.x.test
mydomain = x.test
myorigin = x.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = x.test
# relay_domains go by relay_transport, anything else by default_transport:
# both throw the mail away, logging status=sent per recipient.
relay_transport = discard:
default_transport = discard:
alias_maps =
alias_database =
biff = no
smtpd_banner = \$myhostname ESMTP Postfix (spoolmail test)
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
EOF
for line in "$@"; do
    printf '%s\n' "$line" >>"$dir/etc/main.cf"
done

# Only the services this instance needs, none chrooted (the chroot would
# need a copy of the libraries and /etc files).
cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:$port inet n -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
capture   unix  -       n       n       -       -       pipe
  user=nobody argv=/usr/bin/tee $dir/captured/\${queue_id}
EOF

"$postfix" -c "$dir/etc" start >"$dir/start.log" 2>&1 || {
    cat "$dir/start.log" >&2
    exit 1
}

# master -w returns once master is up; smtpd's socket is master's, so a
# connection succeeding means the instance takes mail.
i=0
until bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 300 ]; then
        echo "postfix did not listen on 127.0.0.1:$port" >&2
        cat "$dir/maillog" >&2 2>/dev/null || true
        "$postfix" -c "$dir/etc" stop >/dev/null 2>&1 || true  # no stray master
        exit 1
    fi
    sleep 0.1
done
echo "$port"
