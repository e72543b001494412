# Shared helpers of the lab image recipe (sourced by build.sh and rootfs.sh).
# Everything mounted or created is recorded and undone by cleanup, which the callers
# run from an EXIT trap, so a failed build leaves no mount and no temp dir behind.

MOUNTS=()    # mount points, unmounted in reverse order
TEMPS=()     # directories removed at exit

log() { printf '%s labimage: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# stage NAME CMD...: run one step and print how long it took.
stage() {
	local stage_name=$1; shift
	local t0=$EPOCHREALTIME
	log "stage $stage_name ..."
	"$@"
	log "stage $stage_name done in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f s", b-a}')"
}

# mktempdir PARENT VAR: a temp dir, removed at exit, in VAR (not by $(...): the
# subshell would lose the record).
mktempdir() {
	local d
	d=$(mktemp -d "$1/tmp.XXXXXX")
	TEMPS+=("$d")
	printf -v "$2" '%s' "$d"
}

# chroot_mounts ROOT: the pseudo filesystems dpkg maintainer scripts and
# update-initramfs expect; /dev is a bind of the host's, only while the recipe runs.
chroot_mounts() {
	local root=$1
	mount -t proc proc "$root/proc" && MOUNTS+=("$root/proc")
	mount -t sysfs sysfs "$root/sys" && MOUNTS+=("$root/sys")
	mount --bind /dev "$root/dev" && MOUNTS+=("$root/dev")
	mount -t tmpfs tmpfs "$root/run" && MOUNTS+=("$root/run")
}

unmount_all() {
	local i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
		umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || log "warning: could not unmount ${MOUNTS[i]}"
	done
	MOUNTS=()
}

cleanup() {
	local rc=$?
	unmount_all
	local d
	for d in "${TEMPS[@]}"; do
		# Never follow into a still-mounted tree: unmount_all ran, but check anyway.
		if grep -q " $d/" /proc/self/mounts; then
			log "warning: $d still has mounts; leaving it"
			continue
		fi
		rm -rf --one-file-system "$d"
	done
	[ "$rc" = 0 ] || log "failed (exit $rc); temporary files removed"
	return "$rc"
}

# mirror_url: the Debian mirror apt on this host uses (deb822 sources first).
mirror_url() {
	local url=""
	if [ -r /etc/apt/sources.list.d/debian.sources ]; then
		url=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$url" ] && [ -r /etc/apt/sources.list ]; then
		url=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
	fi
	[ -n "$url" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
	printf '%s\n' "$url"
}

# hash_files FILE...: one sha256 over the names and contents of the files.
hash_files() {
	local f
	for f in "$@"; do
		printf '%s\n' "${f##*/labimage/}"
		sha256sum <"$f"
	done | sha256sum | cut -d' ' -f1
}

# package_list: packages.list without comments, comma-separated.
package_list() {
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1" | tr -s ' \n' ',' | sed 's/,$//'
}
