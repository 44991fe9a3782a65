/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C API p2pmem_pci calls, for bindgen.sh: PCI driver registration and resources,
 * driver attributes in sysfs, dev_printk, P2PDMA, and SUBSECTION_SHIFT (the ZONE_DEVICE
 * unit).
 */
#include <linux/device.h>
#include <linux/dev_printk.h>
#include <linux/ioport.h>
#include <linux/mmzone.h>
#include <linux/pci.h>
#include <linux/pci-p2pdma.h>
#include <linux/sysfs.h>
