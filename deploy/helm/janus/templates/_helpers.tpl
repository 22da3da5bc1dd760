{{/* Labels shared by every object. */}}
{{- define "janus.labels" -}}
app.kubernetes.io/name: janus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: janus
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "janus.agentSelector" -}}
app.kubernetes.io/name: janus
app.kubernetes.io/component: agent
{{- end -}}

{{- define "janus.controllerSelector" -}}
app.kubernetes.io/name: janus
app.kubernetes.io/component: controller
{{- end -}}

{{- define "janus.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .image.repository $tag -}}
{{- end -}}

{{/* TLS flags for a binary; the Secret is mounted at /etc/janus/tls. */}}
{{- define "janus.tlsArgs" -}}
{{- if eq .Values.tls.mode "insecure" -}}
- --insecure
{{- else -}}
- --tls-cert=/etc/janus/tls/tls.crt
- --tls-key=/etc/janus/tls/tls.key
- --tls-ca=/etc/janus/tls/ca.crt
{{- end -}}
{{- end -}}

{{/* The TLS mode in effect: auto resolves to certManager or generate. */}}
{{- define "janus.tlsMode" -}}
{{- if eq .Values.tls.mode "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}certManager{{- else -}}generate{{- end -}}
{{- else -}}
{{- .Values.tls.mode -}}
{{- end -}}
{{- end -}}

{{- define "janus.validate" -}}
{{- if not (has .Values.tls.mode (list "auto" "certManager" "generate" "existingSecret" "insecure")) -}}
{{- fail (printf "tls.mode must be auto, certManager, generate, existingSecret or insecure (got %q)" .Values.tls.mode) -}}
{{- end -}}
{{- if and .Values.agent.nodeSetup.enabled (not (hasPrefix "/" .Values.agent.kubeletRootDir)) -}}
{{- fail (printf "agent.kubeletRootDir must be an absolute path (got %q)" .Values.agent.kubeletRootDir) -}}
{{- end -}}
{{- /* The agent needs the "privileged" Pod Security level (hostPID,
  CAP_SYS_ADMIN, a privileged init container): refuse a namespace that
  enforces less, with the fix, instead of leaving pods that never start.
  (Only what the namespace's labels say can be checked; a cluster-wide
  default is set in the API server's admission config: docs/install.md.) */ -}}
{{- $ns := lookup "v1" "Namespace" "" .Release.Namespace -}}
{{- if $ns -}}
{{- $level := index ($ns.metadata.labels | default dict) "pod-security.kubernetes.io/enforce" | default "" -}}
{{- if and $level (ne $level "privileged") -}}
{{- fail (printf "namespace %s enforces the %q Pod Security Standard, but the Janus agent needs \"privileged\" (hostPID, CAP_SYS_ADMIN, a privileged init container). Install Janus into a namespace of its own and label it: kubectl label namespace %s pod-security.kubernetes.io/enforce=privileged --overwrite" .Release.Namespace $level .Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* tls.mode=generate: the recorded expiry of certificate Secret .secret
when it can be kept (signed by the CA in Secret janus-ca and not within
tls.generate.renewDays of expiry), empty when it must be made anew. */}}
{{- define "janus.keptCertNotAfter" -}}
{{- $ns := .root.Release.Namespace -}}
{{- $old := lookup "v1" "Secret" $ns .secret -}}
{{- $ca := lookup "v1" "Secret" $ns "janus-ca" -}}
{{- if and $old $old.data $old.metadata.annotations $ca $ca.data -}}
{{- $notAfter := index $old.metadata.annotations "janus.clustergarage.io/not-after" | default "" -}}
{{- if and $notAfter (eq (index $old.data "ca.crt" | default "") (index $ca.data "tls.crt" | default "-")) -}}
{{- $renewAt := sub (toDate "2006-01-02T15:04:05Z07:00" $notAfter | unixEpoch | int64) (mul (int .root.Values.tls.generate.renewDays) 86400) -}}
{{- if gt $renewAt (now | unixEpoch | int64) -}}
{{- $notAfter -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* tls.mode=generate: one certificate Secret's data (base64 crt and key,
and notAfter): the one in the cluster while it can be kept, else made now
and signed by .ca. */}}
{{- define "janus.generatedCert" -}}
{{- $kept := include "janus.keptCertNotAfter" (dict "root" .root "secret" .leaf.secret) -}}
{{- if $kept -}}
{{- $old := lookup "v1" "Secret" .root.Release.Namespace .leaf.secret -}}
crt: {{ index $old.data "tls.crt" }}
key: {{ index $old.data "tls.key" }}
notAfter: {{ $kept | quote }}
{{- else -}}
{{- $days := int .root.Values.tls.generate.days -}}
{{- $c := genSignedCert .leaf.cn nil .leaf.dns $days .ca -}}
crt: {{ b64enc $c.Cert }}
key: {{ b64enc $c.Key }}
notAfter: {{ now | dateModify (printf "+%dh" (mul $days 24)) | date "2006-01-02T15:04:05Z07:00" | quote }}
{{- end -}}
{{- end -}}

{{/* A pod-template annotation that changes when the pod's certificate
Secret is made anew (tls.mode=generate), so the pods restart onto it. */}}
{{- define "janus.tlsRollAnnotation" -}}
{{- if eq (include "janus.tlsMode" .root) "generate" -}}
janus.clustergarage.io/tls-not-after: {{ include "janus.keptCertNotAfter" . | default (now | date "2006-01-02T15:04:05Z07:00") | quote }}
{{- end -}}
{{- end -}}
