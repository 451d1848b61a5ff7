#!/bin/sh
# Makes TLS for meshgate-inject's webhook without cert-manager: a CA of its
# own and a serving certificate for the webhook's Service, in DIR (default
# the current directory):
#
#   ca.crt    the caBundle of the MutatingWebhookConfiguration
#   tls.crt   the serving certificate, and tls.key its key: the Secret
#             meshgate-inject-tls
#
# Usage: gencert.sh [DIR] [DAYS]   (DAYS of the serving certificate: 365)
# Run it again before the serving certificate expires, with the same DIR:
# it keeps the CA, so only the Secret changes, and the webhook picks the
# new files up by itself.
set -eu
dir=${1:-.}
days=${2:-365}
name=meshgate-inject.meshgate-system.svc
umask 077
cd "$dir"
if [ ! -f ca.key ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
		-subj /CN=meshgate-inject-ca -keyout ca.key -out ca.crt 2>/dev/null
fi
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-subj /CN=meshgate-inject -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n' "$name" > tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
	-extfile tls.ext -out tls.crt 2>/dev/null
rm -f tls.csr tls.ext
echo "wrote $dir/ca.crt, $dir/tls.crt and $dir/tls.key for $name"
