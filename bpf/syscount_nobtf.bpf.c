// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The syscall counter for kernels without BTF: the same source, built without CO-RE (see syscount.bpf.c). */
#define PERCPU_NO_BTF 1
#include "syscount.bpf.c"
