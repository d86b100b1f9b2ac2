{{/* Name of the chart, truncated for label values. */}}
{{- define "noctis.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name prefix: the release name, or <release>-noctis. */}}
{{- define "noctis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Standard labels; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "noctis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{ include "noctis.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: noctis
{{- end -}}

{{- define "noctis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "noctis.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "noctis.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* Image of a component; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "noctis.image" -}}
{{- printf "%s/noctis-%s:%s" .ctx.Values.image.registry .component (include "noctis.imageTag" .ctx) -}}
{{- end -}}

{{- define "noctis.operatorName" -}}
{{- printf "%s-operator" (include "noctis.fullname" .) -}}
{{- end -}}

{{- define "noctis.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "noctis.operatorName" .) -}}
{{- end -}}

{{- define "noctis.databaseSecret" -}}
{{- if .Values.database.url -}}
{{- printf "%s-database" (include "noctis.fullname" .) -}}
{{- else -}}
{{- .Values.database.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the operator watches when not cluster-wide, as a list. */}}
{{- define "noctis.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- toJson .Values.operator.watchNamespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "noctis.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "noctis.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}
