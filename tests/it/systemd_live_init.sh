#!/bin/bash
# PID 1 of the live-systemd test's own namespaces (tests/it/systemd_live.rs): builds a root
# in memory over the machine's and execs systemd in it. Usage: init.sh IO_DIR TARGET_UNIT
#
# systemd booted on the machine's own /tmp, /run and network wipes the machine's /tmp
# (systemd-tmpfiles) and starts every enabled service of the image on the machine's ports:
# every mount below is needed, and the script stops at the first failure, before systemd.
set -euo pipefail
io=$1
target=$2
fail() {
    echo "init: $*" >&2
    exit 90
}
[ "$$" = 1 ] || fail "not PID 1 of a new PID namespace"
# /proc is still the machine's here: /proc/1 is the machine's init.
for ns in mnt net uts ipc cgroup; do
    [ "$(readlink /proc/self/ns/$ns)" != "$(readlink /proc/1/ns/$ns)" ] ||
        fail "shares the machine's $ns namespace"
done
# Our pid as the machine sees it (the test drives systemd through it): bash reads
# /proc/self itself.
read -r host_pid _ </proc/self/stat
mount --make-rprivate /

# The root: an overlay on a tmpfs, lower layer the machine's /; whatever systemd, dpkg,
# useradd or journald write lands in memory and vanishes with this namespace.
m=$io/mnt
mkdir -p "$m"
mount -t tmpfs -o mode=0755,size=4g tmpfs "$m"
mkdir "$m/upper" "$m/work" "$m/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$m/upper,workdir=$m/work" "$m/root"
r=$m/root
mount -t proc proc "$r/proc"
mount --bind "$r/proc/sys" "$r/proc/sys"
mount -o remount,bind,ro "$r/proc/sys"
mount -t sysfs -o ro sysfs "$r/sys"
mount -t tmpfs -o mode=0755,size=16m tmpfs "$r/dev"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<<"$d"
    mknod -m 0666 "$r/dev/$name" c "$major" "$minor"
done
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
mount -t tmpfs -o mode=1777 tmpfs "$r/var/tmp"
mkdir -p "$r/var/log/journal"
mount -t tmpfs -o mode=2755 tmpfs "$r/var/log/journal"
# Files in and out: the test's directory.
mkdir -p "$r/io"
mount --bind "$io" "$r/io"
# Nothing of the machine's own: no fstab mounts; a target that pulls in sysinit.target
# only, so no enabled service of the image starts.
: >"$r/etc/fstab"
cat >"$r/etc/systemd/system/$target" <<UNIT
[Unit]
Description=arkouda-push-agent live-systemd test
Requires=sysinit.target
After=sysinit.target
AllowIsolate=yes
UNIT
for d in tmp run var/tmp; do
    [ "$(stat -f -c %T "$r/$d")" = tmpfs ] || fail "/$d is not a private tmpfs"
done

cd "$r"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
echo "$host_pid" >/io/host-pid
exec setpriv --bounding-set -sys_module,-sys_time,-sys_boot,-sys_rawio -- \
    env -i container=arkouda-push-agent-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system "systemd.unit=$target" systemd.unified_cgroup_hierarchy=1
