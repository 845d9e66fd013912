# shellcheck shell=bash
# The checks' bookkeeping, sourced by .ci/package-check and .ci/systemd-check once they have
# set CHECK_NAME: PASS and FAIL lines, every failure repeated at the end (CI may show only the
# tail of the output), the work directory, the package build. Brings scripts/lib.sh along.
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

failures=0
failed=()
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); failed+=("$*"); }
# A failed step that later steps depend on: stop here (the cleanup trap runs).
die() { fail "$*"; exit 1; }
step() { echo "--- $* (at ${SECONDS}s)"; }
# Passes with "WHAT WANT" when GOT is WANT, else fails with "WHAT is GOT, expected WANT".
check_is() { # what, got, want
    if [ "$2" = "$3" ]; then pass "$1 $3"; else fail "$1 is $2, expected $3"; fi
}

require_root() { # why
    [ "$(id -u)" -eq 0 ] || die "$CHECK_NAME must run as root ($1)"
}
# FUNCTION cleans up on every way out; a command that fails outside a check stops the script,
# and the failure says which.
check_traps() {
    on_exit "$1"
    trap 'fail "line $LINENO: $BASH_COMMAND"' ERR
}
# The end of the cleanup: the work directory removed (kept when KEEP is 1), then, after a
# failure, every failed check again and the verdict as the last line.
check_summary() { # exit status, work directory, KEEP
    local rc=$1 work=$2 keep=$3 check
    if [ -n "$work" ] && [ -d "$work" ]; then
        if [ "$keep" = 1 ]; then
            echo "work directory kept: $work"
        else
            rm -rf "$work"
        fi
    fi
    if [ "$rc" -ne 0 ] || [ "$failures" -ne 0 ]; then
        for check in "${failed[@]}"; do echo "FAILED: $check"; done
        echo "FAIL: $CHECK_NAME ($failures failed check(s), exit $rc)"
    fi
}
# The last line of a run that got to the end.
check_done() {
    [ "$failures" -eq 0 ] || exit 1
    echo "PASS: $CHECK_NAME"
}

# Builds the Debian package into OUT and passes, or dies with cargo-deb's log (cargo-deb.log
# beside OUT).
build_deb() { # out
    local log
    log="$(dirname "$1")/cargo-deb.log"
    if cargo deb --locked --output "$1" >"$log" 2>&1 && [ -f "$1" ]; then
        pass "cargo deb: $(dpkg-deb -f "$1" Package Version Architecture | paste -sd' ')"
    else
        cat "$log"
        die "cargo deb"
    fi
}
