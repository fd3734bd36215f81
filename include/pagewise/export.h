// Symbol visibility of pagewise's public API.
//
// The library is compiled with -fvisibility=hidden: nothing is exported from
// libpagewise.so unless a public header says so, and a version script
// (src/pagewise.map) tags what is exported with the ABI version node.
//   - C declarations (pagewise/pagewise.h) mark each function PAGEWISE_EXPORT.
//   - C++ public headers put their declarations between PAGEWISE_API_BEGIN and
//     PAGEWISE_API_END (inside namespace pagewise): everything a public C++
//     header declares is API, and only that (scripts/lint.sh checks that every
//     public C++ header has the pair).
// Internal headers (src/) never use these: their symbols stay hidden, reachable
// only by code linked into the same binary (the static library's users: the
// tool, the tests).
//
// Thread safety: not applicable (macros only).
#ifndef PAGEWISE_EXPORT_H_
#define PAGEWISE_EXPORT_H_

#if defined(__GNUC__) || defined(__clang__)
#define PAGEWISE_EXPORT __attribute__((visibility("default")))
#define PAGEWISE_API_BEGIN _Pragma("GCC visibility push(default)")
#define PAGEWISE_API_END _Pragma("GCC visibility pop")
#else
#define PAGEWISE_EXPORT
#define PAGEWISE_API_BEGIN
#define PAGEWISE_API_END
#endif

#endif  // PAGEWISE_EXPORT_H_
