#!/usr/bin/env bash
# Makes a throw-away lab CA and certificates for routing-rules/lab-tls.toml, with the openssl CLI:
#   routing-rules/make-lab-certs.sh [DIR]        (default DIR: routing-rules/lab-certs, git-ignored)
# Writes ca.crt/ca.key (the lab CA), proxy.crt/key (sosrouter: sosrouter.lab and 127.0.0.1),
# psap-a/psap-b/psap-c.crt/key (the lab PSAPs' names, as in lab-tls.toml's tls_name) and
# caller.crt/key (a carrier edge proxy, for client_auth). EC P-256 keys, valid 825 days.
# LAB ONLY: the private keys are left unencrypted on disk; never use these beyond loopback.
set -euo pipefail
dir="${1:-$(dirname "$0")/lab-certs}"
mkdir -p "$dir"
cd "$dir"
days=825

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

key ca
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=sosrouter lab CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt

# leaf NAME SAN [EXTENDED_KEY_USAGE]
leaf() {
    key "$1"
    openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr"
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n' \
        "$2" "${3:-serverAuth,clientAuth}" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

leaf proxy "DNS:sosrouter.lab,IP:127.0.0.1"
leaf psap-a "DNS:psap-a.lab"
leaf psap-b "DNS:psap-b.lab"
leaf psap-c "DNS:psap-c.lab"
leaf caller "DNS:carrier-edge.lab" clientAuth
chmod 600 ./*.key
echo "lab certificates in $(pwd): ca.crt proxy.crt psap-{a,b,c}.crt caller.crt (+ .key)"
