#!/usr/bin/env bash
# trellis end-to-end suite on kind: builds the image, creates a cluster without a default CNI, installs
# trellis from manifests/ (image overridden), and checks what a pod network must do.
#
# usage: test/e2e/kind/run.sh              run; print one "skipped" line and exit 0 without Docker/kind
#        test/e2e/kind/run.sh --require    run; missing Docker/kind is a failure (exit 1)
#        test/e2e/kind/run.sh --preflight  only check the prerequisites: exit 0, or print why not and exit 3
#        test/e2e/kind/run.sh --print-manifests IMAGE
#                                          print what the suite applies (needs only kubectl)
#
# Environment (all optional):
#   TRELLIS_E2E_FAMILIES   clusters to run, in order (default "ipv4 dual": cluster-<family>.yaml; "ipv6"
#                          too, an IPv6-only cluster, where Docker gives kind's network IPv6)
#   TRELLIS_E2E_IMAGE      use this already-built image instead of building one from the checkout
#   TRELLIS_E2E_MODE       set the agent's TRELLIS_MODE (auto, host-gw, vxlan); default: the manifests' value
#   TRELLIS_E2E_MAX_LOST   ping replies a rolling update of the DaemonSet may lose (default 5, at 5/s)
#   TRELLIS_E2E_BUSYBOX    test pod image (default busybox:1.36), pulled once and loaded into the nodes
#                          (when kind cannot load it, the nodes pull it themselves)
#
# Every cluster it creates is deleted on exit, whatever happens (trap).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)

# $1 as a path relative to the directory $2, both absolute (kustomize takes no absolute resource path).
# In bash: GNU realpath's --relative-to is missing on macOS and BSDs.
relative_path() {
  # Both resolved first: kustomize resolves the overlay's own directory (macOS's /var is /private/var).
  local target base up=''
  target=$(cd "$1" && pwd -P) && base=$(cd "$2" && pwd -P) || return 1
  while [ "$base" != / ] && [ "$target" != "$base" ] && [ "${target#"$base"/}" = "$target" ]; do
    base=$(dirname "$base")
    up=../$up
  done
  if [ "$target" = "$base" ]; then
    echo "${up:-.}"
  elif [ "$base" = / ]; then
    echo "$up${target#/}"
  else
    echo "$up${target#"$base"/}"
  fi
}

# The kustomization the suite applies: manifests/ with the image under test and, if asked, another mode.
write_overlay() {
  local dir=$1 image=$2 resource
  mkdir -p "$dir"
  resource=$(relative_path "$root/manifests" "$dir") || {
    echo "run.sh: cannot work out the path from $dir to $root/manifests" >&2
    return 1
  }
  {
    echo 'apiVersion: kustomize.config.k8s.io/v1beta1'
    echo 'kind: Kustomization'
    echo 'resources:'
    echo "  - $resource"
    echo 'images:'
    echo '  - name: ghcr.io/trellis-net/trellis'
    echo "    newName: ${image%:*}"
    echo "    newTag: ${image##*:}"
    if [ -n "${TRELLIS_E2E_MODE:-}" ]; then
      echo 'patches:'
      echo '  - target: { version: v1, kind: ConfigMap, name: trellis-config }'
      echo '    patch: |-'
      echo "      - { op: replace, path: /data/TRELLIS_MODE, value: $TRELLIS_E2E_MODE }"
    fi
  } >"$dir/kustomization.yaml"
}

mode=run
case ${1:-} in
  '') ;;
  --require) mode=require ;;
  --preflight) mode=preflight ;;
  --print-manifests)
    # The tag is after the last colon of the last path element (a registry may have a port).
    if [ $# -ne 2 ] || [[ ${2##*/} != *:* ]]; then
      echo "usage: $0 --print-manifests IMAGE:TAG" >&2
      exit 2
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    write_overlay "$tmp/overlay" "$2"
    kubectl kustomize "$tmp/overlay"
    exit 0
    ;;
  *)
    echo "usage: $0 [--require|--preflight|--print-manifests IMAGE:TAG]" >&2
    exit 2
    ;;
esac

# ---- prerequisites --------------------------------------------------------------------------------
missing=()
command -v docker >/dev/null 2>&1 || missing+=("docker not in PATH")
command -v kind >/dev/null 2>&1 || missing+=("kind not in PATH")
command -v kubectl >/dev/null 2>&1 || missing+=("kubectl not in PATH")
if command -v docker >/dev/null 2>&1; then
  if ! docker_err=$(docker info 2>&1 >/dev/null); then
    first=$(printf '%s\n' "$docker_err" | grep -v '^[[:space:]]*$' | head -n 1 || true)
    missing+=("docker info failed: ${first:-exit status non-zero}")
  # The Dockerfile needs BuildKit (--platform=$BUILDPLATFORM, TARGETARCH, RUN --mount): Docker 23+
  # without the buildx plugin falls back to the legacy builder, which fails half-way through.
  elif [ -z "${TRELLIS_E2E_IMAGE:-}" ] && ! docker buildx version >/dev/null 2>&1; then
    missing+=("docker buildx (BuildKit) not available to build the image; install the buildx plugin or set TRELLIS_E2E_IMAGE")
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  reason=$(IFS=';'; echo "${missing[*]}")
  reason=${reason//;/; }
  line="kind e2e skipped: needs a running Docker engine and kind in PATH ($reason)"
  case $mode in
    run)
      echo "$line"
      exit 0
      ;;
    preflight)
      echo "$line"
      exit 3
      ;;
    require)
      echo "kind e2e FAILED: ${line#kind e2e skipped: }" >&2
      exit 1
      ;;
  esac
fi
[ "$mode" = preflight ] && exit 0

# ---- setup ----------------------------------------------------------------------------------------
families=${TRELLIS_E2E_FAMILIES:-ipv4 dual}
# Every family's config before anything is built or created (a typo found after the first cluster
# ran, or answered with diagnostics from the user's own kubeconfig context, helps nobody).
for family in $families; do
  if [ ! -f "$here/cluster-$family.yaml" ]; then
    echo "kind e2e: no kind config $here/cluster-$family.yaml for TRELLIS_E2E_FAMILIES entry '$family' (known: ipv4 dual ipv6)" >&2
    exit 1
  fi
done
max_lost=${TRELLIS_E2E_MAX_LOST:-5}
busybox=${TRELLIS_E2E_BUSYBOX:-busybox:1.36}
suffix=$(printf '%04x' $((RANDOM % 65536)))
ns=trellis-e2e
work=$(mktemp -d)
clusters=()
built_image=
plugins_before= # record_node_plugins

log() { echo "[kind-e2e $(date -u +%H:%M:%S)] $*"; }

cleanup() {
  local status=$?
  set +e
  # Nothing may stop the deletions now: a second Ctrl-C, or a reader of our output that is gone
  # (vitest exits at once on Ctrl-C; `| tee` interrupted): a write to its pipe would kill bash
  # with SIGPIPE before `kind delete` ran, leaving the node containers behind.
  trap '' PIPE INT TERM
  for c in ${clusters[@]+"${clusters[@]}"}; do
    # Never an empty name: `kind delete cluster --name ''` would delete the default cluster "kind".
    [ -n "$c" ] || continue
    if kind delete cluster --name "$c" >/dev/null 2>&1; then
      log "deleted cluster $c" || true
    else
      log "could NOT delete cluster $c: run kind delete cluster --name $c" || true
    fi
  done
  [ -n "$built_image" ] && docker rmi -f "$built_image" >/dev/null 2>&1
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE

# Prints what an operator would look at, then fails the run.
fail() {
  log "FAIL: $*"
  set +e
  kubectl get nodes -o wide
  kubectl get pods -A -o wide
  kubectl -n kube-system describe daemonset trellis | tail -n 30
  for p in $(kubectl -n kube-system get pods -l app.kubernetes.io/name=trellis -o name); do
    echo "---- $p"
    kubectl -n kube-system logs "$p" --all-containers --tail=80
  done
  exit 1
}

# Retries a command until it succeeds or the deadline (seconds) passes.
eventually() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 2
  done
}

if [ -n "${TRELLIS_E2E_IMAGE:-}" ]; then
  image=$TRELLIS_E2E_IMAGE
else
  image=trellis-e2e:$suffix
  log "building $image from $root"
  # buildx (required above) attaches a provenance attestation, which `docker save` leaves out of a
  # containerd image store's image and `kind load` then fails to import (kubernetes-sigs/kind#4236).
  DOCKER_BUILDKIT=1 docker build --provenance=false --sbom=false -t "$image" "$root"
  built_image=$image
fi
[[ ${image##*/} == *:* ]] || image=$image:latest
docker image inspect "$busybox" >/dev/null 2>&1 || docker pull -q "$busybox" >/dev/null
# What install-cni must put into every node's /opt/cni/bin/trellis, by checksum (sha256sum reads
# through the cni-bin link).
if ! trellis_sum=$(docker run --rm --entrypoint sha256sum "$image" /app/cni-bin/trellis); then
  log "FAIL: cannot checksum /app/cni-bin/trellis in $image"
  exit 1
fi
trellis_sum=${trellis_sum%% *}

# ---- checks ---------------------------------------------------------------------------------------
ips_of() { kubectl -n "$ns" get pod "$1" -o jsonpath='{range .status.podIPs[*]}{.ip}{" "}{end}'; }
url_host() { case $1 in *:*) echo "[$1]" ;; *) echo "$1" ;; esac; }

install_trellis() {
  write_overlay "$work/overlay-$1" "$image"
  kubectl apply -k "$work/overlay-$1"
}

# "node sha256 path" of each node's /opt/cni/bin/loopback and portmap, one line each, sorted.
node_plugin_sums() {
  local node sums
  for node in $(kind get nodes --name "$1"); do
    sums=$(docker exec "$node" sha256sum /opt/cni/bin/loopback /opt/cni/bin/portmap) || return 1
    awk -v node="$node" '{ print node, $1, $2 }' <<<"$sums"
  done | sort
}

# The nodes' own loopback and portmap (kind's node image ships them), before trellis is installed:
# install-cni must leave them exactly as they are.
record_node_plugins() {
  plugins_before=$(node_plugin_sums "$1") ||
    fail "cannot checksum the node's own /opt/cni/bin/loopback and portmap on $1 before trellis is installed"
}

# trellis installed the image's CNI binary, and replaced neither of the nodes' own plugins.
check_cni_binaries() {
  local node got out after sum file now
  for node in $(kind get nodes --name "$1"); do
    got=$(docker exec "$node" sha256sum /opt/cni/bin/trellis) || fail "$node: /opt/cni/bin/trellis not installed"
    [ "${got%% *}" = "$trellis_sum" ] ||
      fail "$node: /opt/cni/bin/trellis is not the image's /app/cni-bin/trellis (sha256 ${got%% *}, want $trellis_sum)"
    out=$(docker exec "$node" sh -c 'CNI_COMMAND=VERSION /opt/cni/bin/trellis </dev/null') ||
      fail "$node: /opt/cni/bin/trellis: CNI_COMMAND=VERSION failed"
    grep -q '"supportedVersions"' <<<"$out" || fail "$node: /opt/cni/bin/trellis answered VERSION with '$out'"
  done
  after=$(node_plugin_sums "$1") || fail "loopback or portmap missing from /opt/cni/bin on $1's nodes"
  while read -r node sum file; do
    now=$(awk -v node="$node" -v file="$file" '$1 == node && $3 == file { print $2 }' <<<"$after")
    [ "$now" = "$sum" ] ||
      fail "$node: $file changed when trellis was installed (sha256 $sum, now ${now:-missing}): trellis must not replace the node's own plugins"
  done <<<"$plugins_before"
  log "trellis is the image's on every node; the nodes' own loopback and portmap unchanged"
}

check_nodes() {
  local node metrics
  check_cni_binaries "$1"
  for node in $(kind get nodes --name "$1"); do
    docker exec "$node" sh -c 'ls /etc/cni/net.d | grep -q trellis' ||
      fail "$node: no trellis config list in /etc/cni/net.d"
    # The endpoints the DaemonSet's probes use, on the node's own network (hostNetwork).
    for path in /healthz /readyz; do
      docker exec "$node" curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:9743$path" ||
        fail "$node: GET :9743$path failed"
    done
    metrics=$(docker exec "$node" curl -fsS --max-time 5 http://127.0.0.1:9743/metrics) ||
      fail "$node: GET :9743/metrics failed"
    grep -q '^# TYPE ' <<<"$metrics" || fail "$node: /metrics is not Prometheus text"
  done
  log "config list, /healthz, /readyz and /metrics present on every node"
}

deploy_web() {
  local cluster=$1 i node
  kubectl create namespace "$ns"
  i=0
  for node in "$cluster-control-plane" "$cluster-worker" "$cluster-worker2"; do
    # One HTTP server per node; it answers with its pod name. All three tolerate the control-plane taint.
    kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: web-$i
  namespace: $ns
  labels: { app: web }
spec:
  nodeSelector: { kubernetes.io/hostname: $node }
  tolerations: [{ operator: Exists }]
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: $busybox
      imagePullPolicy: IfNotPresent
      command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
EOF
    i=$((i + 1))
  done
  kubectl -n "$ns" wait --for=condition=Ready pod -l app=web --timeout=180s || fail "web pods not Ready"
}

check_pods() {
  local family=$1 src dst ip ips got
  for dst in web-0 web-1 web-2; do
    ips=$(ips_of "$dst")
    local n
    n=$(echo "$ips" | wc -w)
    case $family in
      dual) [ "$n" -eq 2 ] || fail "$dst has IPs '$ips', want one IPv4 and one IPv6" ;;
      ipv6) if [ "$n" -ne 1 ] || [[ $ips != *:* ]]; then fail "$dst has IPs '$ips', want one IPv6"; fi ;;
      *) if [ "$n" -ne 1 ] || [[ $ips == *:* ]]; then fail "$dst has IPs '$ips', want one IPv4"; fi ;;
    esac
    for src in web-0 web-1 web-2; do
      [ "$src" = "$dst" ] && continue
      for ip in $ips; do
        kubectl -n "$ns" exec "$src" -- ping -c 2 -W 2 "$ip" >/dev/null || fail "ping $src -> $dst ($ip)"
        got=$(kubectl -n "$ns" exec "$src" -- wget -q -O - -T 5 "http://$(url_host "$ip"):8080/") ||
          fail "http $src -> $dst ($ip)"
        [ "$got" = "$dst" ] || fail "http $src -> $dst ($ip) answered '$got'"
      done
    done
  done
  log "pods on all three nodes reach each other ($family): ping and HTTP"
}

check_service() {
  local family=$1 policy=SingleStack ip got
  [ "$family" = dual ] && policy=RequireDualStack
  kubectl apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: { name: web, namespace: $ns }
spec:
  ipFamilyPolicy: $policy
  selector: { app: web }
  ports: [{ port: 80, targetPort: 8080 }]
EOF
  for ip in $(kubectl -n "$ns" get service web -o jsonpath='{.spec.clusterIPs[*]}'); do
    # Until kube-proxy has the Service's EndpointSlice, a request to the new ClusterIP may be refused.
    eventually 60 kubectl -n "$ns" exec web-1 -- wget -q -O /dev/null -T 5 "http://$(url_host "$ip")/" ||
      fail "service ClusterIP $ip from web-1: no answer within 60 s"
    for _ in 1 2 3; do
      got=$(kubectl -n "$ns" exec web-1 -- wget -q -O - -T 5 "http://$(url_host "$ip")/") ||
        fail "service ClusterIP $ip from web-1"
      case $got in web-[012]) ;; *) fail "service $ip answered '$got'" ;; esac
    done
  done
  # By name: CoreDNS (itself on the pod network) answers, then kube-proxy's service rules.
  eventually 60 kubectl -n "$ns" exec web-2 -- wget -q -O /dev/null -T 5 "http://web.$ns.svc.cluster.local/" ||
    fail "service by DNS name from web-2"
  log "service reachable by every ClusterIP and by DNS name ($family)"
}

# Pod traffic leaving the cluster is masqueraded: the Docker host, kind's network gateway, has no
# route to the pod CIDRs, so it answers a pod only when the pod's node rewrote the source address. Its
# address per family from a node's default route: `docker network inspect` omits the IPv6 gateway of
# a network made without --gateway, as kind makes its own (moby#38751).
check_egress() {
  local cluster=$1 family=$2 fam gw pod
  for fam in 4 6; do
    case $family:$fam in ipv4:6 | ipv6:4) continue ;; esac
    gw=$(docker exec "$cluster-worker" ip "-$fam" route show default | awk '$1 == "default" && $2 == "via" { print $3; exit }')
    [ -n "$gw" ] || fail "$cluster-worker has no IPv$fam default route: cannot find the Docker host to ping"
    for pod in web-0 web-1 web-2; do
      kubectl -n "$ns" exec "$pod" -- ping -c 2 -W 2 "$gw" >/dev/null ||
        fail "ping $pod -> $gw (kind's network gateway, the Docker host, outside the cluster): no answer; is pod traffic masqueraded?"
    done
  done
  log "pods on all three nodes reach the Docker host outside the cluster ($family): masqueraded"
}

check_rolling_update() {
  local family=$1 ip before after out sent received lost
  before=$(kubectl -n kube-system get pods -l app.kubernetes.io/name=trellis -o jsonpath='{.items[*].metadata.uid}')
  # Ping web-2 (worker2) from web-1 (worker) at 5/s, on every address, while every agent restarts.
  for ip in $(ips_of web-2); do
    kubectl -n "$ns" exec web-1 -- sh -c "nohup ping -i 0.2 -W 1 $ip >/tmp/ping-$ip.log 2>&1 &"
  done
  sleep 2
  kubectl -n kube-system rollout restart daemonset/trellis
  kubectl -n kube-system rollout status daemonset/trellis --timeout=300s || fail "rollout did not finish"
  sleep 3
  # shellcheck disable=SC2016 # expanded inside the pod
  kubectl -n "$ns" exec web-1 -- sh -c 'kill -INT $(pidof ping)'
  sleep 2
  after=$(kubectl -n kube-system get pods -l app.kubernetes.io/name=trellis -o jsonpath='{.items[*].metadata.uid}')
  for uid in $before; do
    case " $after " in *" $uid "*) fail "agent pod $uid was not replaced by the rolling update" ;; esac
  done
  for ip in $(ips_of web-2); do
    out=$(kubectl -n "$ns" exec web-1 -- cat "/tmp/ping-$ip.log")
    sent=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
    received=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    if [ -z "$sent" ] || [ -z "$received" ]; then
      fail "no ping summary for $ip: $(echo "$out" | tail -n 3)"
    fi
    [ "$sent" -ge 25 ] || fail "pinger to $ip sent only $sent packets: it did not run through the rollout"
    lost=$((sent - received))
    log "rolling update ($family): ping web-1 -> web-2 $ip: $sent sent, $lost lost (at most $max_lost)"
    [ "$lost" -le "$max_lost" ] || fail "rolling update lost $lost packets to $ip (max $max_lost)"
  done
}

check_node_delete() {
  local cluster=$1 victim=$1-worker2 cidrs cidr node flag
  cidrs=$(kubectl get node "$victim" -o jsonpath='{.spec.podCIDRs[*]}')
  [ -n "$cidrs" ] || fail "$victim has no pod CIDRs"
  route_present() { docker exec "$1" ip "$2" route show exact "$3" | grep -q .; }
  route_absent() { ! route_present "$@"; }
  for node in "$cluster-control-plane" "$cluster-worker"; do
    for cidr in $cidrs; do
      case $cidr in *:*) flag=-6 ;; *) flag=-4 ;; esac
      route_present "$node" "$flag" "$cidr" || fail "$node has no route to $victim's $cidr before the delete"
    done
  done
  # Stop the kubelet first so it cannot register the node again, then delete the Node object.
  docker exec "$victim" systemctl stop kubelet
  kubectl delete node "$victim"
  for node in "$cluster-control-plane" "$cluster-worker"; do
    for cidr in $cidrs; do
      case $cidr in *:*) flag=-6 ;; *) flag=-4 ;; esac
      eventually 60 route_absent "$node" "$flag" "$cidr" ||
        fail "$node still routes $cidr 60 s after node $victim was deleted: $(docker exec "$node" ip "$flag" route show exact "$cidr")"
    done
  done
  log "deleted node's routes ($cidrs) are gone from the other nodes"
}

# The agents list and watch Nodes in protobuf, read against k8s.io/api's field numbers; a real
# kube-apiserver is the one place that reading meets Go's encoder. A list or watch event it could not
# read would have turned the agent to JSON with this line (everything above would still pass), and its
# status says how the server last answered.
check_protobuf_nodes() {
  local p out
  for p in $(kubectl -n kube-system get pods -l app.kubernetes.io/name=trellis -o name); do
    out=$(kubectl -n kube-system logs "$p" -c agent --tail=-1) || fail "$p: no agent log"
    if grep -F 'Nodes are asked for in JSON from now on' <<<"$out"; then
      fail "$p could not read the API server's protobuf Nodes"
    fi
    # status exits 1 for anything it finds wrong; what matters here is what it says.
    out=$(kubectl -n kube-system exec "$p" -c agent -- trellis-agent status --json || true)
    grep -Eq '"encoding": *"protobuf"' <<<"$out" ||
      fail "$p: its status does not say the API server answered its Nodes in protobuf: $(grep -Eo '"encoding": *"[a-z]*"' <<<"$out" || echo 'no encoding')"
  done
  log "every agent read its Node list and watch in protobuf"
}

run_family() {
  local family=$1 cluster=trellis-$1-$suffix
  local config=$here/cluster-$family.yaml
  export KUBECONFIG=$work/kubeconfig-$cluster
  clusters+=("$cluster")
  log "creating cluster $cluster ($config)"
  kind create cluster --name "$cluster" --config "$config" --kubeconfig "$KUBECONFIG" --wait 0s
  kind load docker-image "$image" --name "$cluster"
  # With Docker's containerd image store, loading a multi-platform image such as busybox fails
  # (kubernetes-sigs/kind#3795: `ctr images import --all-platforms` wants every platform's content).
  # The test pods use imagePullPolicy: IfNotPresent, so the nodes then pull it themselves.
  if ! kind load docker-image "$busybox" --name "$cluster"; then
    log "warning: could not load $busybox into $cluster (kubernetes-sigs/kind#3795?); the nodes pull it themselves" >&2
  fi

  record_node_plugins "$cluster"
  install_trellis "$cluster"
  kubectl -n kube-system rollout status daemonset/trellis --timeout=300s || fail "trellis did not roll out"
  kubectl wait --for=condition=Ready nodes --all --timeout=300s || fail "nodes not Ready"
  log "nodes Ready"
  kubectl -n kube-system wait --for=condition=Ready pod -l k8s-app=kube-dns --timeout=300s ||
    fail "CoreDNS not Ready"
  log "CoreDNS Ready"
  check_nodes "$cluster"
  deploy_web "$cluster"
  check_pods "$family"
  check_service "$family"
  check_egress "$cluster" "$family"
  check_rolling_update "$family"
  check_cni_binaries "$cluster" # install-cni ran again, now over binaries it had seen before
  check_pods "$family"
  # Before the delete: the deleted node's agent pod stays in the API (pod GC takes it ~40-60 s
  # later) with no Node and no kubelet, so `kubectl logs` and `exec` on it would fail.
  check_protobuf_nodes
  check_node_delete "$cluster"

  log "cluster $cluster ($family): all checks passed"
  kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  local kept=() c
  for c in "${clusters[@]}"; do [ "$c" = "$cluster" ] || kept+=("$c"); done
  clusters=(${kept[@]+"${kept[@]}"})
}

for family in $families; do
  run_family "$family"
done
log "kind e2e passed: $families"
