{{/*
Names. Every name the chart gives comes from here, so the templates and the flags that must
agree with them (RBAC subjects, policy usernames, --lease-namespace, ...) cannot drift apart.
*/}}

{{/* Base name of the controller's objects (ServiceAccount, roles, Lease, Service prefix). */}}
{{- define "checkpointing.controller.name" -}}
{{- .Values.controller.name | default (printf "%s-controller" .Release.Name) -}}
{{- end }}

{{- define "checkpointing.controller.namespace" -}}
{{- .Values.controller.namespace | default .Release.Namespace -}}
{{- end }}

{{- define "checkpointing.controller.deployment" -}}
{{- .Values.controller.deploymentName | default (include "checkpointing.controller.name" .) -}}
{{- end }}

{{- define "checkpointing.controller.webhookService" -}}
{{- printf "%s-webhook" (include "checkpointing.controller.name" .) -}}
{{- end }}

{{/* Base name of noded's objects (ServiceAccount, roles). */}}
{{- define "checkpointing.noded.name" -}}
{{- .Values.noded.name | default (printf "%s-noded" .Release.Name) -}}
{{- end }}

{{- define "checkpointing.noded.namespace" -}}
{{- .Values.noded.namespace | default .Release.Namespace -}}
{{- end }}

{{- define "checkpointing.noded.daemonSet" -}}
{{- .Values.noded.daemonSetName | default (include "checkpointing.noded.name" .) -}}
{{- end }}

{{- define "checkpointing.leases.namespace" -}}
{{- .Values.leases.namespace | default (printf "%s-node-leases" .Release.Name) -}}
{{- end }}

{{/* Prefix of the cluster-scoped objects that belong to no daemon (policies, audience role). */}}
{{- define "checkpointing.prefix" -}}
{{- .Values.clusterPrefix | default .Release.Name -}}
{{- end }}

{{/* The usernames the API server gives the daemons' ServiceAccounts (admission policies). */}}
{{- define "checkpointing.controller.user" -}}
{{- printf "system:serviceaccount:%s:%s" (include "checkpointing.controller.namespace" .) (include "checkpointing.controller.name" .) -}}
{{- end }}

{{- define "checkpointing.noded.user" -}}
{{- printf "system:serviceaccount:%s:%s" (include "checkpointing.noded.namespace" .) (include "checkpointing.noded.name" .) -}}
{{- end }}

{{/*
The webhook registration (the controller's --webhook-configuration-name) and the Secret of its
certificate (--webhook-tls-secret), named after the release so that two releases never share
them: <prefix>-restore and <controller>-webhook-tls (the seed's names with its values).
*/}}
{{- define "checkpointing.webhookConfiguration" -}}{{ include "checkpointing.prefix" . }}-restore{{- end }}
{{- define "checkpointing.webhookTlsSecret" -}}{{ include "checkpointing.controller.name" . }}-webhook-tls{{- end }}

{{/*
Labels. "checkpointing.meta" writes an object's `labels:` (indented by .indent, after a
newline), or nothing when it has none: the recommended labels (unless .Values.recommendedLabels
is off) over the object's own (.labels).
*/}}
{{- define "checkpointing.recommended" -}}
{{- $labels := dict -}}
{{- if .ctx.Values.recommendedLabels -}}
{{- $labels = dict
    "app.kubernetes.io/name" .ctx.Chart.Name
    "app.kubernetes.io/instance" .ctx.Release.Name
    "app.kubernetes.io/component" .component
    "app.kubernetes.io/part-of" .ctx.Chart.Name
    "app.kubernetes.io/managed-by" .ctx.Release.Service
    "app.kubernetes.io/version" .ctx.Chart.AppVersion -}}
{{- end -}}
{{- toYaml $labels -}}
{{- end }}

{{- define "checkpointing.meta" -}}
{{- $labels := merge (dict) (.labels | default dict) (include "checkpointing.recommended" . | fromYaml) -}}
{{- if $labels }}
{{ "labels:" | indent (int .indent) }}
{{- toYaml $labels | nindent (add (int .indent) 2 | int) }}
{{- end }}
{{- end }}

{{/* Selector labels of a daemon's pods: .Values.<daemon>.selectorLabels, else the release's. */}}
{{- define "checkpointing.selector" -}}
{{- $own := index .ctx.Values .component "selectorLabels" -}}
{{- if $own -}}
{{- toYaml $own -}}
{{- else -}}
{{- toYaml (dict "app.kubernetes.io/name" .ctx.Chart.Name "app.kubernetes.io/instance" .ctx.Release.Name "app.kubernetes.io/component" .component) -}}
{{- end -}}
{{- end }}

{{/* An image reference: repository, then @digest when set, else :tag (default: appVersion). */}}
{{- define "checkpointing.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/*
The repositories whose images are checkpoint images besides the node-local registry's: the
push registry's and .Values.registry.checkpointRepositories, in that order (the controller's
--checkpoint-repository and the webhook's match condition list them alike).
*/}}
{{- define "checkpointing.repositories" -}}
{{- $all := list -}}
{{- with .Values.registry.push.repository }}{{ $all = append $all . }}{{ end -}}
{{- range .Values.registry.checkpointRepositories }}{{ $all = append $all . }}{{ end -}}
{{- join "," $all -}}
{{- end }}

{{/*
The CEL condition that sends a pod to the restore webhook: what
CheckpointImages::match_condition (controller/src/webhook/guard.rs) builds from
--checkpoint-registry-port and --checkpoint-repository. The controller's registration must
equal it (it may change nothing but the CA), so this follows it character by character. A
repository's pattern is its path as whole components (Docker Hub's `library/` left out), dots
escaped, matched against the lower-cased image.
*/}}
{{- define "checkpointing.matchCondition" -}}
{{- $image := printf "c.image.matches('^[^/]*:0*%v/') || c.image.matches('^(?i)(sha256:[0-9a-f]+|[0-9a-f]{12,64})$')" .Values.registry.port -}}
{{- range (include "checkpointing.repositories" . | splitList ",") }}
{{- if . }}
{{- $r := . | trim | trimSuffix "/" | lower -}}
{{- $first := regexFind "^[^/]*" $r -}}
{{- $host := "docker.io" -}}
{{- $path := $r -}}
{{- if or (contains "." $first) (contains ":" $first) (eq $first "localhost") -}}
{{- $host = $first -}}
{{- $path = trimPrefix (printf "%s/" $first) $r -}}
{{- end -}}
{{- $hub := has $host (list "docker.io" "index.docker.io" "registry-1.docker.io") -}}
{{- if and $hub (hasPrefix "library/" $path) }}{{ $path = trimPrefix "library/" $path }}{{ end -}}
{{- $image = printf "%s || c.image.lowerAscii().matches('(^|/)%s($|[/:@])')" $image (replace "." "\\\\." $path) -}}
{{- end }}
{{- end -}}
{{- $uses := list -}}
{{- range list "containers" "initContainers" "ephemeralContainers" -}}
{{- $uses = append $uses (printf "(has(object.spec.%s) && object.spec.%s.exists(c, has(c.image) && (%s)))" . . $image) -}}
{{- end -}}
(has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.startsWith('checkpointing.zacchaeuschok.github.io/'))) || {{ join " || " $uses }}
{{- end }}
