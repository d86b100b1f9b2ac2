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
{{- if .Values.quickstart.enabled -}}
{{- include "noctis.quickstart.name" (dict "ctx" . "service" "postgresql") -}}
{{- else if .Values.database.url -}}
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


{{/* Key of the database URL in its Secret. */}}
{{- define "noctis.databaseSecretKey" -}}
{{- if .Values.quickstart.enabled -}}url{{- else -}}{{ .Values.database.secretKey }}{{- end -}}
{{- end -}}

{{/* Name of a quickstart object; call with (dict "ctx" $ "service" "postgresql"). */}}
{{- define "noctis.quickstart.name" -}}
{{- printf "%s-%s" (include "noctis.fullname" .ctx) .service -}}
{{- end -}}

{{/* In-cluster host name of a quickstart Service (needs the cluster's DNS). */}}
{{- define "noctis.quickstart.host" -}}
{{- printf "%s.%s.svc" (include "noctis.quickstart.name" .) .ctx.Release.Namespace -}}
{{- end -}}

{{/*
A credential of the quickstart: the value given, else the one already in the Secret (so an
upgrade keeps it), else a new random one. Call with
(dict "ctx" $ "secret" <name> "key" <key> "given" <value> "length" <n>).
*/}}
{{- define "noctis.quickstart.credential" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if .given -}}
{{- .given -}}
{{- else if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum (int .length) -}}
{{- end -}}
{{- end -}}

{{/* The volume a quickstart service keeps its data on (not for persistentVolumeClaim, which
the StatefulSet's volumeClaimTemplates make); call with (dict "ctx" $ "service" "postgresql"). */}}
{{- define "noctis.quickstart.dataVolume" -}}
{{- $storage := .ctx.Values.quickstart.storage -}}
- name: data
{{- if eq $storage.type "hostPath" }}
  hostPath:
    path: {{ printf "%s/%s" (required "quickstart.storage.hostPath is needed with type hostPath" $storage.hostPath | trimSuffix "/") .service }}
    type: DirectoryOrCreate
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* volumeClaimTemplates of a quickstart StatefulSet when storage is persistentVolumeClaim. */}}
{{- define "noctis.quickstart.claimTemplates" -}}
{{- $storage := .Values.quickstart.storage -}}
{{- if eq $storage.type "persistentVolumeClaim" }}
volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      {{- with $storage.storageClass }}
      storageClassName: {{ . }}
      {{- end }}
      resources:
        requests:
          storage: {{ $storage.size }}
{{- end }}
{{- end -}}

{{/* Pod security context of a quickstart service running as uid/gid .uid. */}}
{{- define "noctis.quickstart.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}
