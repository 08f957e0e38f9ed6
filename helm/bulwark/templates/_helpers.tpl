{{/* Names, labels and the shared pieces of the controller pods. */}}

{{- define "bulwark.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bulwark.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bulwark.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bulwark.peers" -}}
{{ include "bulwark.fullname" . }}-peers
{{- end -}}

{{- define "bulwark.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The stable DNS name of a controller pod: (dict "ctx" $ "pod" "NAME"). */}}
{{- define "bulwark.podHost" -}}
{{ .pod }}.{{ include "bulwark.peers" .ctx }}.{{ .ctx.Release.Namespace }}.svc.cluster.local
{{- end -}}

{{/* Node ids of every site learner, as a list of dicts {site, id, pod, firstId}. */}}
{{- define "bulwark.siteFirstId" -}}
{{- $site := .site -}}
{{- if $site.firstNodeId -}}{{ $site.firstNodeId }}{{- else -}}{{ add 11 (mul 10 .index) }}{{- end -}}
{{- end -}}

{{/* Every node id the release runs: voters, then each site's learners. */}}
{{- define "bulwark.nodeIds" -}}
{{- $ids := list -}}
{{- range $i := until (int .Values.voters) -}}{{- $ids = append $ids (add1 $i) -}}{{- end -}}
{{- range $index, $site := .Values.sites -}}
{{- $first := include "bulwark.siteFirstId" (dict "site" $site "index" $index) | int -}}
{{- range $o := until (int $site.replicas) -}}{{- $ids = append $ids (add $first $o) -}}{{- end -}}
{{- end -}}
{{- toJson $ids -}}
{{- end -}}

{{- define "bulwark.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "bulwark.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
The PKI volume: the same layout (ca.pem, controller-<ID>.pem, controller-<ID>-key.pem,
admin-<NAME>.pem, admin-<NAME>-key.pem, ca-key.pem) from the pki Secret or from the
cert-manager Secrets. Mode 0440 with fsGroup: the pod copies what it needs to a
memory-backed emptyDir with mode 0600 (the controller refuses a CA key others can read).
*/}}
{{- define "bulwark.pkiVolume" -}}
- name: pki-src
{{- if .Values.certManager.enabled }}
  projected:
    defaultMode: 0440
    sources:
{{- range $i, $id := include "bulwark.nodeIds" . | fromJsonArray }}
      - secret:
          name: {{ include "bulwark.fullname" $ }}-controller-{{ $id }}
          items:
            - {key: tls.crt, path: controller-{{ $id }}.pem}
            - {key: tls.key, path: controller-{{ $id }}-key.pem}
{{- if eq $i 0 }}
            - {key: ca.crt, path: ca.pem}
{{- end }}
{{- end }}
      - secret:
          name: {{ include "bulwark.fullname" . }}-admin
          items:
            - {key: tls.crt, path: admin-{{ .Values.pki.adminName }}.pem}
            - {key: tls.key, path: admin-{{ .Values.pki.adminName }}-key.pem}
{{- if and .Values.pki.signAgents .Values.certManager.caKeySecret }}
      - secret:
          name: {{ .Values.certManager.caKeySecret }}
          items:
            - {key: tls.key, path: ca-key.pem}
{{- end }}
{{- else }}
  secret:
    secretName: {{ .Values.pki.secretName }}
    defaultMode: 0440
{{- end }}
- name: pki
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end -}}

{{/* Whether the controller gets --ca-key. */}}
{{- define "bulwark.signAgents" -}}
{{- if and .Values.pki.signAgents (or (not .Values.certManager.enabled) .Values.certManager.caKeySecret) -}}true{{- end -}}
{{- end -}}

{{/*
The controller pod spec: (dict "ctx" $ "firstId" N "component" "controller|learner"
"site" NAME "nodeSelector" MAP).
*/}}
{{- define "bulwark.controllerPod" -}}
{{- $ := .ctx -}}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets: {{ toYaml . | nindent 2 }}
{{- end }}
securityContext: {{ include "bulwark.podSecurityContext" $ | nindent 2 }}
terminationGracePeriodSeconds: 30
{{- with .nodeSelector }}
nodeSelector: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations: {{ toYaml . | nindent 2 }}
{{- end }}
affinity:
  podAntiAffinity:
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (dict "app.kubernetes.io/instance" $.Release.Name "app.kubernetes.io/component" .component "bulwark.io/site" .site)) }}
{{- if eq $.Values.podAntiAffinity "hard" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - {{ toYaml $term | nindent 8 | trim }}
{{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm: {{ toYaml $term | nindent 10 }}
{{- end }}
containers:
  - name: controller
    image: {{ include "bulwark.image" $ }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    securityContext: {{ include "bulwark.containerSecurityContext" $ | nindent 6 }}
    env:
      - name: POD_NAME
        valueFrom: {fieldRef: {fieldPath: metadata.name}}
      - name: FIRST_NODE_ID
        value: {{ .firstId | quote }}
      - name: PEER_DOMAIN
        value: {{ include "bulwark.peers" $ }}.{{ $.Release.Namespace }}.svc.cluster.local
      - name: BULWARK_LOG
        value: {{ $.Values.logFilter | quote }}
    # The node id is the pod's ordinal plus the first id of its StatefulSet; the node
    # advertises its stable DNS name. Its certificate is copied out of the mounted Secret
    # with mode 0600 first.
    command: ["/bin/sh", "-ec"]
    args:
      - |
        ordinal="${POD_NAME##*-}"
        id=$((ordinal + FIRST_NODE_ID))
        cp /etc/bulwark/pki-src/ca.pem /run/bulwark/pki/ca.pem
        cp "/etc/bulwark/pki-src/controller-$id.pem" /run/bulwark/pki/node.pem
        cp "/etc/bulwark/pki-src/controller-$id-key.pem" /run/bulwark/pki/node-key.pem
        {{- if include "bulwark.signAgents" $ }}
        cp /etc/bulwark/pki-src/ca-key.pem /run/bulwark/pki/ca-key.pem
        set -- --ca-key /run/bulwark/pki/ca-key.pem "$@"
        {{- end }}
        chmod 0600 /run/bulwark/pki/*
        exec bulwark-controller --node-id "$id" \
          --advertise "$POD_NAME.$PEER_DOMAIN:{{ $.Values.ports.grpc }}" \
          --listen "0.0.0.0:{{ $.Values.ports.grpc }}" \
          --http-listen "0.0.0.0:{{ $.Values.ports.http }}" \
          --data-dir /var/lib/bulwark/data \
          --cluster-name {{ $.Values.clusterName | quote }} \
          --tls-ca /run/bulwark/pki/ca.pem \
          --tls-cert /run/bulwark/pki/node.pem \
          --tls-key /run/bulwark/pki/node-key.pem "$@"
      - bulwark-controller
{{- range $.Values.extraArgs }}
      - {{ . | quote }}
{{- end }}
    ports:
      - {name: grpc, containerPort: {{ $.Values.ports.grpc }}, protocol: TCP}
      - {name: http, containerPort: {{ $.Values.ports.http }}, protocol: TCP}
    livenessProbe:
      httpGet: {path: /healthz, port: http}
      initialDelaySeconds: 5
      periodSeconds: 10
      failureThreshold: 3
    readinessProbe:
      httpGet: {path: /readyz, port: http}
      periodSeconds: 5
      failureThreshold: 2
    resources: {{ toYaml $.Values.resources | nindent 6 }}
    volumeMounts:
      - {name: data, mountPath: /var/lib/bulwark}
      - {name: pki-src, mountPath: /etc/bulwark/pki-src, readOnly: true}
      - {name: pki, mountPath: /run/bulwark/pki}
volumes: {{ include "bulwark.pkiVolume" $ | nindent 2 }}
{{- end -}}

{{/* The volume claim template of every controller StatefulSet. */}}
{{- define "bulwark.volumeClaims" -}}
- metadata:
    name: data
  spec:
    accessModes: {{ toYaml .Values.persistence.accessModes | nindent 6 }}
    {{- with .Values.persistence.storageClass }}
    storageClassName: {{ . | quote }}
    {{- end }}
    resources:
      requests:
        storage: {{ .Values.persistence.size }}
{{- end -}}

{{/* bulwarkctl's environment in the hook Jobs: the admin certificate, the voters. */}}
{{- define "bulwark.ctlEnv" -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.voters) -}}
{{- $eps = append $eps (printf "%s:%v" (include "bulwark.podHost" (dict "ctx" $ "pod" (printf "%s-controller-%d" (include "bulwark.fullname" $) $i))) $.Values.ports.grpc) -}}
{{- end -}}
- name: BULWARK_ENDPOINTS
  value: {{ join "," $eps | quote }}
- name: BULWARK_TLS_CA
  value: /run/bulwark/pki/ca.pem
- name: BULWARK_TLS_CERT
  value: /run/bulwark/pki/admin.pem
- name: BULWARK_TLS_KEY
  value: /run/bulwark/pki/admin-key.pem
{{- end -}}

{{- define "bulwark.ctlCopyPki" -}}
cp /etc/bulwark/pki-src/ca.pem /run/bulwark/pki/ca.pem
cp /etc/bulwark/pki-src/admin-{{ .Values.pki.adminName }}.pem /run/bulwark/pki/admin.pem
cp /etc/bulwark/pki-src/admin-{{ .Values.pki.adminName }}-key.pem /run/bulwark/pki/admin-key.pem
chmod 0600 /run/bulwark/pki/*
{{- end -}}
