#!/usr/bin/env bash
# build.sh: the lab OS image, build/labimage/rivet-lab.raw.zst. See README.md for the disk
# layout contract and the cache.
#
#   packaging/labimage/build.sh --agent-deb build/deb/rivet-agent_V_amd64.deb --out build/labimage
#
# Stages (each prints its time): rootfs (debootstrap, cached as a tarball keyed by the
# package list and rootfs recipe), unpack, agent (.deb install), configure, esp (syslinux
# + UKI), ext4, assemble (GPT), compress. Nothing is rebuilt when the stamp (a hash of
# every recipe file, the agent .deb and the mirror) matches. Needs root: debootstrap and
# chroot. It needs no loop device: mke2fs -d and mtools write the filesystems as files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM # so that EXIT's cleanup runs on Ctrl-C and kill too

deb="" out="" force=""
while [ $# -gt 0 ]; do
	case $1 in
	--agent-deb) deb=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--force) force=1; shift ;;
	*) die "unknown argument $1 (want --agent-deb FILE --out DIR [--force])" ;;
	esac
done
[ -f "$deb" ] || die "--agent-deb: no such file '$deb' (make debs builds it)"
[ -n "$out" ] || die "--out DIR is required"
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it): sudo make lab-image"
for c in debootstrap mke2fs mkfs.vfat mcopy syslinux sfdisk objcopy zstd; do
	command -v "$c" >/dev/null || die "$c missing: bash .ci/install-debs"
done
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
gptmbr=/usr/lib/syslinux/mbr/gptmbr.bin
[ -f "$stub" ] || die "$stub missing (package systemd-boot-efi): bash .ci/install-debs"
[ -f "$gptmbr" ] || die "$gptmbr missing (package syslinux-common): bash .ci/install-debs"

mkdir -p "$out/cache"
out=$(cd "$out" && pwd)
name=rivet-lab
ESP_MIB=64
ROOT_HEADROOM_MIB=${ROOT_HEADROOM_MIB:-64} # free space in the image: small, every byte is written to each disk; repart grows it there
ZSTD_LEVEL=${ZSTD_LEVEL:-6} # 12 saves 3% and takes 2.6 times as long

mirror=$(mirror_url)
rootfs_key=$( {
	hash_files "$here/rootfs.sh" "$here/lib.sh" "$here/packages.list" "$here/modules.keep" "$here/initramfs-modules"
	echo "$mirror"
} | sha256sum | cut -c1-16)
mapfile -t recipe < <(find "$here" -type f -not -name '*_test.go' | sort)
stamp=$( {
	hash_files "${recipe[@]}"
	sha256sum <"$deb"
	echo "$rootfs_key $ESP_MIB $ROOT_HEADROOM_MIB $ZSTD_LEVEL"
} | sha256sum | cut -d' ' -f1)

if [ -z "$force" ] && [ -f "$out/$name.stamp" ] && [ "$(cat "$out/$name.stamp")" = "$stamp" ] &&
	[ -f "$out/$name.raw.zst" ] && [ -f "$out/$name.raw.zst.sha256" ]; then
	log "up to date: $out/$name.raw.zst (stamp $stamp)"
	exit 0
fi

tarball=$out/cache/rootfs-$rootfs_key.tar.zst
if [ ! -f "$tarball" ]; then
	stage rootfs "$here/rootfs.sh" "$tarball"
	find "$out/cache" -name 'rootfs-*.tar.zst' -not -path "$tarball" -delete
else
	log "rootfs cached: $tarball"
fi

mktempdir "$out" work
root=$work/root

unpack() {
	mkdir "$root"
	zstd -dc "$tarball" | tar -x --numeric-owner --xattrs --xattrs-include='*' --acls -C "$root"
}

configure() {
	# Recipe files, owned by root whoever checked them out.
	tar -C "$here/overlay" --owner=0 --group=0 --mode=go-w -c . | tar -x --no-overwrite-dir -C "$root"
	local c=(chroot "$root" systemctl --quiet)
	"${c[@]}" enable systemd-networkd.service systemd-resolved.service serial-getty@ttyS0.service
	# First boot must not stop at systemd-firstboot's questions on the console, and lab
	# machines have no Internet for apt's daily runs.
	"${c[@]}" mask systemd-firstboot.service
	"${c[@]}" disable apt-daily.timer apt-daily-upgrade.timer
	# Modules this image does not carry: each try costs a process spawn at boot under TCG.
	"${c[@]}" mask modprobe@drm.service modprobe@dm_mod.service modprobe@efi_pstore.service
	# Every machine gets its own identity on first boot: empty machine-id (systemd makes
	# one, and networkd's DHCP DUID follows it), no random seed, no logs.
	: >"$root/etc/machine-id"
	ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"
	rm -f "$root/var/lib/systemd/random-seed" "$root/var/lib/systemd/credential.secret"
	find "$root/var/log" -type f -delete
	rm -rf "${root:?}/tmp/"* "$root/var/tmp/"*
}

install_agent() {
	chroot_mounts "$root"
	cp "$deb" "$root/tmp/rivet-agent.deb"
	chroot "$root" dpkg -i /tmp/rivet-agent.deb >"$work/dpkg.log" 2>&1 ||
		{ cat "$work/dpkg.log" >&2; die "installing the agent .deb failed"; }
	rm -f "$root/tmp/rivet-agent.deb"
	unmount_all
}

# check: the contract other code relies on (see README.md).
check() {
	[ -e "$root/etc/rivet/agent.yaml" ] && die "the image must not carry /etc/rivet/agent.yaml"
	if [ -d "$root/var/lib/rivet" ] && [ -n "$(ls -A "$root/var/lib/rivet")" ]; then
		die "the image must not carry state in /var/lib/rivet"
	fi
	[ -L "$root/etc/systemd/system/multi-user.target.wants/rivet-agent.service" ] ||
		die "rivet-agent.service is not enabled after installing the .deb"
	grep -q '^LABEL=rivet-root[[:space:]]\+/[[:space:]]' "$root/etc/fstab" || die "fstab does not mount LABEL=rivet-root on /"
	[ -s "$root/etc/machine-id" ] && die "machine-id must be empty"
	return 0
}

# esp: a FAT32 ESP holding the BIOS path (syslinux, vmlinuz, initrd.img) and the UEFI
# path (\EFI\BOOT\BOOTX64.EFI, a unified kernel image: stub + os-release + cmdline +
# kernel + initrd), both with the same kernel command line.
esp() {
	local kernel initrd cmdline
	kernel=$(echo "$root"/boot/vmlinuz-*)
	initrd=$(echo "$root"/boot/initrd.img-*)
	[ -f "$kernel" ] && [ -f "$initrd" ] || die "expected one kernel and initrd in $root/boot"
	cmdline=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/cmdline" | tr -s ' \n' ' ' | sed 's/ $//')
	case $cmdline in *console=ttyS0*) ;; *) die "cmdline must end with console=ttyS0" ;; esac
	printf '%s' "$cmdline" >"$work/cmdline.txt"
	uki "$kernel" "$initrd" "$work/cmdline.txt" "$work/BOOTX64.EFI"
	{
		printf 'SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT rivet\n'
		printf 'LABEL rivet\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND %s\n' "$cmdline"
	} >"$work/syslinux.cfg"
	local img=$work/esp.img
	mkfs.vfat -F 32 -s 1 -S 512 -h 2048 -n RIVET-ESP -C "$img" $((ESP_MIB * 1024)) >/dev/null
	mmd -i "$img" ::/EFI ::/EFI/BOOT
	mcopy -i "$img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
	mcopy -i "$img" "$kernel" ::/vmlinuz
	mcopy -i "$img" "$initrd" ::/initrd.img
	mcopy -i "$img" "$work/syslinux.cfg" ::/syslinux.cfg
	syslinux --install "$img"
}

# uki KERNEL INITRD CMDLINE OUT: systemd-stub sections placed after the stub's own, each
# page-aligned (what ukify does; ukify is not in Debian 12).
uki() {
	local base=0 end=0 idx _name size vma _rest
	base=$((0x$(objdump -p "$stub" | awk '/^ImageBase/{print $2}')))
	while read -r idx _name size vma _rest; do
		[[ $idx =~ ^[0-9]+$ ]] || continue
		((0x$vma + 0x$size > end)) && end=$((0x$vma + 0x$size))
	done < <(objdump -h "$stub")
	local args=() sec file
	vma=$end
	for sec in osrel:"$root/usr/lib/os-release" cmdline:"$3" linux:"$1" initrd:"$2"; do
		file=${sec#*:}
		vma=$(((vma + 4095) / 4096 * 4096))
		args+=(--add-section ".${sec%%:*}=$file" --change-section-vma ".${sec%%:*}=$(printf '0x%x' $((base + vma)))")
		vma=$((vma + $(stat -L -c %s "$file")))
	done
	objcopy "${args[@]}" "$stub" "$4"
}

ext4() {
	local used_mib size_mib
	used_mib=$(du -sxm "$root" | cut -f1)
	size_mib=$(((used_mib * 115 / 100 + ROOT_HEADROOM_MIB + 63) / 64 * 64))
	mke2fs -q -t ext4 -L rivet-root -b 4096 -m 1 -d "$root" "$work/root.img" "${size_mib}M" >/dev/null
	log "root filesystem: ${used_mib} MiB used, ${size_mib} MiB"
}

# assemble: GPT with a protective MBR carrying syslinux's gptmbr.bin, which boots the
# partition marked LegacyBIOSBootable (the ESP). Partition 2 has the root-x86-64 type so
# systemd-repart finds and grows it. 1 MiB at the end for the backup GPT.
assemble() {
	local raw=$work/$name.raw
	local esp_start=2048 esp_sectors=$((ESP_MIB * 2048))
	local root_start=$((esp_start + esp_sectors)) root_sectors=$(($(stat -c %s "$work/root.img") / 512))
	truncate -s $(((root_start + root_sectors + 2048) * 512)) "$raw"
	sfdisk --quiet --no-reread --no-tell-kernel "$raw" <<-TABLE
		label: gpt
		first-lba: 2048
		start=$esp_start, size=$esp_sectors, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp", attrs="LegacyBIOSBootable"
		start=$root_start, size=$root_sectors, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="rivet-root"
	TABLE
	dd if="$work/esp.img" of="$raw" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
	dd if="$work/root.img" of="$raw" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
	dd if="$gptmbr" of="$raw" bs=440 count=1 conv=notrunc status=none
	rm -f "$work/root.img" "$work/esp.img"
}

compress() {
	local raw=$work/$name.raw raw_sha zst_sha raw_bytes zst_bytes
	zstd -q -T0 "-$ZSTD_LEVEL" -f "$raw" -o "$work/$name.raw.zst"
	raw_sha=$(sha256sum <"$raw" | cut -d' ' -f1)
	zst_sha=$(sha256sum <"$work/$name.raw.zst" | cut -d' ' -f1)
	raw_bytes=$(stat -c %s "$raw")
	zst_bytes=$(stat -c %s "$work/$name.raw.zst")
	# The .sha256 is the digest the image step verifies: of the uncompressed bytes.
	echo "$raw_sha" >"$work/$name.raw.zst.sha256"
	cat >"$work/$name.json" <<-JSON
		{
		  "image": "$name.raw.zst",
		  "raw_bytes": $raw_bytes,
		  "raw_sha256": "$raw_sha",
		  "zst_bytes": $zst_bytes,
		  "zst_sha256": "$zst_sha",
		  "kernel": "$(basename "$root"/boot/vmlinuz-* | sed 's/^vmlinuz-//')",
		  "agent_deb": "$(basename "$deb")",
		  "root_label": "rivet-root",
		  "stamp": "$stamp"
		}
	JSON
	mv -f "$work/$name.raw.zst" "$work/$name.raw.zst.sha256" "$work/$name.json" "$out/"
	echo "$stamp" >"$out/$name.stamp"
	log "image: $out/$name.raw.zst: $((raw_bytes / 1048576)) MiB raw, $((zst_bytes / 1048576)) MiB zst, sha256 (raw) $raw_sha"
}

t0=$EPOCHREALTIME
rm -f "$out/$name.stamp"
stage unpack unpack
stage configure configure
stage agent install_agent
stage check check
stage esp esp
stage ext4 ext4
stage assemble assemble
stage compress compress
log "total $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f s", b-a}')"
