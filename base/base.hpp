// base.hpp — the public header of the base module: value types every other
// module shares (Result, IP addresses and prefixes, hashing). Pure: no I/O.
#pragma once

#include "base/ip.hpp"
#include "base/result.hpp"
