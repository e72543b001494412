# Maintainer scripts for a package that ships one systemd unit, in the shape debhelper's
# dh_installsystemd writes them. Sourced by build.sh: write_maintscripts DIR UNIT START
# writes DIR/postinst, prerm and postrm. START=yes starts the unit on first install;
# START=no only enables it (it starts at the next boot, or by hand once configured).

write_maintscripts() {
	local dir=$1 unit=$2 start=$3
	cat >"$dir/postinst" <<SCRIPT
#!/bin/sh
set -e
# Enable $unit on install, keep the admin's choice on upgrade (deb-systemd-helper
# remembers whether it was disabled).
if [ "\$1" = configure ] || [ "\$1" = abort-upgrade ] || [ "\$1" = abort-deconfigure ] || [ "\$1" = abort-remove ]; then
	deb-systemd-helper unmask '$unit' >/dev/null || true
	if deb-systemd-helper --quiet was-enabled '$unit'; then
		deb-systemd-helper enable '$unit' >/dev/null || true
	else
		deb-systemd-helper update-state '$unit' >/dev/null || true
	fi
	# Only on a running systemd: not in a chroot, an image build or dpkg --root.
	if [ -z "\${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "\$2" ]; then
			deb-systemd-invoke try-restart '$unit' >/dev/null || true
		elif [ '$start' = yes ]; then
			deb-systemd-invoke start '$unit' >/dev/null || true
		fi
	fi
fi
exit 0
SCRIPT
	cat >"$dir/prerm" <<SCRIPT
#!/bin/sh
set -e
if [ -z "\${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
	deb-systemd-invoke stop '$unit' >/dev/null || true
fi
exit 0
SCRIPT
	cat >"$dir/postrm" <<SCRIPT
#!/bin/sh
set -e
if [ -z "\${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "\$1" = remove ] && [ -x /usr/bin/deb-systemd-helper ]; then
	deb-systemd-helper mask '$unit' >/dev/null || true
fi
if [ "\$1" = purge ] && [ -x /usr/bin/deb-systemd-helper ]; then
	deb-systemd-helper purge '$unit' >/dev/null || true
	deb-systemd-helper unmask '$unit' >/dev/null || true
fi
exit 0
SCRIPT
	chmod 0755 "$dir/postinst" "$dir/prerm" "$dir/postrm"
}
