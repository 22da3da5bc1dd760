#!/usr/bin/env bash
# ci/k8s/smoke.sh DIR
#
# Checks, with curl only, that the API server started by ci/k8s/start.sh DIR
# does what the end-to-end tests need:
#   - a CustomResourceDefinition is created, becomes Established, serves its
#     kind, and its status subresource can be patched;
#   - a namespace and a Pod (with spec.nodeName, no scheduler) are created
#     without any ServiceAccount in the namespace;
#   - the Pod's status subresource can be patched the way a kubelet would:
#     phase Running, hostIP/podIP(s), containerStatuses with containerID,
#     conditions Ready/ContainersReady;
#   - the user janus-controller is forbidden (403) to list pods by default, and
#     allowed after a ClusterRole + ClusterRoleBinding are created;
#   - deleting a bound pod only marks it (no kubelet), and a delete with
#     gracePeriodSeconds=0 removes it.
# Prints one line per check and "N passed, N failed"; exits non-zero on any
# failure.
set -euo pipefail

(($# == 1)) || {
	echo "usage: $0 DIR" >&2
	exit 2
}
DIR=$(cd "$1" && pwd)
[[ -f $DIR/env ]] || {
	echo "ci/k8s/smoke.sh: no $DIR/env (run ci/k8s/start.sh $DIR first)" >&2
	exit 1
}
# shellcheck source=/dev/null
source "$DIR/env"
S=$JANUS_K8S_SERVER
PKI=$JANUS_K8S_DIR/pki
NS=janus-smoke-$$-$RANDOM
passed=0
failed=0
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

# req USER METHOD PATH [CONTENT-TYPE BODY] -> prints the HTTP code, body in $OUT
req() {
	local user=$1 method=$2 path=$3 ctype=${4:-} body=${5:-}
	local args=(-sS --max-time 20 -o "$OUT" -w '%{http_code}' --cacert "$JANUS_K8S_CA"
		--cert "$PKI/users/$user.crt" --key "$PKI/users/$user.key" -X "$method")
	[[ -n $ctype ]] && args+=(-H "Content-Type: $ctype" --data-binary "$body")
	curl "${args[@]}" "$S$path" || echo 000
}
check() { # check NAME EXPECTED-CODE ACTUAL-CODE [GREP-PATTERN (no blanks)]
	local name=$1 want=$2 got=$3 pat=${4:-}
	# the server pretty-prints JSON: match patterns against it without blanks
	if [[ $got == "$want" ]] && { [[ -z $pat ]] || tr -d ' \n' <"$OUT" | grep -q -- "$pat"; }; then
		echo "ok   $name ($got)"
		passed=$((passed + 1))
	else
		echo "FAIL $name: want $want${pat:+ and /$pat/}, got $got: $(head -c 600 "$OUT")"
		failed=$((failed + 1))
	fi
}
A=janus-admin
C=janus-controller
JSON=application/json
MERGE=application/merge-patch+json

check "version" 200 "$(req $A GET /version)" '"gitVersion"'

# ---- CRD ----------------------------------------------------------------
crd='{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
 "metadata":{"name":"smokewidgets.smoke.janus.test"},
 "spec":{"group":"smoke.janus.test","scope":"Namespaced",
  "names":{"plural":"smokewidgets","singular":"smokewidget","kind":"SmokeWidget","shortNames":["sw"]},
  "versions":[{"name":"v1","served":true,"storage":true,"subresources":{"status":{}},
   "schema":{"openAPIV3Schema":{"type":"object","properties":{
     "spec":{"type":"object","required":["size"],"properties":{"size":{"type":"integer","minimum":1,"maximum":10}},
       "x-kubernetes-validations":[{"rule":"self.size != 7","message":"size 7 is unlucky"}]},
     "status":{"type":"object","properties":{"seen":{"type":"integer"}}}}}}}]}}'
code=$(req $A POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions $JSON "$crd")
[[ $code == 409 ]] && code=201 # left over from an earlier smoke run on the same server
check "create CRD" 201 "$code"
established=0
for _ in $(seq 60); do
	req $A GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/smokewidgets.smoke.janus.test >/dev/null
	if tr -d ' \n' <"$OUT" | grep -q '"type":"Established","status":"True"'; then
		established=1
		break
	fi
	sleep 0.5
done
check "CRD Established" 1 "$established"

code=$(req $A POST /api/v1/namespaces $JSON "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$NS\"}}")
check "create namespace $NS" 201 "$code"

# The new kind may take a moment to be served after Established.
for _ in $(seq 40); do
	code=$(req $A POST "/apis/smoke.janus.test/v1/namespaces/$NS/smokewidgets" $JSON \
		'{"apiVersion":"smoke.janus.test/v1","kind":"SmokeWidget","metadata":{"name":"w1"},"spec":{"size":3}}')
	[[ $code == 404 ]] || break
	sleep 0.5
done
check "create custom resource" 201 "$code"
code=$(req $A POST "/apis/smoke.janus.test/v1/namespaces/$NS/smokewidgets" $JSON \
	'{"apiVersion":"smoke.janus.test/v1","kind":"SmokeWidget","metadata":{"name":"w2"},"spec":{"size":11}}')
check "schema rejects a bad custom resource" 422 "$code" 'spec.size'
code=$(req $A POST "/apis/smoke.janus.test/v1/namespaces/$NS/smokewidgets" $JSON \
	'{"apiVersion":"smoke.janus.test/v1","kind":"SmokeWidget","metadata":{"name":"w3"},"spec":{"size":7}}')
check "CEL rule rejects a bad custom resource" 422 "$code" 'size7isunlucky'
code=$(req $A PATCH "/apis/smoke.janus.test/v1/namespaces/$NS/smokewidgets/w1/status" $MERGE '{"status":{"seen":3}}')
check "patch custom resource status" 200 "$code" '"seen":3'

# ---- Pod: create, play the kubelet, RBAC ---------------------------------------
pod='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p1","labels":{"app":"smoke"}},
 "spec":{"nodeName":"node-a","containers":[{"name":"main","image":"example.invalid/smoke:1"}]}}'
check "create pod (no ServiceAccount in namespace)" 201 "$(req $A POST "/api/v1/namespaces/$NS/pods" $JSON "$pod")"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
status="{\"status\":{\"phase\":\"Running\",\"hostIP\":\"127.0.0.1\",\"hostIPs\":[{\"ip\":\"127.0.0.1\"}],
 \"podIP\":\"10.244.0.5\",\"podIPs\":[{\"ip\":\"10.244.0.5\"}],\"startTime\":\"$now\",
 \"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
  {\"type\":\"Initialized\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
  {\"type\":\"ContainersReady\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
  {\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"}],
 \"containerStatuses\":[{\"name\":\"main\",\"image\":\"example.invalid/smoke:1\",\"imageID\":\"\",
  \"containerID\":\"containerd://0123456789abcdef\",\"ready\":true,\"started\":true,\"restartCount\":0,
  \"state\":{\"running\":{\"startedAt\":\"$now\"}}}]}}"
code=$(req $A PATCH "/api/v1/namespaces/$NS/pods/p1/status" $MERGE "$status")
check "patch pod status (Running, podIP, containerID, Ready)" 200 "$code" '"containerID":"containerd://0123456789abcdef"'
req $A GET "/api/v1/namespaces/$NS/pods/p1" >/dev/null
ok=0
tr -d ' \n' <"$OUT" | grep -q '"phase":"Running"' && tr -d ' \n' <"$OUT" | grep -q '"podIP":"10.244.0.5"' &&
	tr -d ' \n' <"$OUT" | grep -q '"type":"Ready","status":"True"' && ok=1
check "pod reads back Running/Ready with podIP" 1 "$ok"

check "janus-controller forbidden to list pods" 403 "$(req $C GET /api/v1/pods)" 'forbidden'
check "janus-controller forbidden to list the custom resources" 403 "$(req $C GET /apis/smoke.janus.test/v1/smokewidgets)"
role='{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"janus-smoke-pod-reader"},
 "rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get","list","watch"]}]}'
code=$(req $A POST /apis/rbac.authorization.k8s.io/v1/clusterroles $JSON "$role")
[[ $code == 409 ]] && code=201
check "create ClusterRole" 201 "$code"
binding='{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"janus-smoke-pod-reader"},
 "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"janus-smoke-pod-reader"},
 "subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"janus-controller"}]}'
code=$(req $A POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings $JSON "$binding")
[[ $code == 409 ]] && code=201
check "create ClusterRoleBinding for janus-controller" 201 "$code"
code=000
for _ in $(seq 20); do # RBAC is served from a watch cache: allow a moment
	code=$(req $C GET "/api/v1/namespaces/$NS/pods")
	[[ $code == 200 ]] && break
	sleep 0.25
done
check "janus-controller may list pods once bound" 200 "$code" '"name":"p1"'
check "janus-controller still forbidden to delete pods" 403 "$(req $C DELETE "/api/v1/namespaces/$NS/pods/p1")"

# ---- deletion without a kubelet --------------------------------------------------
code=$(req $A DELETE "/api/v1/namespaces/$NS/pods/p1")
check "delete bound pod: only marked (deletionTimestamp)" 200 "$code" '"deletionTimestamp"'
check "pod still there while terminating" 200 "$(req $A GET "/api/v1/namespaces/$NS/pods/p1")"
code=$(req $A DELETE "/api/v1/namespaces/$NS/pods/p1" $JSON '{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":0}')
check "delete with gracePeriodSeconds=0 (as the kubelet does)" 200 "$code"
check "pod gone" 404 "$(req $A GET "/api/v1/namespaces/$NS/pods/p1")"

# ---- namespace deletion without a controller-manager ---------------------------
# The namespace controller (kube-controller-manager) never runs, so a deleted
# namespace stays Terminating; a test that needs it gone clears the finalizer
# itself (objects still in it then stay in etcd, unreachable; harmless here).
check "delete namespace: only Terminating" 200 "$(req $A DELETE "/api/v1/namespaces/$NS")" '"phase":"Terminating"'
code=$(req $A PUT "/api/v1/namespaces/$NS/finalize" $JSON \
	"{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$NS\"},\"spec\":{\"finalizers\":[]}}")
check "clear the namespace finalizer" 200 "$code"
gone=0
for _ in $(seq 20); do
	[[ $(req $A GET "/api/v1/namespaces/$NS") == 404 ]] && gone=1 && break
	sleep 0.25
done
check "namespace gone" 1 "$gone"

# ---- cleanup (best effort) --------------------------------------------------------
req $A DELETE /apis/rbac.authorization.k8s.io/v1/clusterrolebindings/janus-smoke-pod-reader >/dev/null || true
req $A DELETE /apis/rbac.authorization.k8s.io/v1/clusterroles/janus-smoke-pod-reader >/dev/null || true
req $A DELETE /apis/apiextensions.k8s.io/v1/customresourcedefinitions/smokewidgets.smoke.janus.test >/dev/null || true

echo "$passed passed, $failed failed"
((failed == 0))
