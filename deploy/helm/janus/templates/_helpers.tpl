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

{{- define "janus.validate" -}}
{{- if not (has .Values.tls.mode (list "certManager" "existingSecret" "insecure")) -}}
{{- fail (printf "tls.mode must be certManager, existingSecret or insecure (got %q)" .Values.tls.mode) -}}
{{- end -}}
{{- end -}}
