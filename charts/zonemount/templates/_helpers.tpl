{{/*
Naming, labels, images and the AWS environment shared by every template.
Invariant: object names stay within 63 characters and every object carries the same
app.kubernetes.io/* labels, plus app.kubernetes.io/component for workloads.
*/}}

{{- define "zonemount.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "zonemount.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The CSI driver name is part of the API (PVs record it): never templated from values. */}}
{{- define "zonemount.driverName" -}}s3.csi.zonemount.io{{- end -}}

{{- define "zonemount.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "zonemount.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zonemount
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "zonemount.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zonemount.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: (dict "ctx" $ "component" "operator") */}}
{{- define "zonemount.componentLabels" -}}
{{ include "zonemount.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "zonemount.componentSelector" -}}
{{ include "zonemount.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* ServiceAccount name of one component: (dict "ctx" $ "component" "node" "sa" .Values.node.serviceAccount) */}}
{{- define "zonemount.serviceAccountName" -}}
{{- if .sa.create -}}
{{- default (printf "%s-%s" (include "zonemount.fullname" .ctx) .component) .sa.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .component .component) .sa.name -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount annotations: IRSA role ARN + extra annotations. */}}
{{- define "zonemount.serviceAccountAnnotations" -}}
{{- $ann := deepCopy (default (dict) .annotations) -}}
{{- if .roleArn -}}
{{- $_ := set $ann "eks.amazonaws.com/role-arn" .roleArn -}}
{{- end -}}
{{- if $ann }}
annotations:
  {{- toYaml $ann | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* image reference: (dict "image" .Values.x.image "ctx" $) -> repo:tag */}}
{{- define "zonemount.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "zonemount.controllerImage" -}}
{{- $repo := default .Values.operator.image.repository .Values.controller.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.operator.image.tag) .Values.controller.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Environment every zonemount container gets: region, endpoint, test credentials. */}}
{{- define "zonemount.awsEnv" -}}
{{- with .Values.aws.region }}
- name: AWS_REGION
  value: {{ . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.aws.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- /* the operator's own switch: path-style S3 and local IAM/EC2/STS at this URL */}}
- name: ZONEMOUNT_AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.aws.disableS3ExpressSessionAuth }}
{{- /* zonemount's FUSE client and botocore's own switch (every other boto3 client) */}}
- name: ZONEMOUNT_DISABLE_S3_EXPRESS_SESSION_AUTH
  value: "1"
- name: AWS_S3_DISABLE_EXPRESS_SESSION_AUTH
  value: "true"
{{- end }}
{{- with .Values.aws.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end -}}

{{/* Security context of every container except the node plugin: no privileges at all. */}}
{{- define "zonemount.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod security context of the non-root pods (operator, controller). */}}
{{- define "zonemount.nonRootPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The operator's tenancy settings file (zonemount_operator.tenancy's format). */}}
{{- define "zonemount.tenancy" -}}
rolePaths:
  {{- toYaml .Values.tenancy.rolePaths | nindent 2 }}
importSources:
  {{- toYaml .Values.tenancy.importSources | nindent 2 }}
namespaces:
  {{- toYaml .Values.tenancy.namespaces | nindent 2 }}
adopt:
  {{- toYaml .Values.tenancy.adopt | nindent 2 }}
{{- end -}}

{{/*
Each FUSE server's --max-memory-target in MiB (R-FLAGS-MEMORY-TARGET): a quarter of the
mounter's per-mount memory bound; empty without a mounter or a bound (the FUSE client's
default). The node plugin passes it to every mount; the operator says in an S3MountClass's
condition what it makes the mounts cut.
*/}}
{{- define "zonemount.mountMemoryTarget" -}}
{{- $mounter := .Values.node.mounter -}}
{{- if and $mounter.enabled (gt (int $mounter.maxMemoryPerMountMiB) 0) -}}
{{- max 1 (div (int $mounter.maxMemoryPerMountMiB) 4) -}}
{{- end -}}
{{- end -}}
