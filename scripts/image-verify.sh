#!/bin/sh
# Smoke-tests an assembled trellis image layout. The Dockerfile runs it as the final stage's last build
# step (so a broken image fails the build, not the cluster); test/unit/manifests/image.test.ts runs it
# against a layout staged into a temp dir.
#
# usage: scripts/image-verify.sh APP_DIR CNI_PLUGIN_DIR
#   APP_DIR:        the layout from image-stage.sh (/app in the image)
#   CNI_PLUGIN_DIR: where Debian's reference plugins live (/usr/lib/cni)
# `node` on PATH must be Node >= 24 (the image's own).
set -eu

fail() {
  echo "image-verify: FAIL: $*" >&2
  exit 1
}

[ $# -eq 2 ] || fail "usage: image-verify.sh APP_DIR CNI_PLUGIN_DIR"
app=$1
plugins=$2

want=$(node -p 'require(process.argv[1]).version' "$app/package.json") || fail "cannot read $app/package.json"

# The agent starts through its launcher and knows its version.
got=$("$app/dist/bin/trellis-agent" --version) || fail "trellis-agent --version exited non-zero"
[ "$got" = "trellis-agent $want" ] || fail "trellis-agent --version printed '$got', want 'trellis-agent $want'"

# The launcher must use the image's Node, not a dev-only node package left in node_modules.
[ ! -e "$app/node_modules/.bin/node" ] || fail "$app/node_modules/.bin/node exists (a dev dependency leaked in)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 24 ] || fail "node on PATH is $(node --version); the agent needs Node >= 24"

# Every production dependency resolves and loads from the layout (native addons included).
(cd "$app" && node --input-type=module -e '
  import { readFileSync } from "node:fs";
  const deps = Object.keys(JSON.parse(readFileSync("package.json", "utf8")).dependencies ?? {});
  for (const d of deps) await import(d);
  console.log(`image-verify: ${deps.length} production dependencies load`);
') || fail "a production dependency does not load from $app/node_modules"

# The CNI binary answers VERSION on its own (the runtime may ask before the agent is up).
out=$(CNI_COMMAND=VERSION "$app/dist/bin/trellis" </dev/null) || fail "trellis CNI VERSION exited non-zero"
case $out in
  *'"supportedVersions"'*) ;;
  *) fail "trellis CNI VERSION printed '$out'" ;;
esac

# install-cni copies these reference plugins next to trellis.
for p in loopback portmap; do
  [ -x "$plugins/$p" ] || fail "reference plugin $plugins/$p is missing (containernetworking-plugins)"
done

echo "image-verify: ok: trellis $want in $app, plugins in $plugins"
