# shellcheck shell=bash
# Helpers for e2e/run.sh: numbered steps with timing, waits with deadlines, and diagnostics.
#
# Invariants: every failure names the step that broke and leaves its diagnostics in
# $E2E_ARTIFACTS; no helper waits without a deadline; nothing here prints a secret (the
# e2e uses dummy moto credentials only).

E2E_STEP=0
E2E_STEP_NAME="start-up"
E2E_STEP_STARTED=$SECONDS

log() { printf '%s [e2e] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

die() {
  log "FAILED in step ${E2E_STEP} (${E2E_STEP_NAME}): $*"
  exit 1
}

step() {
  if [ "$E2E_STEP" -gt 0 ]; then
    log "step ${E2E_STEP} done in $((SECONDS - E2E_STEP_STARTED))s"
  fi
  E2E_STEP=$((E2E_STEP + 1))
  E2E_STEP_NAME="$*"
  E2E_STEP_STARTED=$SECONDS
  log "== step ${E2E_STEP}: $*"
}

need() {
  local tool=$1 hint=$2
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed: $hint"
}

# yaml_values ERE FILE...: the values (2nd word) of the lines matching ERE, sorted, unique.
# Prints nothing and still succeeds when no line matches (safe under set -e and pipefail).
yaml_values() {
  local pattern=$1
  shift
  { grep -hoE "$pattern" "$@" 2>/dev/null || true; } | awk '{print $2}' | sort -u
}

# ensure_namespaces FILE...: create every metadata namespace the manifests name.
ensure_namespaces() {
  local ns
  for ns in $(yaml_values '^  namespace: [a-z0-9-]+' "$@"); do
    kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  done
}

# retry DEADLINE_SECONDS DESCRIPTION CMD...: run CMD until it succeeds or the deadline passes.
retry() {
  local deadline=$1 what=$2
  shift 2
  local until_=$((SECONDS + deadline))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$until_" ]; then
      die "timed out after ${deadline}s waiting for ${what}"
    fi
    sleep 3
  done
}

# wait_for TIMEOUT WHAT KUBECTL_WAIT_ARGS...: kubectl wait, dying with WHAT on timeout.
wait_for() {
  local timeout=$1 what=$2
  shift 2
  kubectl wait --timeout="${timeout}s" "$@" >/dev/null ||
    die "timed out after ${timeout}s waiting for ${what}"
}

# pod_phase NAMESPACE POD -> the pod's phase (empty when absent).
pod_phase() {
  kubectl -n "$1" get pod "$2" -o jsonpath='{.status.phase}' 2>/dev/null || true
}

# wait_pod_succeeded NAMESPACE POD TIMEOUT: Succeeded -> 0; Failed or timeout -> die with logs.
wait_pod_succeeded() {
  local ns=$1 pod=$2 timeout=$3 phase
  local until_=$((SECONDS + timeout))
  while :; do
    phase=$(pod_phase "$ns" "$pod")
    case "$phase" in
      Succeeded) return 0 ;;
      Failed)
        kubectl -n "$ns" logs "$pod" --all-containers >&2 || true
        die "pod $ns/$pod failed (its log is above)"
        ;;
    esac
    if [ "$SECONDS" -ge "$until_" ]; then
      kubectl -n "$ns" describe pod "$pod" >&2 || true
      die "pod $ns/$pod still '${phase:-absent}' after ${timeout}s (describe is above)"
    fi
    sleep 3
  done
}

# collect_diagnostics DIR: cluster state and every zonemount container's log, for post-mortems.
collect_diagnostics() {
  local dir=$1
  mkdir -p "$dir"
  log "collecting diagnostics into $dir"
  kubectl get nodes -o wide --show-labels >"$dir/nodes.txt" 2>&1 || true
  kubectl get all,pvc,pv,storageclass,csidriver,csinode -A -o wide >"$dir/objects.txt" 2>&1 || true
  kubectl get s3expressbuckets,s3mountclasses -A -o yaml >"$dir/zonemount-crs.yaml" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1 || true
  local ns pod
  while read -r ns pod; do
    [ -n "$pod" ] || continue
    kubectl -n "$ns" logs "$pod" --all-containers --prefix >"$dir/logs-$ns-$pod.txt" 2>&1 || true
    kubectl -n "$ns" describe pod "$pod" >"$dir/describe-$ns-$pod.txt" 2>&1 || true
  done < <(kubectl get pods -A --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name 2>/dev/null |
    grep -E '^(zonemount-system|zonemount-e2e|s3-standin|spark-operator) ' || true)
}
