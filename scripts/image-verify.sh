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

# What install-cni copies to the host: the trellis binary and the reference plugins, each of which
# answers VERSION on its own (the runtime may ask before the agent is up).
for p in trellis loopback portmap; do
  bin=$app/cni-bin/$p
  [ -x "$bin" ] || fail "$bin is missing or not executable (containernetworking-plugins installed?)"
  out=$(CNI_COMMAND=VERSION "$bin" </dev/null) || fail "$bin: CNI VERSION exited non-zero"
  case $out in
    *'"supportedVersions"'*) ;;
    *) fail "$bin: CNI VERSION printed '$out'" ;;
  esac
done

echo "image-verify: ok: trellis $want in $app"
