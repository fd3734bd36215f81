// Snapshots, eager restore and checkpoints through a chosen Env (internal;
// pagewise/snapshot.h and pagewise/checkpoint.h are the public side). Each
// function is the public call of the same name with every kernel and file
// operation made through `env` (not null; it must outlive what is
// returned). Tests inject failures here (ENOSPC, EAGAIN, failing mmap...).
//
// Thread safety: as the public functions.
#ifndef PAGEWISE_SNAPSHOT_SNAPSHOT_ENV_H_
#define PAGEWISE_SNAPSHOT_SNAPSHOT_ENV_H_

#include <memory>
#include <string>
#include <vector>

#include "pagewise/checkpoint.h"
#include "pagewise/snapshot.h"
#include "sys/env.h"

namespace pagewise {

Result<std::vector<MappingInfo>> ReadSelfMaps(Env* env);
Result<Region> RegionFromMaps(const void* addr, size_t len, std::string name, Env* env);

Result<SnapshotStats> SnapshotFull(const std::vector<Region>& regions, const std::string& out_path,
                                   const SnapshotOptions& options, Env* env);
Result<SnapshotStats> SnapshotIncremental(const std::vector<PageRange>& written,
                                          const std::vector<Region>& regions,
                                          const std::string& parent_path,
                                          const std::string& out_path,
                                          const SnapshotOptions& options, Env* env);
// SnapshotChain::Create; the chain's tracker uses `env` too.
Result<std::unique_ptr<SnapshotChain>> CreateSnapshotChain(const std::vector<Region>& regions,
                                                           const SnapshotChainOptions& options,
                                                           Env* env);

Result<std::unique_ptr<RestoredMemory>> RestoreEager(const std::string& path,
                                                     const EagerRestoreOptions& options, Env* env);
Result<std::unique_ptr<RestoredMemory>> RestoreEager(const Image& image,
                                                     const EagerRestoreOptions& options, Env* env);

// Checkpoint::Create; the checkpoint's tracker uses `env` too.
Result<std::unique_ptr<Checkpoint>> CreateCheckpoint(const std::vector<Region>& regions,
                                                     const CheckpointOptions& options, Env* env);

}  // namespace pagewise

#endif  // PAGEWISE_SNAPSHOT_SNAPSHOT_ENV_H_
