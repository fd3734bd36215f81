// Working-set trace files: write atomically, read with full checks.
#include <fcntl.h>
#include <xxhash.h>

#include <cstring>
#include <string>

#include "base/atomic_file.h"
#include "base/bytes.h"
#include "pagewise/restore.h"
#include "restore/restore_env.h"

namespace pagewise {
namespace {

constexpr char kMagic[8] = {'P', 'W', 'T', 'R', 'A', 'C', 'E', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 + 8;
constexpr size_t kEntryBytes = 16;
// A trace holds at most one entry per page of the source; this bound only
// guards against absurd counts in a damaged header.
constexpr uint64_t kMaxEntries = 1ULL << 32;

}  // namespace

Status WriteTrace(const std::string& path, const WorkingSetTrace& trace) {
  return WriteTrace(path, trace, Env::Default());
}

Status WriteTrace(const std::string& path, const WorkingSetTrace& trace, Env* env) {
  std::string buf;
  buf.reserve(kHeaderBytes + trace.entries.size() * kEntryBytes + 8);
  buf.append(kMagic, sizeof(kMagic));
  AppendLe32(&buf, kVersion);
  AppendLe32(&buf, trace.page_size);
  AppendLe64(&buf, trace.source_size);
  AppendLe64(&buf, trace.entries.size());
  for (const TraceEntry& e : trace.entries) {
    AppendLe64(&buf, e.offset);
    AppendLe64(&buf, e.time_ns);
  }
  AppendLe64(&buf, XXH64(buf.data(), buf.size(), 0));

  AtomicFileOptions fo;
  fo.env = env;
  Status s = WriteFileAtomically(path, buf, fo);
  if (!s.ok()) return s.WithContext("writing trace " + path);
  return Status::Ok();
}

Result<WorkingSetTrace> ReadTrace(const std::string& path) {
  return ReadTrace(path, Env::Default());
}

Result<WorkingSetTrace> ReadTrace(const std::string& path, Env* env) {
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY));
  auto bad = [&](const std::string& why) {
    return Status::Corruption("trace " + path + ": " + why +
                              "; delete it and record a new one (FillPolicy::record_trace)");
  };
  std::string buf;
  Result<uint64_t> size = env->FileSize(fd);
  Status s = size.ok() ? Status::Ok() : size.status();
  if (s.ok() && *size < kHeaderBytes + 8)
    s = bad("file too short (" + std::to_string(*size) + " bytes)");
  if (s.ok()) {
    buf.resize(*size);
    s = ReadFully(env, fd, buf.data(), buf.size(), 0);
  }
  env->Close(fd).IgnoreError();  // read-only fd: nothing to lose
  if (!s.ok()) return s;

  const char* p = buf.data();
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) return bad("bad magic (not a pagewise trace)");
  const uint32_t version = LoadLe32(p + 8);
  if (version != kVersion) {
    return Status::NotSupported("trace " + path + " has version " + std::to_string(version) +
                                "; this pagewise reads version " + std::to_string(kVersion));
  }
  WorkingSetTrace t;
  t.page_size = LoadLe32(p + 12);
  t.source_size = LoadLe64(p + 16);
  const uint64_t count = LoadLe64(p + 24);
  if (count > kMaxEntries || buf.size() != kHeaderBytes + count * kEntryBytes + 8) {
    return bad("entry count " + std::to_string(count) + " does not match the file size");
  }
  const size_t body = buf.size() - 8;
  if (XXH64(p, body, 0) != LoadLe64(p + body)) return bad("checksum mismatch");
  if (t.page_size == 0 || (t.page_size & (t.page_size - 1)) != 0) {
    return bad("page size " + std::to_string(t.page_size) + " is not a power of two");
  }
  t.entries.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    t.entries[i].offset = LoadLe64(p + kHeaderBytes + i * kEntryBytes);
    t.entries[i].time_ns = LoadLe64(p + kHeaderBytes + i * kEntryBytes + 8);
  }
  return t;
}

}  // namespace pagewise
