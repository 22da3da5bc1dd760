#!/usr/bin/env bash
# ci/k8s/user.sh DIR USER [GROUP...]
#
# Issues a client certificate for USER (CN=USER, one O= per GROUP) from the CA
# that ci/k8s/start.sh made in DIR/pki, and writes a self-contained kubeconfig
# (certificates embedded) for it to DIR/users/USER.kubeconfig, whose path it
# prints on stdout. The API server authenticates the user as USER with exactly
# those groups (plus system:authenticated); RBAC then gives it nothing until a
# (Cluster)RoleBinding names it. Works while the server is running (no restart).
# Idempotent: an existing certificate for USER with the same groups is kept.
#
# Examples:
#   ci/k8s/user.sh "$DIR" janus-controller               # no groups
#   ci/k8s/user.sh "$DIR" janus-admin system:masters     # cluster admin
set -euo pipefail

die() {
	echo "ci/k8s/user.sh: ERROR: $*" >&2
	exit 1
}
(($# >= 2)) || die "usage: $0 DIR USER [GROUP...]"
DIR=$1
USER_NAME=$2
shift 2
GROUPS_=("$@")

[[ $USER_NAME =~ ^[A-Za-z0-9:._@-]+$ ]] || die "user name '$USER_NAME' has characters this script does not quote"
for g in "${GROUPS_[@]}"; do
	[[ $g =~ ^[A-Za-z0-9:._@-]+$ ]] || die "group '$g' has characters this script does not quote"
done
command -v openssl >/dev/null || die "openssl not found in PATH"
PKI=$DIR/pki
[[ -f $PKI/ca.crt && -f $PKI/ca.key ]] || die "no CA in $PKI (run ci/k8s/start.sh $DIR first)"
[[ -f $DIR/server ]] || die "no $DIR/server file (run ci/k8s/start.sh $DIR first)"
SERVER=$(<"$DIR/server")

mkdir -p "$PKI/users" "$DIR/users"
crt=$PKI/users/$USER_NAME.crt
key=$PKI/users/$USER_NAME.key
subj="/CN=$USER_NAME"
for g in "${GROUPS_[@]}"; do
	subj+="/O=$g"
done
# The subject used is kept beside the certificate: same subject, same cert.
have=
if [[ -f $crt && -f $key && -f $crt.subj ]]; then
	have=$(<"$crt.subj")
	[[ $have == "$subj" ]] || have=
fi
if [[ -z $have ]]; then
	openssl req -new -newkey rsa:2048 -nodes -keyout "$key.tmp" -subj "$subj" -out "$crt.csr" 2>/dev/null ||
		die "openssl req failed for $USER_NAME"
	printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$crt.ext"
	openssl x509 -req -in "$crt.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 3650 -sha256 -extfile "$crt.ext" -out "$crt.tmp" 2>/dev/null ||
		die "openssl x509 (signing) failed for $USER_NAME"
	chmod 600 "$key.tmp"
	mv -f "$key.tmp" "$key"
	mv -f "$crt.tmp" "$crt"
	rm -f "$crt.csr" "$crt.ext"
	printf '%s\n' "$subj" >"$crt.subj"
fi

b64() { base64 -w0 <"$1"; }
out=$DIR/users/$USER_NAME.kubeconfig
cat >"$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: janus-test
  cluster:
    server: $SERVER
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $USER_NAME
  user:
    client-certificate-data: $(b64 "$crt")
    client-key-data: $(b64 "$key")
contexts:
- name: $USER_NAME@janus-test
  context:
    cluster: janus-test
    user: $USER_NAME
    namespace: default
current-context: $USER_NAME@janus-test
preferences: {}
EOF
chmod 600 "$out.tmp"
mv -f "$out.tmp" "$out"
echo "$out"
