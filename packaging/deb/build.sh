#!/usr/bin/env bash
# build.sh: Rivet's two Debian packages, reproducibly (no debhelper, no source package).
#
#   VERSION=v1.2.3 packaging/deb/build.sh --bin bin --boot build/initramfs --out build/deb
#
# --bin holds rivet and rivet-agent (make build); --boot holds vmlinuz and initramfs.zst
# (rivet-mkinitramfs); --ipxe (default /usr/lib/ipxe, Debian's ipxe package) holds
# undionly.kpxe, snponly.efi and ipxe.efi. Writes OUT/rivet_DEBVERSION_amd64.deb and
# OUT/rivet-agent_DEBVERSION_amd64.deb and removes older versions of them from OUT.
# The same inputs and SOURCE_DATE_EPOCH (default: the last commit's time) give
# byte-identical packages: files sorted, owned by root, mtimes clamped to the epoch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/maintscript.sh"

bin="" boot="" out="" ipxe=/usr/lib/ipxe
ipxe_files=(undionly.kpxe snponly.efi ipxe.efi)
while [ $# -gt 0 ]; do
	case $1 in
	--bin) bin=$2; shift 2 ;;
	--boot) boot=$2; shift 2 ;;
	--ipxe) ipxe=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	*) echo "build.sh: unknown argument $1 (want --bin DIR --boot DIR --out DIR [--ipxe DIR])" >&2; exit 2 ;;
	esac
done
[ -n "$bin" ] && [ -n "$boot" ] && [ -n "$out" ] || { echo "build.sh: --bin, --boot and --out are required" >&2; exit 2; }
for f in "$bin/rivet" "$bin/rivet-agent" "$boot/vmlinuz" "$boot/initramfs.zst"; do
	[ -f "$f" ] || { echo "build.sh: $f is missing (run make build, then rivet-mkinitramfs)" >&2; exit 1; }
done
for f in "${ipxe_files[@]}"; do
	[ -f "$ipxe/$f" ] || { echo "build.sh: $ipxe/$f is missing (apt-get install ipxe, or bash .ci/install-debs)" >&2; exit 1; }
done

# deb_version turns `git describe --tags --always --dirty` into a Debian version:
# v1.2.3 -> 1.2.3, v1.2.3-4-gabc -> 1.2.3+4.gabc, abc1234-dirty -> 0.0.0~abc1234.dirty.
# A tag is vN... or N.N...; anything else (a bare commit hash, "dev") sorts below 0.0.0.
deb_version() {
	local v=$1
	v=$(printf '%s' "$v" | tr -c 'A-Za-z0-9.+~-' '.')
	if [[ $v =~ ^v[0-9] || $v =~ ^[0-9]+\.[0-9] ]]; then
		v=${v#v}
		v=${v/-/+}
		v=${v//-/.}
	else
		v=0.0.0~${v//-/.}
	fi
	printf '%s\n' "$v"
}

version=$(deb_version "${VERSION:-dev}")
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
maintainer="Rivet maintainers <rivet@rivetmetal.invalid>"
homepage="https://github.com/rivetmetal/rivet"

umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# put MODE SRC DEST: copy one file into a package tree.
put() { install -D -m "$1" "$2" "$3"; }

docs() { # docs ROOT PKG: the copyright and changelog every Debian package carries
	# (changelog.gz: a native package, its version has no Debian revision)
	local d=$1/usr/share/doc/$2
	mkdir -p "$d"
	cat >"$d/copyright" <<TEXT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: rivet
Source: $homepage

Files: *
Copyright: The Rivet authors
License: see $homepage
TEXT
	printf '%s (%s) stable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n' \
		"$2" "$version" "${VERSION:-dev}" "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" |
		gzip -9n >"$d/changelog.gz"
}

# control ROOT PKG DEPENDS RECOMMENDS SUMMARY BODY: DEBIAN/control with Installed-Size
# counted the way dpkg-gencontrol counts it (KiB per file, rounded up, 1 per dir/link).
control() {
	local root=$1 pkg=$2 depends=$3 recommends=$4 summary=$5 body=$6 size
	size=$(cd "$root" && find . -path ./DEBIAN -prune -o -mindepth 1 -printf '%y %s\n' |
		awk '$1=="f"{s+=int(($2+1023)/1024)} $1!="f"{s+=1} END{print s+0}')
	{
		echo "Package: $pkg"
		echo "Version: $version"
		echo "Architecture: amd64"
		echo "Maintainer: $maintainer"
		echo "Installed-Size: $size"
		[ -n "$depends" ] && echo "Depends: $depends"
		[ -n "$recommends" ] && echo "Recommends: $recommends"
		echo "Section: admin"
		echo "Priority: optional"
		echo "Homepage: $homepage"
		echo "Description: $summary"
		printf '%s\n' "$body" | fold -s -w 78 | sed -e 's/[[:space:]]*$//' -e 's/^/ /'
	} >"$root/DEBIAN/control"
}

# pack ROOT PKG: md5sums (for dpkg --verify; conffiles have their own), normalised
# modes and times, then dpkg-deb --build.
pack() {
	local root=$1 pkg=$2 deb=$out/${2}_${version}_amd64.deb
	(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
		grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles 2>/dev/null || true) | xargs -r -d '\n' md5sum) >"$root/DEBIAN/md5sums"
	find "$root" -type d -exec chmod 0755 {} +
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	rm -f "$out/${pkg}"_*_amd64.deb
	dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
	printf '%s\n' "$deb"
}

build_rivet() {
	local r=$work/rivet
	mkdir -p "$r/DEBIAN"
	put 0755 "$bin/rivet" "$r/usr/bin/rivet"
	put 0644 "$repo/packaging/systemd/rivet-coordinator.service" "$r/lib/systemd/system/rivet-coordinator.service"
	# The unit's settings, edited by the admin: a conffile, kept on upgrade. 0600: it may
	# hold the join token.
	put 0600 "$repo/packaging/systemd/rivet-coordinator.default" "$r/etc/default/rivet-coordinator"
	echo /etc/default/rivet-coordinator >"$r/DEBIAN/conffiles"
	# A complete --boot-dir: the RAM agent's kernel and initramfs under the names the
	# boot services ask for by default, and Debian's iPXE binaries for the TFTP chainload.
	# Copies, not links to /usr/lib/ipxe: the TFTP server never follows a link out of
	# its directory (it is an os.Root), so a linked snponly.efi is "access violation".
	put 0644 "$boot/vmlinuz" "$r/usr/lib/rivet/boot/vmlinuz"
	put 0644 "$boot/initramfs.zst" "$r/usr/lib/rivet/boot/initrd.zst"
	[ -f "$boot/initramfs.json" ] && put 0644 "$boot/initramfs.json" "$r/usr/lib/rivet/boot/initramfs.json"
	local f
	for f in "${ipxe_files[@]}"; do put 0644 "$ipxe/$f" "$r/usr/lib/rivet/boot/$f"; done
	put 0644 "$repo/packaging/config/roles.example.yaml" "$r/usr/share/rivet/examples/roles.example.yaml"
	put 0644 "$repo/packaging/config/agent.yaml" "$r/usr/share/rivet/examples/agent.yaml"
	docs "$r" rivet
	cat >>"$r/usr/share/doc/rivet/copyright" <<TEXT

Files: usr/lib/rivet/boot/undionly.kpxe usr/lib/rivet/boot/snponly.efi usr/lib/rivet/boot/ipxe.efi
Copyright: The iPXE authors, https://ipxe.org (copied from Debian's ipxe package at build time)
License: GPL-2+, see /usr/share/common-licenses/GPL-2
TEXT
	# Not started on first install: a coordinator bootstraps a cluster when it starts, and
	# the admin may want it to join an existing one instead (RIVET_OPTS=--join ... in
	# /etc/default/rivet-coordinator), or must first set RIVET_ADVERTISE.
	write_maintscripts "$r/DEBIAN" rivet-coordinator.service no
	control "$r" rivet "init-system-helpers (>= 1.54~)" "" \
		"bare-metal provisioning coordinator and CLI" \
		"Rivet turns racked servers into a running Docker Swarm. This package holds the coordinator daemon (Raft store, API, status pages, proxyDHCP/TFTP/HTTP boot services), the operator CLI, and the network-boot kernel, initramfs and iPXE binaries under /usr/lib/rivet/boot. Set the advertised address and the boot interface in /etc/default/rivet-coordinator, then: systemctl start rivet-coordinator"
	pack "$r" rivet
}

build_agent() {
	local r=$work/rivet-agent
	mkdir -p "$r/DEBIAN"
	put 0755 "$bin/rivet-agent" "$r/usr/bin/rivet-agent"
	put 0644 "$repo/packaging/systemd/rivet-agent.service" "$r/lib/systemd/system/rivet-agent.service"
	put 0644 "$repo/packaging/config/agent.yaml" "$r/etc/rivet/agent.yaml.example"
	echo /etc/rivet/agent.yaml.example >"$r/DEBIAN/conffiles"
	docs "$r" rivet-agent
	# Started on install; the unit's ConditionPathExists=/etc/rivet/agent.yaml keeps it
	# idle until the RAM agent (or the admin) writes the config.
	write_maintscripts "$r/DEBIAN" rivet-agent.service yes
	control "$r" rivet-agent "init-system-helpers (>= 1.54~)" "docker.io" \
		"Rivet agent for installed machines" \
		"The Rivet agent under systemd: checks in with the coordinators after the first boot from disk and runs the installed-OS steps of the machine's plan, such as joining the Docker Swarm through the local dockerd. Configure it in /etc/rivet/agent.yaml (see agent.yaml.example)."
	pack "$r" rivet-agent
}

mkdir -p "$out"
build_rivet
build_agent
