{{/* Common labels of the chart's own objects. */}}
{{- define "mlops.labels" -}}
app.kubernetes.io/part-of: airflow-project
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{- end -}}

{{/* True (non-empty) when the stage tag is on: include "mlops.stage" (list . "platform") */}}
{{- define "mlops.stage" -}}
{{- $root := index . 0 -}}
{{- $tag := index . 1 -}}
{{- if index (default (dict) $root.Values.tags) $tag -}}true{{- end -}}
{{- end -}}

{{/* Image tag of our own images: mlops.images.tag or the chart's appVersion. */}}
{{- define "mlops.imageTag" -}}
{{- default .Chart.AppVersion .Values.mlops.images.tag -}}
{{- end -}}

{{- define "mlops.predictorImage" -}}
{{- printf "%s%s:%s" .Values.mlops.images.registry .Values.mlops.images.predictor (include "mlops.imageTag" .) -}}
{{- end -}}

{{- define "mlops.mlflowUri" -}}
{{- if .Values.mlops.airflow.mlflowTrackingUri -}}
{{- .Values.mlops.airflow.mlflowTrackingUri -}}
{{- else -}}
{{- /* the MLflow chart's Service: <release>-mlflow, port mlflow.service.port */ -}}
{{- printf "http://%s-mlflow.%s.svc:%v" .Release.Name .Release.Namespace .Values.mlflow.service.port -}}
{{- end -}}
{{- end -}}

{{- define "mlops.podSecurityContext" -}}
{{- toYaml .Values.mlops.podSecurityContext -}}
{{- end -}}

{{- define "mlops.containerSecurityContext" -}}
{{- toYaml .Values.mlops.containerSecurityContext -}}
{{- end -}}
