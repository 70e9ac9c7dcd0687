#!/bin/bash
# files/debian-root.sh ROOT MIRROR SUITE PACKAGE... — a root file system holding PACKAGEs and
# the closure of their dependencies from Debian SUITE, each unpacked with `dpkg-deb -x`, for
# images of unmodified Debian programs (testbed/up, ensure_app_images). Nothing else is added:
# not the Essential set (a debootstrap minbase is several times the size), no maintainer
# script runs, nothing is executed inside ROOT. Then: merged /usr, root and nobody in
# /etc/passwd, no documentation. What maintainer scripts would have made, such as the
# alternatives' awk -> mawk, is missing: name the program itself. The packages and versions
# are listed in ROOT/etc/testbed-image-packages. apt works on a private state and cache beside
# ROOT: the host's own package lists and dpkg database are never touched.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 ROOT MIRROR SUITE PACKAGE..." >&2; exit 2; }
root=$1 mirror=$2 suite=$3
shift 3
[ ! -e "$root" ] || { echo "$root exists" >&2; exit 1; }
apt_dir=$root.apt
rm -rf "$apt_dir"
trap 'rm -rf "$apt_dir"' EXIT
mkdir -p "$apt_dir"/{lists/partial,cache,archives/partial,empty} "$root"
: >"$apt_dir/status"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$apt_dir/sources.list"
# An empty dpkg status and pkgCacheGen::Essential=none: apt resolves the packages' own
# dependency closure, as if onto an empty machine that needs no Essential set. The host's
# preferences (pins for its own release) do not apply to another suite. Snapshot mirrors may
# serve expired Release files. Only the Packages index is fetched.
apt_() {
  apt-get -q -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts="$apt_dir/empty" \
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts="$apt_dir/empty" \
    -o Dir::State::Lists="$apt_dir/lists" -o Dir::State::status="$apt_dir/status" \
    -o Dir::Cache="$apt_dir/cache" -o Dir::Cache::archives="$apt_dir/archives" \
    -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" \
    -o Acquire::Check-Valid-Until=false -o Acquire::Languages=none \
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o APT::Install-Recommends=false \
    -o pkgCacheGen::Essential=none -o Debug::NoLocking=true "$@"
}
apt_ update
apt_ install -y --download-only "$@"

for deb in "$apt_dir"/archives/*.deb; do
  dpkg-deb -x "$deb" "$root"
  # shellcheck disable=SC2016 # dpkg-deb's own ${Field} syntax
  dpkg-deb --show --showformat '${Package} ${Version}\n' "$deb"
done | sort >"$apt_dir/packages"

# Merged /usr, as every Debian system since bookworm: the ELF interpreter is looked up at
# /lib64, scripts name /bin/sh. A package that still ships under /bin or /lib moves over.
for d in bin sbin lib lib64; do
  if [ -d "$root/$d" ] && [ ! -L "$root/$d" ]; then
    mkdir -p "$root/usr/$d"
    cp -a "$root/$d/." "$root/usr/$d/"
    rm -rf "${root:?}/$d"
  fi
  mkdir -p "$root/usr/$d"
  ln -s "usr/$d" "$root/$d"
done

mkdir -p "$root"/{etc,tmp,root,dev,proc,sys,run,var/tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$root/etc/nsswitch.conf"
rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,bug}
cp "$apt_dir/packages" "$root/etc/testbed-image-packages"
cat "$root/etc/testbed-image-packages"
