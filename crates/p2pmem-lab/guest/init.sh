#!/bin/busybox sh
# p2pmem lab guest init (PID 1), embedded in the initramfs by the p2pmem-lab crate.
# Mounts the pseudo file systems, waits for the NVMe namespaces, runs /lab/job.sh with
# its output captured, then sends stdout, stderr, the kernel log (before and after the
# job) and each directory
# listed in /lab/send back over the console as base64 frames (protocol: guest.rs), and
# powers off. Every marker line starts with @@P2PMEM: and is unique to this protocol.
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/tmp
echo "@@P2PMEM:START@@"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t configfs configfs /sys/kernel/config
mount -t tmpfs tmpfs /tmp
. /lab/env

want=${LAB_NVME:-0}
tries=0
while :; do
  have=$(ls /sys/block 2>/dev/null | grep -c '^nvme')
  [ "$have" -ge "$want" ] && break
  tries=$((tries + 1))
  [ "$tries" -ge 150 ] && break
  sleep 0.1
done
for b in $(ls /sys/block | grep '^nvme'); do
  tries=0
  while [ ! -b "/dev/$b" ] && [ "$tries" -lt 50 ]; do
    tries=$((tries + 1))
    sleep 0.1
  done
done
echo "@@P2PMEM:READY nvme=$have want=$want@@"

# The boot log is saved before the job: a job may clear the kernel ring buffer.
dmesg > /tmp/.lab.bootlog 2>&1
echo "p2pmem-lab: job start" > /dev/kmsg
cd /tmp
sh /lab/job.sh > /tmp/.lab.stdout 2> /tmp/.lab.stderr < /dev/null
rc=$?
dmesg > /tmp/.lab.dmesg 2>&1
# From here on only emergencies reach the console, so frames are never interleaved.
dmesg -n 1

frame() {
  echo "@@P2PMEM:BEGIN $1@@"
  base64 < "$2"
  echo "@@P2PMEM:END $1 rc=$3 bytes=$(wc -c < "$2")@@"
}
frame stdout /tmp/.lab.stdout "$rc"
frame stderr /tmp/.lab.stderr "$rc"
frame bootlog /tmp/.lab.bootlog 0
frame dmesg /tmp/.lab.dmesg 0
n=0
while read -r dir; do
  [ -n "$dir" ] || continue
  if [ -d "$dir" ]; then
    tar -c -f /tmp/.lab.tar -C "$dir" . 2> /tmp/.lab.tar.err
    trc=$?
  else
    : > /tmp/.lab.tar
    trc=127
  fi
  frame "dir$n" /tmp/.lab.tar "$trc"
  n=$((n + 1))
done < /lab/send
echo "@@P2PMEM:DONE@@"
sync
poweroff -f
