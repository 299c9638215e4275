// Bulk checks for init_many_'s common call, exposed on the fusedinit._C module.
#pragma once

#include <Python.h>

namespace fusedinit {

// The method table of fusedinit._C (scan_plain, see plain_scan.cpp).
PyMethodDef* module_methods();

}  // namespace fusedinit
