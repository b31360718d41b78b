#!/bin/sh
# Smoke-tests an assembled trellis image layout. The Dockerfile runs it as the final stage's last build
# step (so a broken image fails the build, not the cluster); test/unit/manifests/image.test.ts runs it
# against a layout staged into a temp dir.
#
# usage: scripts/image-verify.sh APP_DIR     (the layout from image-stage.sh: /app in the image)
# `node` on PATH must be Node >= 24 (the image's own).
set -eu

fail() {
  echo "image-verify: FAIL: $*" >&2
  exit 1
}

[ $# -eq 1 ] || fail "usage: image-verify.sh APP_DIR"
app=$1

want=$(node -p 'require(process.argv[1]).version' "$app/package.json") || fail "cannot read $app/package.json"

# The agent starts through its launcher and knows its version.
got=$("$app/dist/bin/trellis-agent" --version) || fail "trellis-agent --version exited non-zero"
[ "$got" = "trellis-agent $want" ] || fail "trellis-agent --version printed '$got', want 'trellis-agent $want'"

# The launcher must use the image's Node, not a dev-only node package left in node_modules.
[ ! -e "$app/node_modules/.bin/node" ] || fail "$app/node_modules/.bin/node exists (a dev dependency leaked in)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 24 ] || fail "node on PATH is $(node --version); the agent needs Node >= 24"

# Every production dependency resolves and loads from the layout (native addons included).
# shellcheck disable=SC2016 # JavaScript, not shell
(cd "$app" && node --input-type=module -e '
  import { readFileSync } from "node:fs";
  const deps = Object.keys(JSON.parse(readFileSync("package.json", "utf8")).dependencies ?? {});
  for (const d of deps) await import(d);
  console.log(`image-verify: ${deps.length} production dependencies load`);
') || fail "a production dependency does not load from $app/node_modules"

# The programs the agent runs: nft for its own table and the host firewall, legacy iptables where the
# host's firewall still uses it (pkg/firewall/legacy-host.ts), iptables-nft-save for what iptables-nft's
# extensions match (pkg/firewall/read.ts), nsenter (util-linux) to run the CNI binaries' VERSION in the
# host's mount namespace before the config list is written (pkg/cniconf/chain-versions.ts).
for t in nft iptables-legacy ip6tables-legacy iptables-legacy-save ip6tables-legacy-save iptables-nft-save ip6tables-nft-save nsenter; do
  command -v "$t" >/dev/null || fail "$t is not on PATH (nftables, iptables and util-linux installed?)"
done

# The CNI binary is built for this image's CPU. The build stage cross-compiles it on the builder's
# platform, and a binary for another CPU could still start here (the builder's own CPU runs natively
# under emulation) or fail with a bare "not found" from a missing loader: compare the ELF header's
# machine (e_machine, 2 bytes at offset 18; both CPUs are little-endian) with this one.
case $(uname -m) in
  x86_64) want_machine=62 ;;
  aarch64) want_machine=183 ;;
  *) fail "no trellis image for CPU $(uname -m)" ;;
esac
shim=$app/cni-bin/trellis
[ "$(od -An -c -N4 "$shim" 2>/dev/null | tr -d ' ')" = '177ELF' ] || fail "$shim is not an ELF executable"
machine=$(od -An -tu2 -j18 -N2 "$shim" | tr -d ' ')
[ "$machine" = "$want_machine" ] ||
  fail "$shim is built for ELF machine $machine, this image's CPU ($(uname -m)) is $want_machine"

# What install-cni copies to the host: the trellis binary, and the reference plugins where the node has
# none; each answers VERSION on its own (the runtime may ask before the agent is up).
for p in trellis loopback portmap; do
  bin=$app/cni-bin/$p
  [ -x "$bin" ] || fail "$bin is missing or not executable (containernetworking-plugins installed?)"
  out=$(CNI_COMMAND=VERSION "$bin" </dev/null) || fail "$bin: CNI VERSION exited non-zero"
  case $out in
    *'"supportedVersions"'*) ;;
    *) fail "$bin: CNI VERSION printed '$out'" ;;
  esac
done

# install-cni (the init container) finds them through TRELLIS_CNI_SOURCE_DIR, set by the image, and
# into an empty bin dir installs exactly these three, byte for byte, and no config list.
[ "${TRELLIS_CNI_SOURCE_DIR:-}" = "$app/cni-bin" ] ||
  fail "TRELLIS_CNI_SOURCE_DIR is '${TRELLIS_CNI_SOURCE_DIR:-}', want $app/cni-bin (the Dockerfile sets it)"
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
"$app/dist/bin/trellis-agent" install-cni --cni-bin-dir="$target/bin" --cni-conf-dir="$target/net.d" \
  --state-dir="$target/state" --socket="$target/run/cni.sock" >"$target/log" 2>&1 ||
  fail "trellis-agent install-cni failed: $(tail -n 5 "$target/log")"
installed=$(find "$target/bin" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | tr '\n' ' ')
[ "$installed" = "loopback portmap trellis " ] ||
  fail "install-cni installed '$installed', want loopback portmap trellis"
# The config list is the running agent's job, once ready: install-cni must not write one.
[ ! -e "$target/net.d" ] || [ -z "$(find "$target/net.d" -mindepth 1)" ] ||
  fail "install-cni wrote into the CNI config directory: $(find "$target/net.d" -mindepth 1)"
for p in trellis loopback portmap; do
  cmp -s "$app/cni-bin/$p" "$target/bin/$p" || fail "install-cni: $target/bin/$p differs from $app/cni-bin/$p"
  [ -x "$target/bin/$p" ] || fail "install-cni: $target/bin/$p is not executable"
done

# On a node with its own loopback and portmap, those stay exactly as they are (the image's are Debian
# builds that need glibc >= 2.34), while an outdated trellis is replaced.
node=$target/node-bin
mkdir "$node" "$target/orig"
for p in loopback portmap trellis; do
  printf '#!/bin/sh\necho node-own-%s\n' "$p" >"$node/$p"
  chmod 0700 "$node/$p"
  cp -p "$node/$p" "$target/orig/$p"
done
"$app/dist/bin/trellis-agent" install-cni --cni-bin-dir="$node" --cni-conf-dir="$target/net.d" \
  --state-dir="$target/state" --socket="$target/run/cni.sock" >"$target/log" 2>&1 ||
  fail "trellis-agent install-cni over a node's own plugins failed: $(tail -n 5 "$target/log")"
for p in loopback portmap; do
  cmp -s "$target/orig/$p" "$node/$p" || fail "install-cni replaced the node's own $p"
  [ "$(stat -c %a "$node/$p")" = 700 ] || fail "install-cni changed the mode of the node's own $p"
done
cmp -s "$app/cni-bin/trellis" "$node/trellis" || fail "install-cni did not replace an outdated trellis"
grep -q "kept the node's own loopback, portmap" "$target/log" ||
  fail "install-cni did not log the plugins it kept: $(tail -n 5 "$target/log")"

echo "image-verify: ok: trellis $want in $app"
