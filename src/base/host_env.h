// Internal overloads of pagewise/host.h's factories that take the Env to
// create through, so tests can inject mmap, madvise, memfd_create and
// ftruncate failures (src/testing/fault_env.h). The objects they return
// release their memory through Env::Default(), like the public ones.
//
// Thread safety: as pagewise/host.h.
#ifndef PAGEWISE_BASE_HOST_ENV_H_
#define PAGEWISE_BASE_HOST_ENV_H_

#include <cstddef>
#include <string>

#include "pagewise/host.h"
#include "sys/env.h"

namespace pagewise {

// MemoryMapping::Anonymous / ::Memfd through `env` (not null).
Result<MemoryMapping> MapAnonymous(Env* env, size_t length, const MapOptions& options);
Result<MemoryMapping> MapMemfd(Env* env, size_t length, const std::string& name,
                               const MapOptions& options);

}  // namespace pagewise

#endif  // PAGEWISE_BASE_HOST_ENV_H_
