#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Generates pci_bindings.rs (Rust declarations of the C API in pci_bindings.h) for the
# kernel build being used, with the bindgen options and clang flags that kbuild recorded
# for the kernel's own bindings (rust/bindings/.bindings_generated.rs.cmd): struct
# layouts then match this exact configuration. Called by Kbuild:
#   bindgen.sh BINDGEN SRCTREE OBJTREE HEADER OUTPUT
set -eu
bindgen=$1 srctree=$2 objtree=$3 header=$4 out=$5
cmd=$objtree/rust/bindings/.bindings_generated.rs.cmd
if [ ! -r "$cmd" ]; then
  echo "bindgen.sh: $cmd is missing: build the kernel with CONFIG_RUST=y (and bindgen on PATH) first" >&2
  exit 1
fi
srctree=$(cd "$srctree" && pwd)
# The recorded clang flags name generated headers relative to the kernel's output tree
# (-I./include): run bindgen there. 6.12 runs module builds in that tree, 7.x in the
# module's own directory.
objtree=$(cd "$objtree" && pwd)
case $header in /*) ;; *) header=$PWD/$header ;; esac
case $out in /*) ;; *) out=$PWD/$out ;; esac
# savedcmd_rust/bindings/bindings_generated.rs := BINDGEN HEADER OPTIONS -o OUT -- CLANG_FLAGS ; sed ...
line=$(sed -n 's/^savedcmd_rust\/bindings\/bindings_generated\.rs := //p' "$cmd")
rest=${line#* }           # drop the bindgen program
rest=${rest#* }           # drop the kernel's header
options=${rest%% -o *}
clang=${rest#* -- }
clang=${clang%% ; *}
# The kernel's dependency-file flag would overwrite the kernel's own .d file.
clang=$(printf '%s\n' "$clang" | sed 's/-Wp,-MMD,[^ ]*//')
# Where the source tree was when the kernel was built (it may have moved since).
old=$(printf '%s\n' "$clang" | sed -n 's/.*-include \([^ ]*\)\/include\/linux\/kconfig\.h.*/\1/p')
if [ -n "$old" ] && [ "$old" != "$srctree" ]; then
  replace() {
    awk -v o="$old" -v n="$srctree" '{
      out = ""; s = $0
      while ((i = index(s, o)) > 0) { out = out substr(s, 1, i - 1) n; s = substr(s, i + length(o)) }
      print out s
    }'
  }
  options=$(printf '%s\n' "$options" | replace)
  clang=$(printf '%s\n' "$clang" | replace)
fi
# Options that serve the kernel crate's own bindings only (7.x): CFI encodings of enums
# (`#[cfi_encoding]` needs a feature modules may not enable; the recorded text also holds
# a make variable, `$(pound)`) and pin-init's `MaybeZeroable` derives.
options=$(printf '%s\n' "$options" | sed -e 's/ --with-attribute-custom-enum=[^ ]*//g' \
  -e 's/ --with-derive-custom-[a-z]* [^ ]*//g')
set -f  # options such as `--blocklist-type __kernel_s?size_t` are patterns, not globs
eval "set -- $options"
eval "set -- \"\$@\" \
  --allowlist-function '__pci_register_driver|pci_unregister_driver|pcim_enable_device' \
  --allowlist-function 'pci_p2pdma_add_resource|pci_p2pmem_publish|_dev_info|_dev_warn|_dev_err' \
  --allowlist-type 'pci_driver|pci_dev|pci_device_id|driver_attribute|attribute_group' \
  --allowlist-var 'PCI_ANY_ID|SUBSECTION_SHIFT|IORESOURCE_(IO|MEM|PREFETCH|UNSET|DISABLED)' \
  -o \"\$out\" -- $clang"
cd "$objtree"
exec "$bindgen" "$header" "$@"
