# Shell functions for a patched-kernel agent node: a qemu (TCG) guest running the kernel of
# kernel/, an initramfs holding the agent, xolctl, workloads and the real Debian libraries
# they run on, and a tap device inside a network namespace the caller creates, so that all
# traffic stays inside that namespace. Sourced by the mixed demo (tests/demo/mixed.sh); the
# node tier has the same pieces in Python (tests/harness/qemu.py, netns.TapNet,
# tests/node/run.py) and shares the control channel client (tests/harness/guestctl.py).
#
#   node_net_up NS               namespace NS: bridge xfbr0 10.232.0.1/24 + tap xftap0
#   node_image CPIO FILE...      initramfs: busybox, tests/node/init, each FILE at its own
#                                absolute path (with FILE.private if there is one), and the
#                                shared libraries every ELF FILE needs
#   node_boot NS CPIO LOG        boots the guest in NS (console -> LOG); sets NODE_QEMU_PID
#   guest CMD...                 runs CMD in the guest (sh, over the control channel: TCP
#                                10.232.0.2:2323 inside NS), prints its output, returns its
#                                status (NODE_TIMEOUT: seconds, default 120)
#   node_down                    powers the guest off (kills qemu after 20 s)
#   node_start_fleet NS DIR BIN CA  controller (node names = certificate CNs, state and logs
#                                in DIR) and the host agent node-1, inside NS; appends their
#                                pids to NODE_PIDS
#   node_start_guest_agent BIN CA   the guest agent node-2 (API on a unix socket in the guest)
#
# The guest is 10.232.0.2; the host side of the namespace (controller, host agent,
# Prometheus) is 10.232.0.1. Neither address exists outside the namespace.
NODE_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODE_ROOT=$(cd "$NODE_LIB_DIR/../.." && pwd)
NODE_KCACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
NODE_KERNEL=${NODE_KERNEL:-$NODE_KCACHE/build-patched/arch/x86/boot/bzImage}
NODE_HOST_IP=10.232.0.1
NODE_GUEST_IP=10.232.0.2
NODE_SMP=${NODE_SMP:-2}
NODE_MEM=${NODE_MEM:-2048}
# qemu TCG with one host thread for all vCPUs (round-robin). With thread=multi (MTTCG) a
# process mixing boosted and rip-relative probes across 2 vCPUs dies within seconds
# (kernel/README.md, "Known gaps": a task executes one slot program's code and reads
# another's data); round-robin vCPUs and a single vCPU never do. It is a qemu 7.2 MTTCG
# artefact (kernel/tests/xmctest.c shows it without uprobes: a vCPU keeps running its old
# translation of bytes it rewrote in a page other vCPUs execute from), so the node guest
# runs round-robin; NODE_TCG_THREAD=multi reproduces it.
NODE_TCG_THREAD=${NODE_TCG_THREAD:-single}

node_net_up() {  # NS
  local ns=$1
  ip netns add "$ns" || return 1
  ip -n "$ns" link set lo up
  ip -n "$ns" link add xfbr0 type bridge || return 1
  ip -n "$ns" addr add "$NODE_HOST_IP/24" dev xfbr0
  ip -n "$ns" link set xfbr0 up
  ip -n "$ns" tuntap add dev xftap0 mode tap || return 1
  ip -n "$ns" link set xftap0 master xfbr0 up
}

# Copies FILE and, for a dynamically linked ELF, every library ldd resolves for it (the
# host's own Debian libraries, so probes in the guest land in the same code as on the host).
node_image() {  # CPIO FILE...
  local cpio=$1; shift
  local root; root=$(mktemp -d /tmp/xolfleet-node-root.XXXXXX)
  mkdir -p "$root"/{bin,proc,sys,dev,tmp,run,etc}
  cp /bin/busybox "$root/bin/busybox"
  install -m 0755 "$NODE_LIB_DIR/init" "$root/init"
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    # A program on private libraries (tools/build_defs/private_libs.bzl): a static launcher
    # and, beside it, FILE.private with the program, its loader and its libraries.
    if [ -d "$f.private" ]; then
      cp -rL "$f.private" "$root$f.private"
    fi
    if ldd "$f" >/dev/null 2>&1; then
      for lib in $(ldd "$f" | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\// {print $1}'); do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
      done
    fi
  done
  # Debian's /lib and /lib64 are symlinks into /usr: keep that shape so both spellings of
  # a library path name the same file in the guest, as on the host.
  local d
  for d in lib lib64; do
    if [ -L "/$d" ] && [ -d "$root/$d" ]; then
      mkdir -p "$root/usr/$d" && cp -a "$root/$d/." "$root/usr/$d/" && rm -rf "${root:?}/$d" &&
        ln -s "usr/$d" "$root/$d"
    fi
  done
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$cpio"
  rm -rf "$root"
}

node_boot() {  # NS CPIO LOG
  local ns=$1 cpio=$2 log=$3
  [ -f "$NODE_KERNEL" ] || { echo "node_boot: no kernel at $NODE_KERNEL (kernel/build.sh)" >&2; return 1; }
  NODE_NS=$ns
  ip netns exec "$ns" qemu-system-x86_64 -accel tcg,thread=$NODE_TCG_THREAD -smp "$NODE_SMP" -m "$NODE_MEM" \
    -cpu max -kernel "$NODE_KERNEL" -initrd "$cpio" \
    -append "console=ttyS0 panic=-1 xolnode.ip=$NODE_GUEST_IP/24" \
    -netdev tap,id=n0,ifname=xftap0,script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:32:00:02 \
    -display none -monitor none -serial "file:$log" -no-reboot \
    </dev/null >"$log.qemu" 2>&1 &
  NODE_QEMU_PID=$!
}

guest() {  # CMD...
  ip netns exec "$NODE_NS" python3 "$NODE_ROOT/tests/harness/guestctl.py" "$NODE_GUEST_IP:2323" \
    --timeout "${NODE_TIMEOUT:-120}" -- "$@"
}

node_down() {
  [ -n "${NODE_QEMU_PID:-}" ] || return 0
  NODE_TIMEOUT=5 guest 'sync; poweroff -f' >/dev/null 2>&1 &
  local i
  for i in $(seq 1 100); do
    kill -0 "$NODE_QEMU_PID" 2>/dev/null || break
    sleep 0.2
  done
  kill -9 "$NODE_QEMU_PID" 2>/dev/null
  wait "$NODE_QEMU_PID" 2>/dev/null
  NODE_QEMU_PID=
}

NODE_CTL=$NODE_HOST_IP:7443
NODE_PIDS=()
node_start_fleet() {  # NS DIR BIN CA
  local ns=$1 dir=$2 bin=$3 ca=$4
  ip netns exec "$ns" "$bin/xolfleet-controller" --listen=$NODE_CTL \
    --metrics_listen=$NODE_HOST_IP:9465 --state_db="$dir/controller.db" --init --tls_ca="$ca/ca.crt" \
    --tls_cert="$ca/controller.crt" --tls_key="$ca/controller.key" \
    --authz_config="$dir/authz.conf" --heartbeat_interval=500ms --heartbeat_timeout=15s \
    --canary_timeout=120s >"$dir/controller.log" 2>&1 &
  NODE_PIDS+=($!)
  ip netns exec "$ns" "$bin/xolfleet-agent" --listen= --unix-socket="$dir/agent1.sock" \
    --metrics_address=$NODE_HOST_IP:9464 --node_name=node-1 --labels=kernel=stock \
    --controller=$NODE_CTL --controller_tls_ca="$ca/ca.crt" \
    --controller_tls_cert="$ca/node-1.crt" --controller_tls_key="$ca/node-1.key" \
    >"$dir/agent1.log" 2>&1 &
  NODE_PIDS+=($!)
}

node_start_guest_agent() {  # BIN CA (paths as in the guest image: the same as on the host)
  local bin=$1 ca=$2
  guest "cd /tmp && ($bin/xolfleet-agent --listen= --unix-socket=/run/xolfleet/agent.sock \
    --metrics_address=$NODE_GUEST_IP:9464 --node_name=node-2 --labels=kernel=patched \
    --controller=$NODE_CTL --controller_tls_ca=$ca/ca.crt --controller_tls_cert=$ca/node-2.crt \
    --controller_tls_key=$ca/node-2.key >/tmp/agent.log 2>&1 &)"
}
