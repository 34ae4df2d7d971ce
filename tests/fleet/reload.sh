# Sourced by tests/tiers/fleet.sh after its other checks: uses its controller ($CTL_ADDR in
# namespace $NSC), its agents, its test CA ($CA) and its helpers (fleet, allowed, denied,
# check, wait_for). Configuration reload without a restart, with real clients:
#
#   - the controller's authorization file: a change is applied (a client loses and
#     regains a capability), a broken file is refused and the policy in force stays;
#   - the controller's certificate: a new one signed by the same CA is served, a key that
#     does not match its certificate is refused and the server keeps serving;
#   - a CA rotation: the trust bundle gains a new CA, the controller serves a certificate
#     of the new CA, and clients with certificates of either CA are served;
#   - an agent's TCP API (mTLS) and its authorization file, the same way;
#   - the controller and agents never restart (same pids) and agents stay registered;
#   - agents that started trusting only the old CA reconnect to a controller serving only
#     the new CA's certificate (after a controller restart), without being restarted.
# Processes were started with --config_reload_interval=1s.

ctl_metric() {  # NAME{LABELS} -> value (0 if absent), from the controller's /metrics
  ip netns exec "$NSC" curl -s http://10.231.0.1:9465/metrics |
    awk -v m="$1" 'index($0, m) == 1 {v = $2} END {print v + 0}'
}
served_cert() {  # ADDR NETNS CA_FILE CERT KEY -> SHA256 fingerprint of the certificate served
  ip netns exec "$2" timeout 5 openssl s_client -connect "$1" -CAfile "$3" -cert "$4" -key "$5" \
    </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null
}
fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256; }
replace() {  # SRC DST: replace DST in one step (as Kubernetes does with a Secret's files)
  cp "$1" "$2.new" && mv -f "$2.new" "$2"
}
new_leaf() {  # CA_DIR NAME CN USAGE [SAN]: another certificate and key from CA_DIR's CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$3/O=xolfleet-test" \
    -keyout "$TMP/$2.key" -out "$TMP/$2.csr" 2>/dev/null &&
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n%s' "$4" "${5:+subjectAltName=$5}" >"$TMP/$2.ext" &&
    openssl x509 -req -in "$TMP/$2.csr" -CA "$1/ca.crt" -CAkey "$1/ca.key" -CAcreateserial \
      -days 2 -extfile "$TMP/$2.ext" -out "$TMP/$2.crt" 2>/dev/null
}
ctl_pid_before=$CTL_PID

# 15a. Authorization file: viewer loses read-only, then a broken file is refused.
cp "$TMP/authz.conf" "$TMP/authz.orig"
grep -v 'cn:viewer' "$TMP/authz.orig" >"$TMP/authz.noviewer"
check reload-authz-before "viewer cannot list before the change" allowed viewer list
replace "$TMP/authz.noviewer" "$TMP/authz.conf"
viewer_denied() { denied read-only viewer list; }
check reload-authz-applied "viewer still allowed after the policy change" wait_for 15 viewer_denied
printf 'admin cn:admin\nsuperuser cn:viewer\n' >"$TMP/authz.broken"
authz_refused0=$(ctl_metric 'xolfleet_config_reloads_total{config="authz",result="refused"}')
replace "$TMP/authz.broken" "$TMP/authz.conf"
authz_refused() { [ "$(ctl_metric 'xolfleet_config_reloads_total{config="authz",result="refused"}')" -gt "$authz_refused0" ]; }
if wait_for 15 authz_refused && grep -q 'authz: refused' "$TMP/controller.log" &&
   viewer_denied && allowed admin agents &&
   [ "$(ctl_metric 'xolfleet_config_in_force{config="authz"}')" = 0 ]; then
  pass reload-authz-broken-refused
else
  fail reload-authz-broken-refused "refused=$authz_refused0->$(ctl_metric 'xolfleet_config_reloads_total{config="authz",result="refused"}') $(grep 'authz:' "$TMP/controller.log" | tail -2 | tr '\n' ' ')"
fi
replace "$TMP/authz.orig" "$TMP/authz.conf"
check reload-authz-restored "viewer not allowed again" wait_for 15 allowed viewer list

# 15b. A new controller certificate from the same CA is served without a restart.
cp "$CA/controller.crt" "$TMP/controller.orig.crt"; cp "$CA/controller.key" "$TMP/controller.orig.key"
new_leaf "$CA" controller2 xolfleet-controller serverAuth "DNS:localhost,IP:10.231.0.1"
want=$(fingerprint "$TMP/controller2.crt")
replace "$TMP/controller2.key" "$CA/controller.key.tmp" && replace "$TMP/controller2.crt" "$CA/controller.crt.tmp"
mv -f "$CA/controller.key.tmp" "$CA/controller.key"; mv -f "$CA/controller.crt.tmp" "$CA/controller.crt"
serves() { [ "$(served_cert $CTL_ADDR "$NSC" "$CA/ca.crt" "$CA/admin.crt" "$CA/admin.key")" = "$1" ]; }
if wait_for 15 serves "$want" && allowed admin agents; then
  pass reload-cert-rotated
else
  fail reload-cert-rotated "served '$(served_cert $CTL_ADDR "$NSC" "$CA/ca.crt" "$CA/admin.crt" "$CA/admin.key")', want '$want'"
fi

# 15c. A key that does not match the certificate is refused; the server keeps serving.
tls_refused0=$(ctl_metric 'xolfleet_config_reloads_total{config="tls",result="refused"}')
replace "$CA/node-1.key" "$CA/controller.key"
tls_refused() { [ "$(ctl_metric 'xolfleet_config_reloads_total{config="tls",result="refused"}')" -gt "$tls_refused0" ]; }
if wait_for 15 tls_refused && grep -q 'tls: refused.*does not match' "$TMP/controller.log" &&
   sleep 3 && serves "$want" && allowed admin agents; then
  pass reload-cert-mismatch-refused
else
  fail reload-cert-mismatch-refused "$(grep 'tls:' "$TMP/controller.log" | tail -2 | tr '\n' ' ')"
fi
replace "$TMP/controller2.key" "$CA/controller.key"

# 15d. CA rotation: trust both CAs everywhere, then the controller serves a certificate of
#      the new CA. Clients of both CAs are served; agents stay registered.
scripts/make-test-ca.sh "$TMP/ca2" --server-san 10.231.0.1 --agents 0 --clients admin >/dev/null 2>&1
cat "$TMP/ca2/ca.crt" "$CA/ca.crt" >"$TMP/bundle.crt"
cp "$CA/ca.crt" "$TMP/ca1.crt"
replace "$TMP/bundle.crt" "$CA/ca.crt"  # the controller's and the agents' trust file
sleep 3
cp "$TMP/ca2/controller.key" "$CA/controller.key.tmp"; cp "$TMP/ca2/controller.crt" "$CA/controller.crt.tmp"
mv -f "$CA/controller.key.tmp" "$CA/controller.key"; mv -f "$CA/controller.crt.tmp" "$CA/controller.crt"
want2=$(fingerprint "$TMP/ca2/controller.crt")
ca2_client() {
  ip netns exec "$NSC" "$BIN/xolctl" fleet --controller=$CTL_ADDR --tls-ca="$TMP/ca2/ca.crt" \
    --tls-cert="$TMP/ca2/admin.crt" --tls-key="$TMP/ca2/admin.key" --timeout=10 agents >/dev/null 2>&1
}
ca1_client_old_trust() {  # a client of the old CA that does not trust the new one yet
  ip netns exec "$NSC" "$BIN/xolctl" fleet --controller=$CTL_ADDR --tls-ca="$TMP/ca1.crt" \
    --tls-cert="$CA/admin.crt" --tls-key="$CA/admin.key" --timeout=10 agents >/dev/null 2>&1
}
if wait_for 15 serves "$want2" && ca2_client && allowed admin agents && ! ca1_client_old_trust; then
  pass reload-ca-rotation
else
  fail reload-ca-rotation "served '$(served_cert $CTL_ADDR "$NSC" "$CA/ca.crt" "$CA/admin.crt" "$CA/admin.key")' want '$want2'; ca2 client: $(ca2_client && echo ok || echo failed)"
fi

# 15e. An agent's own TCP API over mTLS, with an authorization file: the same reloads.
AG=10.231.0.11:7444
printf 'admin cn:admin\n' >"$TMP/agent-authz.conf"
cp "$CA/ca.crt" "$TMP/agent-ca.crt"
new_leaf "$TMP/ca2" agent-api xolfleet-agent serverAuth "IP:10.231.0.11"
cp "$TMP/agent-api.crt" "$TMP/agent-tls.crt"; cp "$TMP/agent-api.key" "$TMP/agent-tls.key"
in_node 1 "$BIN/xolfleet-agent" --unix-socket="$TMP/node1/agent-tcp.sock" --metrics_address= \
  --listen=$AG --tls_ca="$TMP/agent-ca.crt" --tls_cert="$TMP/agent-tls.crt" \
  --tls_key="$TMP/agent-tls.key" --authz_config="$TMP/agent-authz.conf" \
  --config_reload_interval=1s --node_name=node-1-api >"$TMP/agent-api.log" 2>&1 &
AGENT_API_PID=$!
PIDS+=("$AGENT_API_PID")
agent_as() {  # CA_DIR WHO ARGS...: xolctl against the agent's TCP API from the controller's namespace
  local d=$1 who=$2; shift 2
  ip netns exec "$NSC" "$BIN/xolctl" --agent=$AG --tls-ca="$CA/ca.crt" --tls-cert="$d/$who.crt" \
    --tls-key="$d/$who.key" --timeout=10 "$@"
}
agent_list_ok() { agent_as "$1" "$2" list >/dev/null 2>&1; }
agent_list_denied() { local out; out=$(agent_as "$1" "$2" list 2>&1); grep -q PERMISSION_DENIED <<<"$out"; }
if wait_for 20 agent_list_ok "$CA" admin && agent_list_denied "$CA" viewer; then
  printf 'admin cn:admin\nread-only cn:viewer\n' >"$TMP/agent-authz.new"
  replace "$TMP/agent-authz.new" "$TMP/agent-authz.conf"
  check reload-agent-authz-applied "viewer still denied by the agent" wait_for 15 agent_list_ok "$CA" viewer
  printf 'admin cn:admin\nread-only viewer\n' >"$TMP/agent-authz.bad"
  replace "$TMP/agent-authz.bad" "$TMP/agent-authz.conf"
  agent_refused() { grep -q 'authz: refused' "$TMP/agent-api.log"; }  # the first refusal
  if wait_for 15 agent_refused && agent_list_ok "$CA" viewer; then
    pass reload-agent-authz-broken-refused
  else
    fail reload-agent-authz-broken-refused "$(grep authz "$TMP/agent-api.log" | tail -2 | tr '\n' ' ')"
  fi
  # A new certificate for the agent's API, then a broken one (a key of another certificate).
  new_leaf "$TMP/ca2" agent-api2 xolfleet-agent serverAuth "IP:10.231.0.11"
  want3=$(fingerprint "$TMP/agent-api2.crt")
  cp "$TMP/agent-api2.key" "$TMP/agent-tls.key.tmp"; cp "$TMP/agent-api2.crt" "$TMP/agent-tls.crt.tmp"
  mv -f "$TMP/agent-tls.key.tmp" "$TMP/agent-tls.key"; mv -f "$TMP/agent-tls.crt.tmp" "$TMP/agent-tls.crt"
  agent_serves() { [ "$(served_cert $AG "$NSC" "$CA/ca.crt" "$CA/admin.crt" "$CA/admin.key")" = "$1" ]; }
  check reload-agent-cert-rotated "agent serves $(served_cert $AG "$NSC" "$CA/ca.crt" "$CA/admin.crt" "$CA/admin.key")" \
    wait_for 15 agent_serves "$want3"
  seen=$(grep -c 'tls: refused.*does not match' "$TMP/agent-api.log")
  replace "$TMP/agent-api.key" "$TMP/agent-tls.key"
  agent_tls_refused() { [ "$(grep -c 'tls: refused.*does not match' "$TMP/agent-api.log")" -gt "$seen" ]; }
  if wait_for 15 agent_tls_refused && sleep 3 && agent_serves "$want3" && agent_list_ok "$CA" admin; then
    pass reload-agent-cert-mismatch-refused
  else
    fail reload-agent-cert-mismatch-refused "$(grep 'tls:' "$TMP/agent-api.log" | tail -2 | tr '\n' ' ')"
  fi
else
  fail reload-agent-api "agent TCP API not usable: admin: $(agent_as "$CA" admin list 2>&1 | tail -2 | tr '\n' ' ') viewer: $(agent_as "$CA" viewer list 2>&1 | tail -2 | tr '\n' ' ')"
fi
kill "$AGENT_API_PID" 2>/dev/null

# 15f. Nothing restarted, and every agent is still registered.
check reload-no-restart "controller pid changed or died" kill -0 "$ctl_pid_before"
check reload-agents-still-up "agents up: $(fleet admin agents --json 2>/dev/null | tests/fleet/fleetq.py agents | tr '\n' ' ')" \
  wait_for 10 agents_up $N

# 15g. The agents' side: they started trusting only the old CA and were never restarted.
#      They reloaded the bundle (--controller-tls-ca), so when the controller restarts and
#      serves only its new CA's certificate, every agent reconnects.
agent_pids_before="${AGENT_PID[*]}"
reloaded_everywhere() {
  for i in $(seq 1 $N); do grep -q 'controller_tls: reloaded' "$TMP/agent$i.log" || return 1; done
}
kill -9 "$CTL_PID"; wait "$CTL_PID" 2>/dev/null
start_controller
PIDS+=("$CTL_PID")
agents_alive() {
  for i in $(seq 1 $N); do kill -0 "${AGENT_PID[$i]}" 2>/dev/null || return 1; done
}
if reloaded_everywhere && wait_for 30 agents_up $N && [ "${AGENT_PID[*]}" = "$agent_pids_before" ] &&
   agents_alive; then
  pass reload-agents-trust-new-ca
else
  fail reload-agents-trust-new-ca "agents up: $(fleet admin agents --json 2>/dev/null | tests/fleet/fleetq.py agents | tr '\n' ' ') reloaded: $(grep -l 'controller_tls: reloaded' "$TMP"/agent*.log | tr '\n' ' ')"
fi
