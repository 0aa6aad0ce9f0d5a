// base.hpp — the public header of the base module: value types every other
// module shares (Result, IP addresses and prefixes, hashing). Pure: no I/O.
//
// Owns: the value types below. May call: the C++ standard library only.
#pragma once

#include "base/ip.hpp"
#include "base/result.hpp"
