#!/usr/bin/env bash
# A stand-in for docker, kind, kubectl and sleep that lets test/e2e/kind/run.sh run from start to finish
# without a Docker engine. test/unit/manifests/kind-suite.test.ts puts links named after those commands,
# all pointing here, first in PATH. Each call is answered the way a healthy three-node kind cluster with
# trellis installed would answer it; what changes (installed, restarted, node deleted, requests made)
# is kept in $FAKE_STATE, and every call is appended to $FAKE_STATE/calls. A call this file does not
# know fails loudly (exit 99), so the fake cannot silently drift from run.sh.
#
# Knobs (environment):
#   FAKE_BUSYBOX_LOAD_FAILS=1    `kind load docker-image <busybox>` fails as kubernetes-sigs/kind#3795 does
#   FAKE_SERVICE_REFUSALS=N      the first N requests to the ClusterIP are refused (kube-proxy not ready)
#   FAKE_INSTALL_REPLACES=NAME   installing trellis replaces the nodes' /opt/cni/bin/NAME
#   FAKE_NODE_TRELLIS=stale      /opt/cni/bin/trellis on the nodes is not the image's
#   FAKE_NODE_PLUGINS=none       the nodes have no loopback/portmap of their own
#   FAKE_EGRESS_UNANSWERED=1     pods' pings to the Docker host go unanswered (no masquerade)
#   FAKE_AGENT_JSON_NODES=1      the agents' logs say they could not read protobuf Nodes
#   FAKE_AGENT_ENCODING=json     the agents' status says the API server answered their Nodes in JSON
set -euo pipefail

state=${FAKE_STATE:?FAKE_STATE must name a directory}
self=$(basename "$0")
printf '%s %s\n' "$self" "$*" >>"$state/calls"

unexpected() {
  echo "kind-fake: unexpected call: $self $*" >&2
  exit 99
}

sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# What a node file holds, as a string; fails (like sha256sum on a missing file) when there is none.
node_file() {
  local path=$1 name
  name=$(basename "$path")
  case $name in
    trellis)
      [ -e "$state/installed" ] || return 1
      if [ "${FAKE_NODE_TRELLIS:-}" = stale ]; then echo 'trellis 0.0.1'; else echo 'image /app/cni-bin/trellis'; fi
      ;;
    loopback | portmap)
      if [ -e "$state/installed" ] && [ "${FAKE_INSTALL_REPLACES:-}" = "$name" ]; then
        echo "image /app/cni-bin/$name"
      elif [ "${FAKE_NODE_PLUGINS:-}" = none ]; then
        [ -e "$state/installed" ] || return 1
        echo "image /app/cni-bin/$name"
      else
        echo "node's own $name"
      fi
      ;;
    *) return 1 ;;
  esac
}

sha256sum_files() {
  local f content status=0
  for f in "$@"; do
    if content=$(node_file "$f"); then
      echo "$(sha "$content")  $f"
    else
      echo "sha256sum: $f: No such file or directory" >&2
      status=1
    fi
  done
  return $status
}

# One count per name, kept across calls.
bump() {
  local n=0
  [ -f "$state/count-$1" ] && n=$(cat "$state/count-$1")
  echo $((n + 1)) >"$state/count-$1"
  echo "$n"
}

fake_docker() {
  case $1 in
    info | pull | build | rmi) return 0 ;;
    buildx) [ "${2:-}" = version ] || unexpected "$@" ;;
    image) [ "${2:-}" = inspect ] || unexpected "$@" ;;
    run)
      # docker run --rm --entrypoint sha256sum IMAGE FILE...: the image's own files.
      [ "$*" = "run --rm --entrypoint sha256sum ${*: -2:1} /app/cni-bin/trellis" ] || unexpected "$@"
      echo "$(sha 'image /app/cni-bin/trellis')  /app/cni-bin/trellis"
      ;;
    exec)
      local node=$2
      shift 2
      case $1 in
        sha256sum) sha256sum_files "${@:2}" ;;
        systemctl) [ "$*" = 'systemctl stop kubelet' ] || unexpected exec "$node" "$@" ;;
        curl)
          case ${*: -1} in
            */metrics) printf '# HELP up fake\n# TYPE up gauge\nup 1\n' ;;
            */healthz | */readyz) ;;
            *) unexpected exec "$node" "$@" ;;
          esac
          ;;
        ip)
          case "$3 $4 $5" in
            # ip -4|-6 route show exact CIDR: present until the node it belongs to is deleted.
            'route show exact') [ -e "$state/node-deleted" ] || echo "$6 via 172.18.0.4 dev eth0 proto 126" ;;
            # ip -4|-6 route show default: kind's network gateway, the Docker host.
            'route show default')
              if [ "$2" = -4 ]; then
                echo 'default via 172.18.0.1 dev eth0'
              else
                echo 'default via fc00:f853:ccd:e793::1 dev eth0 metric 1024 pref medium'
              fi
              ;;
            *) unexpected exec "$node" "$@" ;;
          esac
          ;;
        sh)
          case $3 in
            *'ls /etc/cni/net.d'*) ;;
            *CNI_COMMAND=VERSION*)
              node_file /opt/cni/bin/trellis >/dev/null || return 126
              echo '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}'
              ;;
            *) unexpected exec "$node" "$@" ;;
          esac
          ;;
        *) unexpected exec "$node" "$@" ;;
      esac
      ;;
    *) unexpected "$@" ;;
  esac
}

fake_kind() {
  case "$1 $2" in
    'create cluster' | 'delete cluster') ;;
    'get nodes')
      # Not in name order: kind lists containers as Docker returns them.
      printf '%s\n' "$4-worker" "$4-control-plane" "$4-worker2"
      ;;
    'load docker-image')
      case $3 in
        *busybox*)
          if [ "${FAKE_BUSYBOX_LOAD_FAILS:-}" = 1 ]; then
            echo 'ERROR: failed to load image: command "docker exec --privileged -i n ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -" failed with error: exit status 1' >&2
            echo 'ctr: content digest sha256:0123456789abcdef: not found' >&2
            return 1
          fi
          ;;
      esac
      ;;
    *) unexpected "$@" ;;
  esac
}

fake_kubectl() {
  local args=("$@")
  # Drop the namespace flags: the fake answers the same in every namespace.
  local -a rest=()
  while [ $# -gt 0 ]; do
    case $1 in
      -n) shift 2 ;;
      -A) shift ;;
      *)
        rest+=("$1")
        shift
        ;;
    esac
  done
  set -- "${rest[@]}"
  case "$1 ${2:-}" in
    'apply -k') touch "$state/installed" ;;
    'apply -f') cat >/dev/null ;;
    'create namespace' | 'wait --for=condition=Ready' | 'rollout status' | 'describe daemonset') ;;
    'rollout restart') touch "$state/restarted" ;;
    'delete node') touch "$state/node-deleted" ;;
    'get pod') echo -n "10.244.${3#web-}.2 " ;;
    'get pods')
      case $* in
        *uid*) if [ -e "$state/restarted" ]; then echo -n 'uid-d uid-e uid-f'; else echo -n 'uid-a uid-b uid-c'; fi ;;
        *'-o name'*) printf 'pod/trellis-1\npod/trellis-2\npod/trellis-3\n' ;;
        *'-o wide'*) ;;
        *) unexpected "${args[@]}" ;;
      esac
      ;;
    'get nodes') ;;
    'get service') echo -n '10.96.100.1' ;;
    'get node') echo -n '10.244.2.0/24' ;;
    'logs '* | 'exec '*)
      # As a real API server has it: the deleted node's agent pod is still listed (pod GC takes it
      # later), but with no Node and no kubelet its logs and exec fail.
      if [ "$2" = pod/trellis-3 ] && [ -e "$state/node-deleted" ]; then
        echo 'Error from server (NotFound): nodes "trellis-worker2" not found' >&2
        return 1
      fi
      ;;&
    'logs '*)
      if [ "${FAKE_AGENT_JSON_NODES:-}" = 1 ]; then
        echo '{"level":50,"msg":"node informer failed","err":"list nodes: the answer is not a readable protobuf NodeList (x); Nodes are asked for in JSON from now on"}'
      fi
      ;;
    'exec '*)
      local cmd=("${@:3}")
      if [ "${cmd[0]}" = -c ]; then cmd=("${cmd[@]:2}"); fi # a container named
      [ "${cmd[0]}" = -- ] || unexpected "${args[@]}"
      fake_exec "${cmd[@]:1}"
      ;;
    *) unexpected "${args[@]}" ;;
  esac
}

# kubectl exec POD -- CMD...: CMD starts at $1.
fake_exec() {
  case $1 in
    ping)
      case ${*: -1} in
        172.18.0.1 | fc00:f853:ccd:e793::1) [ "${FAKE_EGRESS_UNANSWERED:-}" != 1 ] ;;
        10.244.*) ;;
        *) unexpected exec "$@" ;;
      esac
      ;;
    sh) ;; # the background pinger and its kill
    trellis-agent)
      [ "$*" = 'trellis-agent status --json' ] || unexpected exec "$@"
      printf '{\n  "node": "n",\n  "watch": {\n    "synced": true,\n    "encoding": "%s"\n  }\n}\n' "${FAKE_AGENT_ENCODING:-protobuf}"
      ;;
    cat) echo '30 packets transmitted, 30 packets received, 0% packet loss' ;;
    wget)
      local url=${*: -1} out=false n
      case " $* " in *' -O - '*) out=true ;; esac
      case $url in
        http://10.244.*:8080/)
          n=${url#http://10.244.}
          if $out; then echo "web-${n%%.*}"; fi
          ;;
        http://10.96.100.1/)
          n=$(bump service)
          if [ "$n" -lt "${FAKE_SERVICE_REFUSALS:-0}" ]; then
            echo 'wget: can'"'"'t connect to remote host (10.96.100.1): Connection refused' >&2
            return 1
          fi
          if $out; then echo "web-$((n % 3))"; fi
          ;;
        http://web.*.svc.cluster.local/) ;;
        *) unexpected exec "$@" ;;
      esac
      ;;
    *) unexpected exec "$@" ;;
  esac
}

case $self in
  sleep) ;;
  docker) fake_docker "$@" ;;
  kind) fake_kind "$@" ;;
  kubectl) fake_kubectl "$@" ;;
  *) unexpected "$@" ;;
esac
