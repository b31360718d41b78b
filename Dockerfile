# syntax=docker/dockerfile:1
#
# The trellis image: the node agent (Node 24 running dist/cmd/agent/main.js) and, for the install-cni
# init container to copy onto the host, the Bun-compiled CNI binary plus Debian's reference loopback and
# portmap plugins (copied only to a node that has none: they need glibc >= 2.34).
#
#   docker build -t ghcr.io/trellis-net/trellis:0.1.0 .                     # the builder's own CPU
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/trellis-net/trellis:0.1.0 .
#
# linux/amd64 and linux/arm64. The build stage runs on the builder's platform: the agent is JavaScript,
# the CNI binary is cross-compiled by Bun for the image's CPU (Bun fetches that CPU's runtime from the
# npm registry), and the production dependencies are installed for that CPU. Only the runtime stage's
# apt-get and its checks run under emulation. The build needs no network beyond the npm registry and
# Debian's mirrors, and BuildKit (the default builder), which sets BUILDPLATFORM and TARGETARCH.

# The Node the tests run (package.json's `node` dev dependency), not whatever 24.x the tag points at
# on the day of the build: the image runs what was tested. Bump both together.
ARG NODE_IMAGE=node:24.9.0-bookworm-slim

# ---- build: compile the agent and the CNI binary, then stage the runtime layout in /app ----
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS build
ARG TARGETARCH
WORKDIR /src
ENV CI=true \
    npm_config_audit=false \
    npm_config_fund=false \
    npm_config_update_notifier=false
# The lockfile, .npmrc and the Bun toolchain's manifest (a local dev dependency) first, so this layer
# is cached across source edits.
COPY package.json package-lock.json .npmrc ./
COPY scripts/bun-toolchain/package.json scripts/bun-toolchain/package.json
# --ignore-scripts: no dependency runs code at build time. The native addons (netlink, ffi-rs) ship
# prebuilt binaries, and the `node` dev dependency's installer is not wanted: the image's Node 24 builds.
RUN npm ci --ignore-scripts
# The rest of the checkout; .dockerignore keeps out node_modules, dist, tests and docs.
COPY . .
RUN npm run build -- --shim-arch="${TARGETARCH:?build with BuildKit, which sets TARGETARCH}"
# The production tree again, for the image's CPU (ffi-rs ships one package per CPU; netlink carries
# every CPU's prebuilt addon in its own).
RUN case "$TARGETARCH" in amd64) cpu=x64 ;; arm64) cpu=arm64 ;; *) echo "no trellis image for $TARGETARCH" >&2; exit 1 ;; esac \
 && npm ci --omit=dev --ignore-scripts --os=linux --cpu="$cpu" --libc=glibc
RUN scripts/image-stage.sh /src /app /usr/lib/cni

# ---- runtime: Node 24, nftables, iproute2 and the reference CNI plugins; no compilers, no npm ----
FROM ${NODE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="trellis" \
      org.opencontainers.image.description="trellis Kubernetes pod network: node agent and CNI plugin" \
      org.opencontainers.image.source="https://github.com/trellis-net/trellis" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ARG DEBIAN_FRONTEND=noninteractive
# containernetworking-plugins puts Debian's reference plugins in /usr/lib/cni (install-cni copies loopback
# and portmap from there to a node that has none). The agent does its networking over netlink and runs
# only `nft`, `iptables-legacy` on a host whose firewall still uses legacy iptables (x_tables, which
# nft cannot see; pkg/firewall/iptables-save.ts) and util-linux's `nsenter`, which runs the CNI binaries'
# VERSION in the host's mount namespace before the config list is written; iproute2 is there for the operator (`kubectl exec
# ds/trellis -- ip route`, as the docs use). npm, corepack and yarn are removed: nothing installs
# packages at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iptables iproute2 util-linux containernetworking-plugins \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack /opt/yarn-* \
 && rm -f /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg
# install-cni copies trellis, and loopback and portmap if missing, from here (links made by image-stage.sh).
# PATH: `kubectl exec -n kube-system ds/trellis -- trellis-agent status|doctor` works as documented.
ENV NODE_ENV=production \
    TRELLIS_CNI_SOURCE_DIR=/app/cni-bin \
    PATH=/app/dist/bin:$PATH
WORKDIR /app
COPY --from=build /app /app
# Fail the build, not the cluster: the agent starts, its dependencies load, the CNI binaries answer.
RUN --mount=type=bind,from=build,source=/src/scripts,target=/tmp/trellis-scripts \
    /tmp/trellis-scripts/image-verify.sh /app
ENTRYPOINT ["/app/dist/bin/trellis-agent"]
