#!/usr/bin/env bash
# rootfs.sh OUT.tar.zst: the cached base of the lab image. debootstrap Debian 12 with
# packages.list from the host's apt mirror, an initramfs that finds root by LABEL on
# virtio/SCSI/SATA/NVMe, kernel modules cut down to modules.keep, no docs or manuals.
# The slow part of the recipe (about 2-4 minutes); build.sh reruns it only when this file,
# packages.list, modules.keep, initramfs-modules or the mirror change.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM # so that EXIT's cleanup runs on Ctrl-C and kill too

out=${1:?usage: rootfs.sh OUT.tar.zst}
suite=bookworm
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "debootstrap missing: bash .ci/install-debs"

mktempdir "$(dirname "$out")" work
root=$work/root

bootstrap() {
	local mirror pkgs
	mirror=$(mirror_url)
	pkgs=$(package_list "$here/packages.list")
	log "debootstrap $suite from $mirror"
	debootstrap --variant=minbase --include="$pkgs" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
}

# The kernel's postinst built a generic initramfs (MODULES=most); rebuild it small.
initramfs() {
	chroot_mounts "$root"
	mkdir -p "$root/etc/initramfs-tools/conf.d"
	printf 'MODULES=list\nCOMPRESS=zstd\n' >"$root/etc/initramfs-tools/conf.d/rivet.conf"
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/initramfs-modules" >>"$root/etc/initramfs-tools/modules"
	chroot "$root" update-initramfs -u -k all >"$work/initramfs.log" 2>&1 ||
		{ cat "$work/initramfs.log" >&2; die "update-initramfs failed"; }
	unmount_all
}

# prune_modules: keep modules.keep (minus its drops) and their dependencies.
prune_modules() {
	local kdir release rel line kind glob
	kdir=$(echo "$root"/lib/modules/*)
	release=${kdir##*/}
	[ -d "$kdir/kernel" ] || die "no kernel modules under $root/lib/modules"
	local -a keeps=() drops=()
	while read -r kind glob _; do
		case $kind in
		keep) keeps+=("$glob") ;;
		drop) drops+=("$glob") ;;
		'' | '#'*) ;;
		*) die "modules.keep: unknown word $kind" ;;
		esac
	done <"$here/modules.keep"

	declare -A want=()
	while IFS= read -r rel; do
		rel=${rel#kernel/}
		local keep=""
		for glob in "${keeps[@]}"; do [[ $rel == $glob ]] && { keep=1; break; }; done
		[ -n "$keep" ] || continue
		for glob in "${drops[@]}"; do [[ $rel == $glob ]] && { keep=""; break; }; done
		[ -n "$keep" ] && want[kernel/$rel]=1
	done < <(cd "$kdir" && find kernel -name '*.ko*' | sort)
	# modules.dep already lists each module's whole dependency closure.
	while IFS= read -r line; do
		local mod=${line%%:*} dep
		[ -n "${want[$mod]:-}" ] || continue
		for dep in ${line#*:}; do want[$dep]=1; done
	done <"$kdir/modules.dep"

	local before after removed=0
	before=$(du -sm "$kdir" | cut -f1)
	while IFS= read -r rel; do
		[ -n "${want[$rel]:-}" ] && continue
		rm -f "$kdir/$rel"
		removed=$((removed + 1))
	done < <(cd "$kdir" && find kernel -name '*.ko*')
	find "$kdir/kernel" -depth -type d -empty -delete
	chroot "$root" depmod -a "$release"
	after=$(du -sm "$kdir" | cut -f1)
	log "kernel modules: kept ${#want[@]}, removed $removed, ${before} MB -> ${after} MB"
}

trim() {
	# Docs, manuals, translations: a VM's console has no reader for them.
	find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
	find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
	# Package caches and lists: apt-get update fetches them again when needed.
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
	mkdir -p "$root/var/lib/apt/lists/partial"
	# libnetwork's test tools, shipped by docker.io and used by nothing (27 MB).
	rm -f "$root/usr/bin/dnet" "$root/usr/sbin/ovrouter"
	find "$root/var/log" -type f -delete
	rm -f "$root/etc/machine-id" "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
	: >"$root/etc/machine-id"
}

pack() {
	local tmp="$out.tmp"
	tar --numeric-owner --xattrs --xattrs-include='*' --acls --sort=name -C "$root" -c . |
		zstd -q -T0 -3 -o "$tmp" -f
	mv -f "$tmp" "$out"
	log "rootfs: $(du -sm "$root" | cut -f1) MB on disk, tarball $(du -m "$out" | cut -f1) MB"
}

stage debootstrap bootstrap
stage initramfs initramfs
stage prune-modules prune_modules
stage trim trim
stage pack pack
