// The Python functions of the module xsep._C (csrc/module_calls.cpp).
#pragma once

#include <Python.h>

namespace xsep {

// The method table of xsep._C: the modules' inference calls.
PyMethodDef* module_call_methods();

}  // namespace xsep
