#!/usr/bin/env bash
# Makes a throwaway test CA and certificates for xolfleet's mTLS (controller, agents,
# clients), with openssl. For tests and demos only: keys are unencrypted.
#
#   scripts/make-test-ca.sh OUTDIR [--server-san LIST] [--agents N] [--clients LIST]
#
#   OUTDIR/ca.{crt,key}                    the test CA
#   OUTDIR/controller.{crt,key}            server cert; SANs: localhost, 127.0.0.1, ::1 plus
#                                          --server-san (comma list: DNS names or IPs)
#   OUTDIR/node-<i>.{crt,key}              agent certs, CN=node-<i>, i = 1..N (default 3)
#   OUTDIR/<name>.{crt,key}                client certs, CN=<name> (default: admin viewer
#                                          counter capturer nobody)
#   OUTDIR/rogue-ca.crt, rogue-admin.{crt,key}   CN=admin signed by another CA (must be
#                                          rejected)
set -euo pipefail
out=${1:?usage: make-test-ca.sh OUTDIR [--server-san LIST] [--agents N] [--clients LIST]}
shift
san_extra="" agents=3 clients="admin viewer counter capturer nobody"
while (($#)); do
  case $1 in
    --server-san) san_extra=$2; shift 2 ;;
    --agents) agents=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) echo "make-test-ca.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
cd "$out"
days=30
subj_o="/O=xolfleet-test"

ca() {  # name
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days $days \
    -subj "/CN=$1$subj_o" -keyout "$1.key" -out "$1.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
}

leaf() {  # ca name cn usage [san]
  local ca=$1 name=$2 cn=$3 usage=$4 san=${5:-}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$cn$subj_o" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    -days $days -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  chmod 600 "$name.key"
}

ca ca
san="DNS:localhost,DNS:xolfleet-controller,DNS:xolfleet-controller.xolfleet.svc,IP:127.0.0.1,IP:::1"
for s in ${san_extra//,/ }; do
  if [[ $s =~ ^[0-9.]+$ || $s == *:* ]]; then san+=",IP:$s"; else san+=",DNS:$s"; fi
done
leaf ca controller xolfleet-controller serverAuth "$san"
for i in $(seq 1 "$agents"); do leaf ca "node-$i" "node-$i" clientAuth; done
for c in $clients; do leaf ca "$c" "$c" clientAuth; done
ca rogue-ca
leaf rogue-ca rogue-admin admin clientAuth
rm -f ./*.srl
echo "make-test-ca: CA and certificates in $PWD"
