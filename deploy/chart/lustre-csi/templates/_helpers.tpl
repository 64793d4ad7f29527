{{/* The driver's namespace: driverNamespace, else the release's. */}}
{{- define "lustre-csi.namespace" -}}
{{- default .Release.Namespace .Values.driverNamespace -}}
{{- end -}}

{{/* The server VMs' namespace. */}}
{{- define "lustre-csi.serverNamespace" -}}
{{- required "serverNamespace.name must not be empty" .Values.serverNamespace.name -}}
{{- end -}}

{{/*
Labels of every object: the three deploy/kustomization.yaml adds (tests/kube/test_helm_chart.py
compares them), and Helm's own. Pod templates carry only name and component, as in deploy/.
*/}}
{{- define "lustre-csi.labels" -}}
app.kubernetes.io/name: lustre-csi
app.kubernetes.io/part-of: lustre-csi
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* A ServiceAccount subject in the driver's namespace: (list $ "lustre-csi-controller"). */}}
{{- define "lustre-csi.subject" -}}
- kind: ServiceAccount
  name: {{ index . 1 }}
  namespace: {{ include "lustre-csi.namespace" (index . 0) }}
{{- end -}}

{{/* repository:tag of an image of .Values.images: (list $ "provisioner"). */}}
{{- define "lustre-csi.image" -}}
{{- $root := index . 0 -}}
{{- $image := index $root.Values.images (index . 1) -}}
{{- $tag := $image.tag | default $root.Chart.AppVersion -}}
image: {{ printf "%s:%s" (required "images.*.repository must not be empty" $image.repository) $tag }}
{{- with $root.Values.images.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end -}}

{{/*
The metrics containerPort for a --metrics-address: none when it is empty or on loopback (no
host means 127.0.0.1 to the driver), so only a port that others can reach is declared.
*/}}
{{- define "lustre-csi.metricsPort" -}}
{{- if . -}}
{{- $port := regexFind "[0-9]+$" . -}}
{{- $host := trimSuffix (printf ":%s" $port) . -}}
{{- if not $port -}}
{{- fail (printf "metrics address %q has no port" .) -}}
{{- end -}}
{{- if not (has $host (list "" "127.0.0.1" "localhost" "[::1]")) }}
- {name: metrics, containerPort: {{ $port }}}
{{- end -}}
{{- end -}}
{{- end -}}
