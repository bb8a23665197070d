#!/usr/bin/env bash
# zonemount end to end on a kind cluster (`make e2e`). Needs a running Docker engine, kind and
# kubectl; helm comes from ./tools/helm (`make chart-tools`), or any helm on PATH.
#
#  1 preflight        tools present, Docker reachable
#  2 cluster          kind: control plane + 2 workers (kind-config.yaml), private kubeconfig
#  3 zones            workers labelled us-east-1d/use1-az4 and us-east-1a/use1-az6 (as on EKS)
#  4 images           build zonemount-operator, zonemount-node, e2e-moto; `kind load` them
#  5 moto             in-cluster S3/IAM/STS/EC2 stand-in (manifests/moto.yaml)
#  6 helm install     charts/zonemount with values-e2e.yaml; wait for the rollouts and for the
#                     node plugins to register with kubelet (CSINode topology keys)
#  7 custom resources S3ExpressBucket + 2 S3MountClasses Ready; StorageClasses written
#  8 examples         every examples/*.yaml holding S3ExpressBucket/S3MountClass, Ready (their
#                     import sources and by-name buckets are created in moto first)
#  9 static volume    a pod writes (files, rename-commit) and another pod reads back; the
#                     pod ran in the bucket's zone; the objects are in the bucket
#                     and the node plugin serves metrics
# 10 plugin restart   the node plugin under a pod with a live mount is deleted; after it is
#                     back, the pod reads through its mount again
# 11 per-pod claims   two pods, one generic ephemeral claim each: separate prefixes; the
#                     claims and PVs go away with the pods
# 12 spark            the SparkApplication example, where spark-operator is available
# 13 teardown         CRs deleted through their finalizers (bucket gone from moto),
#                     helm uninstall, cluster deleted
#
# Knobs (environment): E2E_CLUSTER (zonemount-e2e), E2E_KEEP_CLUSTER=1 (keep it afterwards),
# E2E_REUSE_CLUSTER=1 (use an existing cluster of that name), E2E_SKIP_BUILD=1 (images already
# loaded), E2E_EXAMPLES (examples dir, default examples/), E2E_SKIP_EXAMPLES=1, E2E_SPARK=auto|install|skip (auto: run if the SparkApplication
# CRD exists; install: install spark-operator with helm first), E2E_TIMEOUT (seconds per wait,
# 300), E2E_ARTIFACTS (diagnostics dir), KIND_NODE_IMAGE (kindest/node image to use).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=e2e/lib.sh
source "$HERE/lib.sh"

CLUSTER=${E2E_CLUSTER:-zonemount-e2e}
EXAMPLES=${E2E_EXAMPLES:-$REPO/examples}
TIMEOUT=${E2E_TIMEOUT:-300}
ARTIFACTS=${E2E_ARTIFACTS:-${TMPDIR:-/tmp}/zonemount-e2e-artifacts}
SPARK_MODE=${E2E_SPARK:-auto}
SPARK_OPERATOR_CHART_VERSION=${SPARK_OPERATOR_CHART_VERSION:-2.1.1}
RELEASE=zonemount
SYSTEM_NS=zonemount-system
E2E_NS=zonemount-e2e
MOTO_NS=s3-standin
DRIVER=s3.csi.zonemount.io
ZONE_LABEL=topology.kubernetes.io/zone
ZONE_ID_LABEL=topology.k8s.aws/zone-id
# moto's us-east-1 zone table: name -> AZ ID (the e2e bucket and the examples are in the first;
# moto creates directory buckets only in us-east-1).
ZONES=(us-east-1d us-east-1a)
ZONE_IDS=(use1-az4 use1-az6)

export PATH="$PATH:$REPO/tools"
HELM=${HELM:-$REPO/tools/helm}
[ -x "$HELM" ] || HELM=$(command -v helm || true)
export KUBECONFIG="${ARTIFACTS}/kubeconfig"
CREATED_CLUSTER=0

on_exit() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ] && [ -s "$KUBECONFIG" ]; then
    collect_diagnostics "$ARTIFACTS" || true
  fi
  if [ "$CREATED_CLUSTER" = 1 ] && [ "${E2E_KEEP_CLUSTER:-0}" != 1 ]; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  elif [ "$CREATED_CLUSTER" = 1 ]; then
    log "keeping cluster $CLUSTER: KUBECONFIG=$KUBECONFIG; delete it with: kind delete cluster --name $CLUSTER"
  fi
  if [ "$rc" -eq 0 ]; then
    log "PASSED: all ${E2E_STEP} steps in ${SECONDS}s"
  else
    log "diagnostics are in $ARTIFACTS"
  fi
  exit "$rc"
}
trap on_exit EXIT

moto_ctl() {
  kubectl -n "$MOTO_NS" exec -i deploy/moto -- python - "$@" <"$HERE/moto_ctl.py"
}

# ------------------------------------------------------------------------------------------
step "preflight"
need docker "install Docker (https://docs.docker.com/engine/install/)"
need kind "install kind: go install sigs.k8s.io/kind@v0.27.0 (or a release binary)"
need kubectl "install kubectl, or run 'make chart-tools' (puts one in ./tools)"
if [ -z "$HELM" ] || [ ! -x "$HELM" ]; then
  die "helm not found: run 'make chart-tools' (puts helm in ./tools)"
fi
docker info >/dev/null 2>&1 ||
  die "the Docker engine is not reachable (docker info failed): start it, or run on a machine with Docker"
mkdir -p "$ARTIFACTS"
log "helm: $("$HELM" version --short)  kind: $(kind version)  artifacts: $ARTIFACTS"

# ------------------------------------------------------------------------------------------
step "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  [ "${E2E_REUSE_CLUSTER:-0}" = 1 ] ||
    die "a kind cluster named $CLUSTER exists: delete it (kind delete cluster --name $CLUSTER) or set E2E_REUSE_CLUSTER=1"
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
else
  CREATED_CLUSTER=1
  kind create cluster --name "$CLUSTER" --config "$HERE/kind-config.yaml" \
    --kubeconfig "$KUBECONFIG" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kubectl get nodes -o wide

# ------------------------------------------------------------------------------------------
step "zone labels on the workers"
mapfile -t WORKERS < <(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' \
  -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
[ "${#WORKERS[@]}" -ge 2 ] || die "expected 2 worker nodes, found ${#WORKERS[@]}"
for i in 0 1; do
  kubectl label node "${WORKERS[$i]}" --overwrite \
    "$ZONE_LABEL=${ZONES[$i]}" "$ZONE_ID_LABEL=${ZONE_IDS[$i]}" >/dev/null
done
kubectl get nodes -L "$ZONE_LABEL" -L "$ZONE_ID_LABEL"

# ------------------------------------------------------------------------------------------
step "images"
if [ "${E2E_SKIP_BUILD:-0}" = 1 ]; then
  log "E2E_SKIP_BUILD=1: using the images already loaded into $CLUSTER"
else
  MOTO_VERSION=$("$REPO/.venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null || echo 5.2.5)
  docker build -f "$REPO/Dockerfile.operator" -t zonemount-operator:e2e "$REPO"
  docker build -f "$REPO/Dockerfile.node" -t zonemount-node:e2e "$REPO"
  docker build -f "$HERE/images/moto.Dockerfile" --build-arg "MOTO_VERSION=$MOTO_VERSION" \
    -t e2e-moto:e2e "$HERE/images"
  kind load docker-image --name "$CLUSTER" zonemount-operator:e2e zonemount-node:e2e e2e-moto:e2e
fi

# ------------------------------------------------------------------------------------------
step "moto (in-cluster AWS stand-in)"
kubectl apply -f "$HERE/manifests/moto.yaml"
kubectl -n "$MOTO_NS" rollout status deploy/moto --timeout="${TIMEOUT}s" ||
  die "moto did not become ready"
retry 60 "moto to answer" moto_ctl bucket-exists e2e-probe

# ------------------------------------------------------------------------------------------
step "helm install charts/zonemount"
kubectl create namespace "$SYSTEM_NS" --dry-run=client -o yaml | kubectl apply -f -
# moto accepts any key; these are dummies (on EKS the chart uses IRSA role ARNs instead).
kubectl -n "$SYSTEM_NS" create secret generic e2e-aws-credentials \
  --from-literal=AWS_ACCESS_KEY_ID=testing --from-literal=AWS_SECRET_ACCESS_KEY=testing \
  --dry-run=client -o yaml | kubectl apply -f -
"$HELM" upgrade --install "$RELEASE" "$REPO/charts/zonemount" -n "$SYSTEM_NS" \
  -f "$HERE/values-e2e.yaml"
for workload in deploy/$RELEASE-operator deploy/$RELEASE-controller ds/$RELEASE-node; do
  kubectl -n "$SYSTEM_NS" rollout status "$workload" --timeout="${TIMEOUT}s" ||
    die "$workload did not roll out"
done
csinode_has_zone() {
  kubectl get csinode "$1" -o jsonpath="{.spec.drivers[?(@.name==\"$DRIVER\")].topologyKeys}" |
    grep -q "$ZONE_LABEL"
}
for worker in "${WORKERS[@]}"; do
  retry "$TIMEOUT" "$DRIVER to register on $worker with a zone" csinode_has_zone "$worker"
done
kubectl get csidriver "$DRIVER"

# ------------------------------------------------------------------------------------------
step "custom resources: bucket and mount classes"
mapfile -t ROLES < <(grep -rhoE 'arn:aws:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+' \
  "$HERE/manifests" "$EXAMPLES" 2>/dev/null | sort -u)
[ "${#ROLES[@]}" -eq 0 ] || moto_ctl create-roles "${ROLES[@]}"
kubectl apply -f "$HERE/manifests/zonemount-e2e.yaml"
wait_for "$TIMEOUT" "S3ExpressBucket e2e-scratch Ready" -n "$E2E_NS" \
  --for=condition=Ready s3expressbucket/e2e-scratch
wait_for "$TIMEOUT" "the S3MountClasses Ready" --for=condition=Ready \
  s3mountclass/e2e-static s3mountclass/e2e-per-claim
BUCKET=$(kubectl -n "$E2E_NS" get s3expressbucket e2e-scratch -o jsonpath='{.status.bucketName}')
BUCKET_ZONE=$(kubectl -n "$E2E_NS" get s3expressbucket e2e-scratch -o jsonpath='{.status.availabilityZone}')
log "bucket $BUCKET in $BUCKET_ZONE"
[ "$BUCKET_ZONE" = "${ZONES[0]}" ] || die "bucket zone is '$BUCKET_ZONE', expected ${ZONES[0]}"
[ "$(moto_ctl bucket-exists "$BUCKET")" = yes ] || die "bucket $BUCKET is not in moto"
for sc in e2e-static e2e-per-claim; do
  [ "$(kubectl get storageclass "$sc" -o jsonpath='{.provisioner}')" = "$DRIVER" ] ||
    die "StorageClass $sc missing or not provisioned by $DRIVER"
  kubectl get storageclass "$sc" -o jsonpath='{.allowedTopologies}' | grep -q "$BUCKET_ZONE" ||
    die "StorageClass $sc does not restrict volumes to $BUCKET_ZONE"
done

# ------------------------------------------------------------------------------------------
step "examples"
if [ "${E2E_SKIP_EXAMPLES:-0}" = 1 ] || ! compgen -G "$EXAMPLES/*.yaml" >/dev/null; then
  log "no examples applied (E2E_SKIP_EXAMPLES=1 or no $EXAMPLES/*.yaml)"
else
  for f in "$EXAMPLES"/*.yaml; do
    grep -qE '^kind: (S3ExpressBucket|S3MountClass)$' "$f" || continue
    grep -qE '^kind: SparkApplication$' "$f" && continue
    ensure_namespaces "$f"
    # What the example expects to exist already in AWS: an import source, a bucket by name.
    for src in $(yaml_values '^    source: s3://[^[:space:]]+' "$f"); do
      src=${src#s3://}
      bucket=${src%%/*}
      prefix=${src#"$bucket"}
      moto_ctl seed "$bucket" "${prefix#/}"
    done
    for existing in $(yaml_values '^  bucketName: [^[:space:]]+' "$f"); do
      region=$(yaml_values '^  region: [a-z0-9-]+' "$f")
      region=${region%%$'\n'*}
      moto_ctl create-bucket "$existing" "${region:-us-east-1}"
    done
    log "applying ${f#"$REPO"/}"
    kubectl apply -f "$f"
    while read -r kind ns name; do
      case "$kind" in
        S3ExpressBucket) wait_for "$TIMEOUT" "$kind $ns/$name Ready" -n "$ns" --for=condition=Ready "s3expressbucket/$name" ;;
        S3MountClass) wait_for "$TIMEOUT" "$kind $name Ready" --for=condition=Ready "s3mountclass/$name" ;;
      esac
    done < <(kubectl get -f "$f" -o jsonpath='{range .items[*]}{.kind}{" "}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}')
  done
fi

# ------------------------------------------------------------------------------------------
step "static volume: write in one pod, read in another"
kubectl apply -f "$HERE/manifests/static-writer.yaml"
wait_pod_succeeded "$E2E_NS" static-writer "$TIMEOUT"
kubectl -n "$E2E_NS" logs static-writer | grep -q WRITER-OK || die "static-writer did not finish its script"
node=$(kubectl -n "$E2E_NS" get pod static-writer -o jsonpath='{.spec.nodeName}')
node_zone=$(kubectl get node "$node" -o jsonpath="{.metadata.labels['topology\.kubernetes\.io/zone']}")
[ "$node_zone" = "$BUCKET_ZONE" ] || die "static-writer ran on $node in '$node_zone', not in the bucket's zone $BUCKET_ZONE"
kubectl apply -f "$HERE/manifests/static-reader.yaml"
wait_pod_succeeded "$E2E_NS" static-reader "$TIMEOUT"
kubectl -n "$E2E_NS" logs static-reader | grep -q READER-OK || die "static-reader did not finish its script"
keys=$(moto_ctl list-keys "$BUCKET" static/)
for key in static/run/hello.txt static/run/blob.bin static/run/committed/part-00000; do
  grep -qx "$key" <<<"$keys" || die "object $key is not in bucket $BUCKET (keys: $keys)"
done
if grep -q '_temporary/attempt_0/part-00000' <<<"$keys"; then
  die "the renamed task directory still has objects under its old name"
fi

node_plugin_on() {
  kubectl -n "$SYSTEM_NS" get pods -l app.kubernetes.io/component=node \
    --field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}'
}
plugin=$(node_plugin_on "$node")
kubectl get --raw "/api/v1/namespaces/$SYSTEM_NS/pods/$plugin:9810/proxy/metrics" |
  grep -q '^zonemount_csi_published_volumes' || die "node plugin $plugin serves no zonemount metrics"
kubectl -n "$SYSTEM_NS" get endpoints "$RELEASE-node-metrics" -o jsonpath='{.subsets[*].addresses[*].ip}' |
  grep -q . || die "the metrics Service $RELEASE-node-metrics has no endpoints"

# ------------------------------------------------------------------------------------------
step "node plugin and mounter restarts: a live mount keeps serving / recovers"
kubectl apply -f "$HERE/manifests/static-survivor.yaml"
wait_for "$TIMEOUT" "static-survivor to be ready" -n "$E2E_NS" --for=condition=Ready pod/static-survivor
survivor_node=$(kubectl -n "$E2E_NS" get pod static-survivor -o jsonpath='{.spec.nodeName}')
plugin=$(node_plugin_on "$survivor_node")
survivor_reads() {
  kubectl -n "$E2E_NS" exec static-survivor -- sh -c 'cd /data/run && sha256sum -c blob.sha256'
}
log "deleting node plugin $plugin on $survivor_node while static-survivor has the volume mounted"
kubectl -n "$SYSTEM_NS" delete pod "$plugin" --wait=true --timeout="${TIMEOUT}s"
# The FUSE server lives in the mounter pod: the mount never noticed the plugin was gone.
survivor_reads || die "static-survivor could not read while the node plugin was restarting"
kubectl -n "$SYSTEM_NS" rollout status "ds/$RELEASE-node" --timeout="${TIMEOUT}s" ||
  die "the node plugin did not come back"
mounter=$(kubectl -n "$SYSTEM_NS" get pods -l app.kubernetes.io/component=mounter \
  --field-selector "spec.nodeName=$survivor_node" -o jsonpath='{.items[0].metadata.name}')
log "deleting mounter $mounter (the OnDelete upgrade step) under static-survivor"
kubectl -n "$SYSTEM_NS" delete pod "$mounter" --wait=true --timeout="${TIMEOUT}s"
# static-survivor mounts with HostToContainer: the replacement mount reaches it, no restart.
retry 120 "static-survivor to read its volume again after the mounter restart" survivor_reads
kubectl -n "$E2E_NS" delete pod static-survivor --wait=true --timeout="${TIMEOUT}s"

# ------------------------------------------------------------------------------------------
step "dynamic provisioning: one claim per pod"
kubectl apply -f "$HERE/manifests/per-pod-claims.yaml"
prefixes=()
for pod in claim-a claim-b; do
  wait_pod_succeeded "$E2E_NS" "$pod" "$TIMEOUT"
  kubectl -n "$E2E_NS" logs "$pod" | grep -q CLAIM-OK || die "$pod did not finish its script"
  pv=$(kubectl -n "$E2E_NS" get pvc "$pod-data" -o jsonpath='{.spec.volumeName}')
  [ -n "$pv" ] || die "claim $pod-data is not bound"
  prefix=$(kubectl get pv "$pv" -o jsonpath='{.spec.csi.volumeAttributes.prefix}')
  log "$pod: claim $pod-data -> $pv (prefix '$prefix')"
  [ -n "$prefix" ] || die "PV $pv has no prefix volume attribute"
  moto_ctl list-keys "$BUCKET" "$prefix" | grep -q "owner-$pod$" ||
    die "owner-$pod is not under $prefix in bucket $BUCKET"
  prefixes+=("$prefix")
done
[ "${prefixes[0]}" != "${prefixes[1]}" ] || die "both claims share the prefix ${prefixes[0]}"
pvs=$(kubectl -n "$E2E_NS" get pvc claim-a-data claim-b-data -o jsonpath='{.items[*].spec.volumeName}')
kubectl -n "$E2E_NS" delete pod claim-a claim-b --wait=true --timeout="${TIMEOUT}s"
for pv in $pvs; do
  retry "$TIMEOUT" "PV $pv to be deleted with its pod's claim" bash -c "! kubectl get pv '$pv'"
done

# ------------------------------------------------------------------------------------------
step "spark (SparkApplication example)"
spark_files=()
for f in "$EXAMPLES"/*.yaml; do
  [ -e "$f" ] && grep -qE '^kind: SparkApplication$' "$f" && spark_files+=("$f")
done
if [ "$SPARK_MODE" = skip ] || [ "${#spark_files[@]}" -eq 0 ]; then
  log "skipped (E2E_SPARK=$SPARK_MODE, ${#spark_files[@]} SparkApplication example(s))"
else
  if [ "$SPARK_MODE" = install ]; then
    mapfile -t spark_ns < <(yaml_values '^  namespace: [a-z0-9-]+' "${spark_files[@]}")
    "$HELM" repo add spark-operator https://kubeflow.github.io/spark-operator >/dev/null
    "$HELM" upgrade --install spark-operator spark-operator/spark-operator \
      --version "$SPARK_OPERATOR_CHART_VERSION" -n spark-operator --create-namespace \
      --set "spark.jobNamespaces={$(IFS=,; echo "${spark_ns[*]:-default}")}" --wait --timeout 10m
  fi
  if ! kubectl get crd sparkapplications.sparkoperator.k8s.io >/dev/null 2>&1; then
    log "skipped: spark-operator is not installed (set E2E_SPARK=install to install it)"
  else
    for f in "${spark_files[@]}"; do
      ensure_namespaces "$f"
      log "applying ${f#"$REPO"/}"
      kubectl apply -f "$f"
      while read -r kind ns name; do
        [ "$kind" = SparkApplication ] || continue
        until_=$((SECONDS + ${E2E_SPARK_TIMEOUT:-900}))
        while :; do
          state=$(kubectl -n "$ns" get sparkapplication "$name" -o jsonpath='{.status.applicationState.state}' 2>/dev/null || true)
          case "$state" in
            COMPLETED) log "SparkApplication $ns/$name COMPLETED"; break ;;
            FAILED | SUBMISSION_FAILED) die "SparkApplication $ns/$name $state" ;;
          esac
          [ "$SECONDS" -lt "$until_" ] || die "SparkApplication $ns/$name still '${state:-new}'"
          sleep 10
        done
      done < <(kubectl get -f "$f" -o jsonpath='{range .items[*]}{.kind}{" "}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}')
    done
  fi
fi

# ------------------------------------------------------------------------------------------
step "teardown through finalizers"
kubectl -n "$E2E_NS" delete pod static-writer static-reader static-survivor --ignore-not-found \
  --wait=true --timeout="${TIMEOUT}s"
kubectl -n "$E2E_NS" delete pvc e2e-static --wait=true --timeout="${TIMEOUT}s"
kubectl delete s3mountclass e2e-static e2e-per-claim --wait=true --timeout="${TIMEOUT}s" ||
  die "the S3MountClasses were not deleted (finalizer stuck?)"
for sc in e2e-static e2e-per-claim; do
  retry "$TIMEOUT" "StorageClass $sc to be deleted" bash -c "! kubectl get storageclass $sc"
done
kubectl -n "$E2E_NS" delete s3expressbucket e2e-scratch --wait=true --timeout="${TIMEOUT}s" ||
  die "S3ExpressBucket e2e-scratch was not deleted (finalizer stuck?)"
if [ "${E2E_SKIP_EXAMPLES:-0}" != 1 ]; then
  for f in "$EXAMPLES"/*.yaml; do
    grep -qsE '^kind: (S3ExpressBucket|S3MountClass|SparkApplication)$' "$f" || continue
    kubectl delete -f "$f" --ignore-not-found --wait=true --timeout="${TIMEOUT}s" ||
      die "the objects of ${f#"$REPO"/} were not deleted (finalizer stuck?)"
  done
fi
[ "$(moto_ctl bucket-exists "$BUCKET")" = no ] ||
  die "deletionPolicy: Delete left bucket $BUCKET in moto"
"$HELM" uninstall "$RELEASE" -n "$SYSTEM_NS" --wait --timeout 5m
step "done"
