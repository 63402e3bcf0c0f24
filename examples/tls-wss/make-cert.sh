#!/bin/sh
# A self-signed certificate for the TLS + WSS example: certs/edgeproxy.pem and certs/edgeproxy.key
# beside this script (or in DIR), for the names and addresses given (default: localhost and 127.0.0.1).
#
#   sh examples/tls-wss/make-cert.sh [DIR] [NAME_OR_IP ...]
#   sh examples/tls-wss/make-cert.sh examples/tls-wss/certs sip.example.com 192.0.2.10
#
# The certificate names each of them in subjectAltName (browsers ignore the CN) and is an end-entity
# certificate (CA:FALSE, serverAuth): Firefox refuses a CA certificate used as a server's, even after
# an exception. Browsers trust it only once told to: open https://127.0.0.1:8443/ and accept it, or
# import certs/edgeproxy.pem as an authority. For production use a certificate from a real CA.
set -eu

dir=${1:-"$(dirname "$0")/certs"}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- localhost 127.0.0.1

san=""
for name in "$@"; do
    case "$name" in
        *[!0-9.]*) case "$name" in *:*) kind=IP ;; *) kind=DNS ;; esac ;;
        *) kind=IP ;;
    esac
    san="${san:+$san,}$kind:$name"
done

mkdir -p "$dir"
umask 077  # the private key is readable by its owner only
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=$1" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$dir/edgeproxy.key" -out "$dir/edgeproxy.pem" 2>/dev/null
chmod 644 "$dir/edgeproxy.pem"
echo "wrote $dir/edgeproxy.pem and $dir/edgeproxy.key for $san"
