# shellcheck shell=bash
# What the bash scripts in scripts/ and .ci/ share (they source it, and run with set -euo
# pipefail): Debian packages, loopback ports, stopping what they started, and a private
# Postfix instance relaying to an smtp-sink. It lives here because .ci/ builds on scripts/
# (CI runs scripts/test), never the other way; .ci/lib.sh adds what only the checks need.

# --- Packages ------------------------------------------------------------------------------

apt_updated=""
# The package lists, fetched once per run: a fresh machine has none.
apt_update() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq || return
    apt_updated=1
  fi
}
# Installs Debian packages quietly. Postfix comes with "No configuration": nothing of the
# machine's own mail system is set up, and the scripts write their own configuration.
apt_install() {
  apt_update || return
  case " $* " in
    *" postfix "*)
      echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections ;;
  esac
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
# A command on PATH, or in /usr/sbin (Postfix's commands, off a non-root user's PATH).
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

# --- Ports and processes -------------------------------------------------------------------

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A loopback port nothing listens on, other than the ports given (picked already, for servers
# not started yet). From 20000-31999, below the ephemeral range (32768 and up): no outgoing
# connection takes it before its server binds it. Random, so that runs side by side on the
# machine rarely pick the same one.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    case " $* " in *" $p "*) continue ;; esac
    listening "$p" || { echo "$p"; return 0; }
  done
  echo "no free port found in 20000-31999" >&2
  return 1
}
# Runs COMMAND every 0.1 s until it succeeds (status 0), or gives up after TENTHS tries
# (status 1).
poll() { # tenths, command...
  local tries=$1
  shift
  for _ in $(seq 1 "$tries"); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}
# Waits up to 20 s for a server on 127.0.0.1:PORT.
wait_port() {
  poll 200 listening "$1" || { echo "nothing listens on 127.0.0.1:$1" >&2; return 1; }
}
# Stops the background processes given by PID (empty ones skipped) and reaps them.
stop_pids() {
  local pid
  for pid in "$@"; do
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
# FUNCTION runs on every way out; a signal exits with 128 + its number.
on_exit() {
  # shellcheck disable=SC2064 # the function's name, fixed now
  trap "$1" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# --- A private Postfix ---------------------------------------------------------------------
# Postfix on 127.0.0.1 that relays every message to an smtp-sink: nothing is delivered
# locally, no DNS, 127.0.0.0/8 may relay and send XCLIENT.

# Prints a main.cf relaying to 127.0.0.1:SINK_PORT through MILTER (Postfix's smtpd_milters,
# or ""). Each further "name = value" line replaces the line of that name, or is added:
# Postfix warns at every start about a name given twice, and those warnings can fill
# postlogd's socket.
postfix_main_cf() { # sink port, milter, "name = value"...
  local sink_port=$1 milter=$2
  shift 2
  OVERRIDES="$(printf '%s\n' "$@")" awk '
    function key(line) { sub(/[ \t]*=.*/, "", line); return line }
    BEGIN {
      n = split(ENVIRON["OVERRIDES"], lines, "\n")
      for (i = 1; i <= n; i++)
        if ((k = key(lines[i])) != "") { value[k] = lines[i]; order[++m] = k }
    }
    { k = key($0); if (k in value) { print value[k]; done[k] = 1 } else print }
    END {
      for (i = 1; i <= m; i++)
        if (!(order[i] in done)) { print value[order[i]]; done[order[i]] = 1 }
    }
  ' <<EOF
compatibility_level = 3.6
myhostname = mx.test.example
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relay_domains = test.example transit.example
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.0/8
relayhost = [127.0.0.1]:$sink_port
smtp_dns_support_level = disabled
smtpd_milters = $milter
non_smtpd_milters = \$smtpd_milters
milter_default_action = tempfail
milter_protocol = 6
EOF
}

# Writes a private instance under BASE (absolute): BASE/etc/main.cf and master.cf (smtpd on
# 127.0.0.1:SMTPD_PORT, every service with chroot n), its queue and data directories, and its
# log at BASE/maillog. The machine's Postfix configuration is never read or touched. Called
# again, it rewrites the configuration (Postfix reads it at its next start).
postfix_lab() { # base, smtpd port, sink port, milter, "name = value"...
  local base=$1 smtpd_port=$2
  shift 2
  mkdir -p "$base"/{etc,queue,data}
  # Postfix's master takes its lock in the data directory as user postfix.
  chown postfix:postfix "$base/data"
  postfix_main_cf "$@" "queue_directory = $base/queue" "data_directory = $base/data" \
    "maillog_file_prefixes = $base" "maillog_file = $base/maillog" >"$base/etc/main.cf"
  cat >"$base/etc/master.cf" <<EOF
127.0.0.1:$smtpd_port inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
EOF
}
# Checks and starts the instance under BASE and waits for its smtpd on SMTPD_PORT. Postfix
# tells /dev/log, which may not exist, why it did not start: on failure what it printed
# (BASE/start.log) and the end of BASE/maillog go to stderr.
postfix_lab_start() { # base, smtpd port
  if ! { postfix -c "$1/etc" check && postfix -c "$1/etc" start; } >"$1/start.log" 2>&1 \
    || ! wait_port "$2"; then
    cat "$1/start.log" >&2
    tail -n 20 "$1/maillog" >&2 2>/dev/null || true
    return 1
  fi
}
# Stops the instance under BASE, if one was written there (for cleanup traps).
postfix_lab_stop() {
  if [ -n "$1" ] && [ -f "$1/etc/main.cf" ]; then
    postfix -c "$1/etc" stop >/dev/null 2>&1 || true
  fi
}
# Starts smtp-sink on 127.0.0.1:PORT, each message captured as DIR/msg.*, and waits for it.
# Sets SINK_PID.
smtp_sink_start() { # dir, port
  mkdir -p "$1"
  chown nobody "$1" # smtp-sink -u nobody writes there
  setsid smtp-sink -u nobody -d "$1/msg." "127.0.0.1:$2" 256 </dev/null >/dev/null 2>&1 &
  # shellcheck disable=SC2034 # the caller's, to stop it
  SINK_PID=$!
  wait_port "$2"
}
