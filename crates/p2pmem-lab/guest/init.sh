#!/bin/busybox sh
# p2pmem lab guest init (PID 1), embedded in the initramfs by the p2pmem-lab crate: the
# guest's only script. Mounts the pseudo file systems, waits for the NVMe namespaces,
# then hands over to `p2pmem agent plan /lab/plan.json`, which runs the host's typed
# plan and answers on the console in frames (p2pmem-wire's frame module), and powers
# off. Every marker line starts with @@P2PMEM: and is unique to this protocol.
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/tmp
# Only emergencies reach the console from here on, so that no kernel line lands inside a
# marker or a frame (a late boot message once split the START marker's line); the kernel
# log still goes to the ring buffer, which the agent reads and sends as frames.
dmesg -n 1
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

echo "p2pmem-lab: plan start" > /dev/kmsg
cd /tmp
/bin/p2pmem agent plan /lab/plan.json < /dev/null
echo "@@P2PMEM:DONE@@"
sync
poweroff -f
