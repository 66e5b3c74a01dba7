{{/* The pods' labels: the selector the z2jh values' policies use (app.kubernetes.io/name). */}}
{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: datalab-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gateway.labels" -}}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "gateway.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}
{{- end }}

{{/* A NetworkPolicy peer: always both selectors, so a peer is never "every namespace". */}}
{{- define "gateway.peer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .peer.namespace | default .namespace }}
  podSelector:
    matchLabels:
      {{- toYaml .peer.podLabels | nindent 6 }}
{{- end }}
