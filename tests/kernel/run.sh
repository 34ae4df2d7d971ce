#!/usr/bin/env bash
# CI entry point for the kernel series (kernel/): build the patched 6.1 kernel,
# boot it under qemu (TCG, 2 vCPUs) and run the in-guest tests.  Prints one
# line per test case, "RESULT PASS <name>" or "RESULT FAIL <name> <reason>",
# and exits non-zero if any failed.  Progress goes to stderr.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
log=$CACHE/console-test.log
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
if nice -n 10 bash "$root/kernel/build.sh" >/dev/null; then
  result PASS kernel_build
else
  result FAIL kernel_build "kernel/build.sh failed, see its output above"
  exit 1
fi

mkdir -p "$CACHE"
rm -f "$log"
bash "$root/kernel/run-vm.sh" --mode test --log "$log" --timeout "${XOL_TIMEOUT:-900}" >/dev/null
vmrc=$?

if grep -q 'XOL-BOOT' "$log" 2>/dev/null; then
  cpus=$(grep -ao 'cpus_online=[^ ]*' "$log" | head -1)
  result PASS "vm_boot"
else
  result FAIL vm_boot "guest never reached /init (see $log)"
fi
# The guest's own test cases.
grep -ao 'RESULT \(PASS\|FAIL\) .*' "$log" 2>/dev/null | tr -d '\r' | while read -r line; do
  echo "$line"
done
grep -aq 'RESULT FAIL' "$log" 2>/dev/null && failed=1
if grep -aq 'XOL-DONE' "$log" 2>/dev/null; then
  result PASS vm_tests_completed
else
  result FAIL vm_tests_completed "no completion marker: guest hung, crashed or timed out (see $log)"
fi
splat='WARNING:|BUG:|Oops|Call Trace|Kernel panic|general protection fault|INFO: task .* blocked|sleeping function called|possible recursive locking|inconsistent lock state|circular locking'
if first=$(grep -Eam1 "$splat" "$log" 2>/dev/null); then
  result FAIL kernel_console_clean "splat: $(echo "$first" | tr -d '\r' | cut -c1-160)"
else
  result PASS kernel_console_clean
fi
((vmrc != 0 && failed == 0)) && result FAIL vm_exit_status "run-vm.sh exited $vmrc"
exit $failed
