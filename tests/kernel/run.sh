#!/usr/bin/env bash
# CI entry point for the kernel series (kernel/): build the patched 6.1 kernel,
# boot it under qemu (TCG, 2 vCPUs) and run the in-guest tests; then the same
# on the distribution-like configuration (kernel/config.distro: IA32_EMULATION,
# NR_CPUS=512, guest booted with 64 possible CPUs, 32-bit tests too), whose
# RESULT names end in "_distro".  Prints one line per test case,
# "RESULT PASS <name>" or "RESULT FAIL <name> <reason>", and exits non-zero if
# any failed.  Progress goes to stderr.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
failed=0
result() { # PASS|FAIL name [reason]
  echo "RESULT $*"
  [[ $1 == FAIL ]] && failed=1
  return 0
}

if [[ $(id -u) -ne 0 ]]; then
  result FAIL kernel_build "must run as root (writes $CACHE)"
  exit 1
fi
mkdir -p "$CACHE"

# run_config SUFFIX [build.sh/run-vm.sh option]: build, boot, report.
run_config() {
  local sfx=$1 opt=${2:-} log vmrc first
  log=$CACHE/console-test$sfx.log
  # shellcheck disable=SC2086 # $opt is empty or one word
  if nice -n 10 bash "$root/kernel/build.sh" $opt >/dev/null; then
    result PASS "kernel_build$sfx"
  else
    result FAIL "kernel_build$sfx" "kernel/build.sh $opt failed, see its output above"
    return 1
  fi
  rm -f "$log"
  # shellcheck disable=SC2086
  bash "$root/kernel/run-vm.sh" $opt --mode test --log "$log" --timeout "${XOL_TIMEOUT:-900}" >/dev/null
  vmrc=$?
  if grep -q 'XOL-BOOT' "$log" 2>/dev/null; then
    result PASS "vm_boot$sfx"
  else
    result FAIL "vm_boot$sfx" "guest never reached /init (see $log)"
  fi
  # The guest's own test cases, renamed with the configuration's suffix.
  grep -ao 'RESULT \(PASS\|FAIL\) .*' "$log" 2>/dev/null | tr -d '\r' |
    sed -E "s/^(RESULT (PASS|FAIL) [^ ]+)/\\1$sfx/"
  grep -aq 'RESULT FAIL' "$log" 2>/dev/null && failed=1
  if grep -aq 'XOL-DONE' "$log" 2>/dev/null; then
    result PASS "vm_tests_completed$sfx"
  else
    result FAIL "vm_tests_completed$sfx" "no completion marker: guest hung, crashed or timed out (see $log)"
  fi
  local splat='WARNING:|BUG:|Oops|Call Trace|Kernel panic|general protection fault|INFO: task .* blocked|sleeping function called|possible recursive locking|inconsistent lock state|circular locking'
  if first=$(grep -Eam1 "$splat" "$log" 2>/dev/null); then
    result FAIL "kernel_console_clean$sfx" "splat: $(echo "$first" | tr -d '\r' | cut -c1-160)"
  else
    result PASS "kernel_console_clean$sfx"
  fi
  ((vmrc != 0 && failed == 0)) && result FAIL "vm_exit_status$sfx" "run-vm.sh $opt exited $vmrc"
  return 0
}

run_config "" || exit 1
run_config _distro --distro
exit $failed
