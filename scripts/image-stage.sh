#!/bin/sh
# Assembles the runtime layout of the trellis image from a built checkout:
#   DEST/package.json
#   DEST/dist/...            the compiled agent, its launcher and the Bun-compiled CNI binary
#   DEST/node_modules/...    the production dependency tree only (what `npm ls --omit=dev` lists)
#   DEST/cni-bin/            what install-cni copies to the host (TRELLIS_CNI_SOURCE_DIR in the image;
#                            loopback and portmap only to a node that has none):
#                            trellis -> ../dist/bin/trellis, loopback and portmap -> PLUGIN_DIR/...
#                            (PLUGIN_DIR is filled by the runtime stage's apt-get: the links may dangle
#                            until then)
#
# The Dockerfile's build stage runs it (DEST=/app, copied whole into the final stage), and
# test/unit/manifests/image.test.ts runs it into a temp dir, so the image layout is exercised without a
# Docker engine. Only production packages are copied whether or not `npm prune --omit=dev` ran first, so
# running it against a developer checkout does not drag typescript, vitest or Bun along.
#
# usage: scripts/image-stage.sh SRC DEST [PLUGIN_DIR]
#   SRC: a checkout after `npm ci` and `npm run build`
#   PLUGIN_DIR: Debian's reference CNI plugins (default /usr/lib/cni, containernetworking-plugins)
set -eu

die() {
  echo "image-stage: $*" >&2
  exit 1
}

[ $# -eq 2 ] || [ $# -eq 3 ] || die "usage: image-stage.sh SRC DEST [PLUGIN_DIR]"
plugins=${3:-/usr/lib/cni}
case $plugins in /*) ;; *) die "PLUGIN_DIR must be absolute: $plugins" ;; esac
src=$(cd "$1" && pwd) || die "source checkout $1 not found"
dest=$2

for f in package.json dist/version.json dist/cmd/agent/main.js dist/cmd/agent/stop-signal.js dist/bin/trellis-agent dist/bin/trellis; do
  [ -e "$src/$f" ] || die "$src/$f is missing: run \`npm ci && npm run build\` in $src first"
done
[ -x "$src/dist/bin/trellis" ] || die "$src/dist/bin/trellis is not executable"
[ -x "$src/dist/bin/trellis-agent" ] || die "$src/dist/bin/trellis-agent is not executable"
command -v npm >/dev/null 2>&1 || die "npm is needed to list the production dependencies"

# Fail before touching DEST if the installed tree does not satisfy the lockfile's production deps.
prod=$(cd "$src" && npm ls --omit=dev --all --parseable 2>/dev/null) ||
  die "npm ls --omit=dev failed in $src: node_modules is missing or incomplete (run npm ci)"

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
[ -z "$(ls -A "$dest")" ] || die "destination $dest is not empty"

cp "$src/package.json" "$dest/package.json"
cp -a "$src/dist" "$dest/dist"

# Each package without its nested node_modules: nested packages are listed (and copied) on their own,
# and a nested dev-only package must not come along with its parent.
printf '%s\n' "$prod" | while IFS= read -r pkg; do
  [ "$pkg" = "$src" ] && continue
  case $pkg in
    "$src"/node_modules/*) ;;
    *) die "unexpected package path outside $src/node_modules: $pkg" ;;
  esac
  rel=${pkg#"$src"/}
  mkdir -p "$dest/$rel"
  (cd "$pkg" && tar --exclude=./node_modules -cf - .) | (cd "$dest/$rel" && tar -xf -)
done

mkdir "$dest/cni-bin"
ln -s ../dist/bin/trellis "$dest/cni-bin/trellis"
for p in loopback portmap; do
  ln -s "$plugins/$p" "$dest/cni-bin/$p"
done

count=$(printf '%s\n' "$prod" | grep -c '/node_modules/')
echo "image-stage: $dest: dist/, $count production packages, cni-bin/ (plugins from $plugins)"
